"""Dense-task metrics against independent computations: scikit-learn's confusion matrix, closed-form OKS."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from hrnas_automl.data.stick_figures import COCO_KEYPOINTS
from hrnas_automl.tasks.metrics.keypoints import oks_ap, pck
from hrnas_automl.tasks.metrics.segmentation import confusion_matrix, miou, pixel_accuracy

COCO_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10


@pytest.mark.parametrize("seed", range(5))
def test_miou_and_pixel_accuracy_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    classes = int(rng.integers(2, 7))
    labels = rng.integers(0, classes, (3, 17, 13))
    labels[rng.random(labels.shape) < 0.2] = 255  # ignore pixels
    predictions = np.where(rng.random(labels.shape) < 0.6, labels, rng.integers(0, classes, labels.shape))
    predictions[predictions == 255] = 0
    keep = labels != 255
    expected = sk_confusion_matrix(labels[keep], predictions[keep], labels=range(classes))
    ours = confusion_matrix(torch.from_numpy(labels), torch.from_numpy(predictions), classes)
    assert ours.numpy().tolist() == expected.tolist()
    tp = np.diag(expected)
    union = expected.sum(0) + expected.sum(1) - tp
    present = union > 0
    assert miou(ours) == pytest.approx(np.mean(tp[present] / union[present]))
    assert pixel_accuracy(ours) == pytest.approx((labels[keep] == predictions[keep]).mean())


def test_classes_absent_from_labels_and_predictions_are_left_out_of_the_mean() -> None:
    labels = torch.tensor([0, 0, 1, 1, 255])
    predictions = torch.tensor([0, 1, 1, 1, 3])  # class 2 appears nowhere; class 3 only on an ignored pixel
    matrix = confusion_matrix(labels, predictions, num_classes=4)
    assert miou(matrix) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert pixel_accuracy(matrix) == pytest.approx(3 / 4)


def test_labels_beyond_num_classes_are_rejected() -> None:
    with pytest.raises(ValueError, match="class ids outside 0..2 .*set num_classes"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 0]), num_classes=3)


def _ground_truth(tmp_path: Path, people: list[tuple[np.ndarray, float]]) -> Path:
    """A COCO person_keypoints JSON with one image per person (keypoints (17, 3), area)."""
    images = [{"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "width": 640, "height": 480} for i in range(len(people))]
    annotations = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0, "area": area,
                    "bbox": [10.0, 10.0, 100.0, 200.0], "num_keypoints": int((kp[:, 2] > 0).sum()),
                    "keypoints": kp.ravel().tolist()} for i, (kp, area) in enumerate(people)]
    path = tmp_path / "person_keypoints_val.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [
        {"id": 1, "name": "person", "keypoints": list(COCO_KEYPOINTS), "skeleton": []}]}))
    return path


def _person(rng: np.random.Generator) -> np.ndarray:
    keypoints = np.concatenate([rng.uniform(20, 100, (17, 2)), np.full((17, 1), 2.0)], axis=1)
    keypoints[3, 2] = 0  # one unlabelled keypoint
    keypoints[3, :2] = 0
    return keypoints


def _result(image_id: int, points: np.ndarray, score: float = 1.0) -> dict:
    return {"image_id": image_id, "category_id": 1, "score": score,
            "keypoints": np.concatenate([points[:, :2], np.ones((17, 1))], axis=1).ravel().tolist()}


def test_perfect_predictions_give_ap_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    people = [(_person(rng), 5000.0) for _ in range(3)]
    truth = _ground_truth(tmp_path, people)
    scores = oks_ap(truth, [_result(i + 1, kp) for i, (kp, _) in enumerate(people)])
    assert scores["ap"] == pytest.approx(1.0) and scores["ar"] == pytest.approx(1.0)


@pytest.mark.parametrize("shift", [1.5, 3.0, 6.0])  # OKS 0.94, 0.80, 0.54: AP 0.9, 0.7, 0.1
def test_shifted_prediction_ap_matches_closed_form_oks(tmp_path: Path, shift: float) -> None:
    """One person, every keypoint off by (shift, shift): AP = fraction of thresholds 0.50:0.05:0.95 <= OKS."""
    keypoints, area = _person(np.random.default_rng(1)), 4000.0
    truth = _ground_truth(tmp_path, [(keypoints, area)])
    labelled = keypoints[:, 2] > 0
    # COCO's OKS (cocodataset.org/#keypoints-eval): mean over labelled k of exp(-d^2 / (2 s^2 k_k^2)), s^2 = area
    oks = np.exp(-(2 * shift**2) / (2 * area * (2 * COCO_SIGMAS[labelled]) ** 2)).mean()
    thresholds = np.linspace(0.5, 0.95, 10)
    assert np.min(np.abs(thresholds - oks)) > 1e-3  # the case is not on a threshold edge
    expected = float((thresholds <= oks).mean())
    predicted = keypoints.copy()
    predicted[:, :2] += shift
    assert 0 < expected < 1
    assert oks_ap(truth, [_result(1, predicted)])["ap"] == pytest.approx(expected)


def test_a_low_scored_wrong_prediction_ranks_below_a_right_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    people = [(_person(rng), 5000.0) for _ in range(2)]
    truth = _ground_truth(tmp_path, people)
    wrong = people[1][0].copy()
    wrong[:, :2] += 40.0
    right_first = oks_ap(truth, [_result(1, people[0][0], 0.9), _result(2, wrong, 0.1)])
    # 2 GT, 1 match ranked first: precision 1 up to recall 0.5, nothing after -> AP = 51/101 on COCO's grid
    assert right_first["ap"] == pytest.approx(51 / 101)
    assert right_first["ar"] == pytest.approx(0.5)


def test_no_predictions_score_zero(tmp_path: Path) -> None:
    truth = _ground_truth(tmp_path, [(_person(np.random.default_rng(3)), 5000.0)])
    assert oks_ap(truth, [])["ap"] == 0.0


def test_pck_counts_labelled_keypoints_within_the_box_normalised_threshold() -> None:
    truth = np.zeros((1, 4, 3))
    truth[0, :, :2] = [[10, 10], [20, 20], [30, 30], [40, 40]]
    truth[0, :, 2] = [2, 1, 2, 0]  # the last keypoint is unlabelled
    boxes = np.array([[0.0, 0.0, 100.0, 200.0]])
    predicted = truth[..., :2].copy()
    predicted[0, 0] += [4.0, 0.0]     # 0.04 of the width: correct at 0.05
    predicted[0, 1] += [0.0, 12.0]    # 0.06 of the height: wrong
    predicted[0, 3] += [90.0, 90.0]   # unlabelled: not counted
    assert pck(predicted, truth, boxes, threshold=0.05) == pytest.approx(2 / 3)
    assert math.isclose(pck(predicted, truth, boxes, threshold=0.07), 1.0)
