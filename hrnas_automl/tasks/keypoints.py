"""Top-down human pose: heatmap regression, scored by COCO OKS AP (pycocotools) and PCK.

The space's ``keypoints`` head gives heatmaps at 1/4 of the person crop. The loss is HRNet's
``JointsMSELoss`` with target weights (lib/core/loss.py: 0.5 x MSE of weighted heatmaps, averaged over
joints). Evaluation decodes the heatmaps (argmax + quarter-pixel refinement), maps them back to image
pixels through the crop's inverse affine map and scores each person with the mean peak value of its
heatmaps (HRNet rescores by the mean of maxvals above 0.2 times the box score; ground-truth boxes score
1, and no OKS-NMS is needed with one prediction per ground-truth box). Training is the package's trainer
(:func:`hrnas_automl.tasks.training.fit`) with this loss and evaluation plugged in.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from hrnas_automl.data.coco_keypoints import HEATMAP_STRIDE, KeypointData
from hrnas_automl.data.heatmaps import decode_heatmaps
from hrnas_automl.data.topdown import apply_affine, crop_matrix, invert_affine
from hrnas_automl.runtime.device import device_of
from hrnas_automl.tasks import EpochCallback, Task, training
from hrnas_automl.tasks.training import to_device
from hrnas_automl.config import TrainSettings
from hrnas_automl.data.loading import IN_PROCESS, make_loader
from hrnas_automl.tasks.metrics.keypoints import oks_ap, pck

__all__ = ["heatmap_loss", "predict_keypoints", "evaluate_keypoints", "KeypointTask", "TASK"]

_SCORE_THRESHOLD = 0.2  # HRNet's in_vis_thre: peaks above it count towards the person score


def heatmap_loss(heatmaps: torch.Tensor, target: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """HRNet's weighted MSE: ``0.5 * mean((w * (pred - gt))^2)`` over batch, joints and pixels."""
    truth, weights = target["heatmaps"], target["weights"]
    if heatmaps.shape != truth.shape:
        raise ValueError(f"the keypoints head gave heatmaps {tuple(heatmaps.shape)}, the targets are "
                         f"{tuple(truth.shape)}; the head must output (N, num_keypoints, H/4, W/4)")
    return 0.5 * ((heatmaps - truth) * weights[:, :, None, None]).pow(2).mean()


def predict_keypoints(heatmaps: torch.Tensor, center: torch.Tensor, size: torch.Tensor,
                      input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Image-pixel keypoints ``(N, K, 2)`` and peak values ``(N, K)`` from heatmaps of crops (center, size)."""
    crop_points, maxvals = decode_heatmaps(heatmaps.float().cpu(), stride=HEATMAP_STRIDE)
    rows = zip(center.double().numpy(), size.double().numpy(), crop_points.double().numpy())
    points = np.stack([apply_affine(invert_affine(crop_matrix(c, s, input_size)), p) for c, s, p in rows])
    return points, maxvals.numpy()


def _person_score(maxvals: np.ndarray) -> float:
    confident = maxvals[maxvals > _SCORE_THRESHOLD]
    return float(confident.mean()) if confident.size else 0.0


@torch.no_grad()
def evaluate_keypoints(model: nn.Module, data: KeypointData, *, batch_size: int = 32,
                       device: str | torch.device | None = None, pck_threshold: float = 0.05,
                       loading: TrainSettings = IN_PROCESS) -> dict[str, float]:
    """OKS ``ap`` (and ``ap50``, ``ap75``, ``ar``), ``pck`` and the heatmap ``loss`` on ``data.val`` (loaded as
    ``loading`` says)."""
    dataset: Dataset = data.val
    if len(dataset) == 0:
        raise ValueError("cannot evaluate on an empty dataset; give the validation split at least one person")
    device = device_of(model) if device is None else device
    model.eval().to(device)
    input_size = tuple(data.input_shape[1:])
    results, predicted, truth, boxes = [], [], [], []
    loss_sum, seen = 0.0, 0
    for images, target in make_loader(dataset, loading, batch_size=batch_size):
        heatmaps = model(images.to(device))
        loss_sum += heatmap_loss(heatmaps, to_device(target, device)).item() * images.shape[0]
        seen += images.shape[0]
        points, maxvals = predict_keypoints(heatmaps, target["center"], target["size"], input_size)
        for image_id, person, peaks in zip(target["image_id"].tolist(), points, maxvals):
            keypoints = np.concatenate([person, peaks[:, None]], axis=1)
            results.append({"image_id": image_id, "category_id": 1, "keypoints": keypoints.ravel().tolist(),
                            "score": _person_score(peaks)})
        predicted.append(points)
        truth.append(target["keypoints"].numpy())
        boxes.append(target["box"].numpy())
    scores = oks_ap(data.val_annotations, results)
    return {"ap": scores["ap"], "ap50": scores["ap50"], "ap75": scores["ap75"], "ar": scores["ar"],
            "pck": pck(np.concatenate(predicted), np.concatenate(truth), np.concatenate(boxes), pck_threshold),
            "loss": loss_sum / seen}


class KeypointTask(Task):
    """Top-down keypoints on COCO or generated stick figures; ``default`` = OKS AP."""

    name = "keypoints"
    head = "keypoints"
    metric = "ap"
    def model_args(self, data: KeypointData) -> dict[str, Any]:
        return {"num_keypoints": data.num_keypoints, "in_channels": data.input_shape[0]}

    def fit(self, model: nn.Module, data: KeypointData, settings: TrainSettings, options: Mapping[str, Any],
            on_epoch: EpochCallback) -> dict[str, Any]:
        return training.fit(
            model, training.train_loader(data.train, settings), settings, on_epoch, loss=heatmap_loss,
            evaluate=lambda net: evaluate_keypoints(net, data, batch_size=settings.batch_size, loading=settings))


TASK = KeypointTask()
