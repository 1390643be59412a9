"""The dense tasks through run_trial on any space with a dense head (a test-local one here), plus their losses."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hrnas_automl import registry
from hrnas_automl.data.stick_figures import build_stick_figures
from hrnas_automl.tasks import get_task
from hrnas_automl.tasks.metrics.keypoints import oks_ap, pck
from hrnas_automl.tasks.keypoints import heatmap_loss, predict_keypoints
from hrnas_automl.tasks.segmentation import segmentation_loss
from hrnas_automl.trial import resolve_arch, run_trial
from hrnas_automl.config import ConfigError
from hrnas_automl.trial.config import parse_trial_config

from tests.tasks.dense_space import SPEC


@pytest.fixture
def tiny_dense(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(registry.SPACES._objects, SPEC.name, SPEC)
    return SPEC.name


def _config(space: str, task: str, data: dict[str, Any], epochs: int, **train: Any):
    return parse_trial_config({"space": space, "task": task, "data": data, "threads": 1,
                               "train": {"epochs": epochs, "batch_size": 16, **train}, "latency": {"enabled": False}})


def test_segmentation_trial_beats_the_majority_class(tiny_dense: str, tmp_path: Path) -> None:
    data = {"kind": "shapes", "train_size": 64, "val_size": 32, "image_size": 64, "cache_dir": str(tmp_path)}
    config = _config(tiny_dense, "segmentation", data, epochs=12, lr=0.1)
    rows: list[dict[str, float]] = []
    result = run_trial(config, {"block": "k3"}, report_intermediate=rows.append)
    metrics = result.metrics
    assert {"default", "miou", "pixel_accuracy", "loss", "train_loss", "macs", "params"} <= set(metrics)
    assert metrics["default"] == metrics["miou"] and len(rows) == 12
    # majority baseline, computed here from the val masks: predict background everywhere
    val = get_task("segmentation").build_data("shapes", {k: v for k, v in data.items() if k != "kind"}).val
    labels = torch.stack([val[i][1] for i in range(len(val))])
    counted = labels != 255
    present = int(labels[counted].unique().numel())
    majority_miou = float((labels[counted] == 0).float().mean()) / present
    assert majority_miou < 0.25
    assert metrics["miou"] > majority_miou + 0.2  # measured: 0.63 against 0.18 (seed 0)


def test_keypoint_trial_reports_ap_and_pck(tiny_dense: str, tmp_path: Path) -> None:
    data = {"kind": "stick-figures", "train_size": 8, "val_size": 4, "image_size": 64, "input_size": [32, 24],
            "cache_dir": str(tmp_path)}
    result = run_trial(_config(tiny_dense, "keypoints", data, epochs=1), {"block": "k5"})
    metrics = result.metrics
    assert {"default", "ap", "ap50", "ap75", "ar", "pck", "loss", "train_loss"} <= set(metrics)
    assert metrics["default"] == metrics["ap"]
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("ap", "ap50", "ap75", "ar", "pck"))


def test_ground_truth_heatmaps_decode_back_to_near_perfect_ap(tmp_path: Path) -> None:
    """Targets -> decode -> inverse crop -> pycocotools: the geometry of the whole chain loses almost nothing."""
    data = build_stick_figures(seed=5, train_size=1, val_size=6, image_size=128, input_size=[128, 96],
                               cache_dir=str(tmp_path))
    results, predicted, truth, boxes = [], [], [], []
    for index in range(len(data.val)):
        _, target = data.val[index]
        points, _ = predict_keypoints(target["heatmaps"][None], target["center"][None], target["size"][None], (128, 96))
        results.append({"image_id": target["image_id"], "category_id": 1, "score": 1.0,
                        "keypoints": np.concatenate([points[0], np.ones((17, 1))], axis=1).ravel().tolist()})
        predicted.append(points)
        truth.append(target["keypoints"].numpy()[None])
        boxes.append(target["box"].numpy()[None])
    assert oks_ap(data.val_annotations, results)["ap"] > 0.99  # measured 1.0 (0.92 at a 64x48 crop)
    assert pck(np.concatenate(predicted), np.concatenate(truth), np.concatenate(boxes)) > 0.95


def test_dense_tasks_need_a_space_with_their_head_and_their_data_kinds(tiny_dense: str) -> None:
    with pytest.raises(ConfigError, match="space detnas-small has no 'segmentation' head"):
        _config("detnas-small", "segmentation", {"kind": "shapes"}, epochs=1)
    with pytest.raises(ConfigError, match="data.kind 'shapes' is not a dataset of task 'keypoints'; use one of: "
                                          "coco-keypoints, stick-figures"):
        _config(tiny_dense, "keypoints", {"kind": "shapes"}, epochs=1)
    with pytest.raises(ValueError, match="unknown option.* colour for data kind 'shapes'; valid options: layout"):
        get_task("segmentation").build_data("shapes", {"colour": "red"})
    with pytest.raises(ValueError, match="data kind 'cityscapes' needs option.* root"):
        get_task("segmentation").build_data("cityscapes", {})
    with pytest.raises(ValueError,
                       match=r"shapes data: option layout='voc' is invalid; use one of: cityscapes, ade20k"):
        get_task("segmentation").build_data("shapes", {"layout": "voc"})


def test_segmentation_loss_ignores_void_pixels() -> None:
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    labels = torch.randint(0, 3, (2, 16, 16))
    labels[:, :8] = 255
    loss = segmentation_loss(logits, labels)
    up = torch.nn.functional.interpolate(logits, size=(16, 16), mode="bilinear", align_corners=False)
    keep = labels != 255
    expected = torch.nn.functional.cross_entropy(up.permute(0, 2, 3, 1)[keep], labels[keep])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    void = segmentation_loss(logits, torch.full((2, 16, 16), 255))
    void.backward()
    assert void.item() == 0.0 and logits.grad is not None


def test_heatmap_loss_weights_and_shape_check() -> None:
    truth = torch.rand(2, 3, 4, 4)
    weights = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    pred = truth.clone()
    pred[0, 1] += 5.0  # unweighted joints may be wrong at no cost
    assert heatmap_loss(pred, {"heatmaps": truth, "weights": weights}).item() == 0.0
    pred[0, 0] += 1.0
    assert heatmap_loss(pred, {"heatmaps": truth, "weights": weights}).item() == pytest.approx(0.5 * 16 / (2 * 3 * 16))
    with pytest.raises(ValueError, match=r"the keypoints head gave heatmaps \(2, 3, 8, 8\).*must output"):
        heatmap_loss(torch.zeros(2, 3, 8, 8), {"heatmaps": truth, "weights": weights})


@pytest.mark.parametrize(("task", "data", "metric"), [
    ("segmentation", {"kind": "shapes", "train_size": 16, "val_size": 8, "image_size": 64}, "miou"),
    ("keypoints", {"kind": "stick-figures", "train_size": 8, "val_size": 4, "image_size": 96,
                   "input_size": [64, 48]}, "ap"),
])
def test_hrnas_random_samples_run_as_dense_trials(task: str, data: dict[str, Any], metric: str, tmp_path: Path) -> None:
    # no arch given: the seeded random sample must come from the task head's labels (head_transform_*)
    config = _config("hrnas", task, {**data, "cache_dir": str(tmp_path)}, epochs=1)
    config = config.model_copy(update={"space_args": {"setting": "tiny", "bn_momentum": 0.1}})
    arch = resolve_arch(config)
    assert "head_transform_k3" in arch and not any(label.startswith("head_incre") for label in arch)
    metrics = run_trial(config, arch).metrics
    assert metrics["default"] == metrics[metric] and 0.0 <= metrics[metric] <= 1.0
    assert metrics["macs"] > 0 and metrics["params"] > 0
