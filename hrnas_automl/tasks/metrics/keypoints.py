"""Keypoint scores: COCO OKS AP through pycocotools, and PCK.

``oks_ap`` hands the predictions to pycocotools' ``COCOeval`` (iouType ``keypoints``; its COCO sigmas for
the 17 keypoints) against the ground-truth JSON file, so the numbers are COCO's own. PCK counts a
labelled keypoint as correct when its error, divided per axis by the person box's width and height, has
norm below ``threshold`` (mmpose's ``PCKAccuracy`` with ``norm_item='bbox'``, default thr 0.05).
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["oks_ap", "pck"]

_STAT_NAMES = ("ap", "ap50", "ap75", "ap_medium", "ap_large", "ar", "ar50", "ar75", "ar_medium", "ar_large")


def oks_ap(annotation_file: str | Path, results: Sequence[dict[str, Any]]) -> dict[str, float]:
    """COCO keypoint AP/AR (``ap``, ``ap50``, ``ap75``, ``ar``, ...) of ``results``; 0 for no results.

    Each result is ``{"image_id", "category_id", "keypoints": [x, y, v] * K, "score"}`` (COCO's result format).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {name: 0.0 for name in _STAT_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress; stdout carries our JSON
        truth = COCO(str(annotation_file))
        evaluation = COCOeval(truth, truth.loadRes(list(results)), "keypoints")
        evaluation.params.imgIds = sorted({int(r["image_id"]) for r in results})
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    # COCOeval reports -1 where a range holds no ground truth; report 0 so that "higher is better" holds.
    return {name: max(float(value), 0.0) for name, value in zip(_STAT_NAMES, evaluation.stats)}


def pck(predicted: np.ndarray, truth: np.ndarray, boxes: np.ndarray, threshold: float = 0.05) -> float:
    """Fraction of labelled keypoints within ``threshold`` of the truth, normalised by box (w, h).

    ``predicted`` (N, K, 2), ``truth`` (N, K, 3) of x, y, v, ``boxes`` (N, 4) COCO ``[x, y, w, h]``.
    """
    labelled = truth[..., 2] > 0
    if not labelled.any():
        return 0.0
    scale = np.maximum(boxes[:, None, 2:4], 1e-6)
    error = np.linalg.norm((predicted - truth[..., :2]) / scale, axis=-1)
    return float((error[labelled] < threshold).mean())
