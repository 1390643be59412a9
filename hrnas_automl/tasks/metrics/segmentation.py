"""Segmentation scores from a confusion matrix: mIoU and pixel accuracy (mmseg's definitions).

IoU of class c = TP / (TP + FP + FN). The mean runs over the classes present in the labels or the
predictions; a class absent from both has no IoU (0/0) and is left out, as mmseg's ``nanmean`` does, so
a small validation set without some class does not drag mIoU down. Pixels labelled ``ignore_index``
count nowhere.
"""
from __future__ import annotations

import torch

__all__ = ["confusion_matrix", "miou", "pixel_accuracy"]


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int, *,
                     ignore_index: int = 255) -> torch.Tensor:
    """``(C, C)`` int64 counts, rows = label class, columns = predicted class, ignored pixels dropped."""
    keep = labels != ignore_index
    labels, predictions = labels[keep].long(), predictions[keep].long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels hold class ids outside 0..{num_classes - 1} (besides ignore {ignore_index}); "
                         f"set num_classes to the dataset's class count")
    counts = torch.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def miou(matrix: torch.Tensor) -> float:
    """Mean IoU over the classes present in labels or predictions (0.0 when the matrix is empty)."""
    matrix = matrix.double()
    tp = matrix.diag()
    union = matrix.sum(0) + matrix.sum(1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()) if present.any() else 0.0


def pixel_accuracy(matrix: torch.Tensor) -> float:
    """Correct pixels over all counted pixels (0.0 when the matrix is empty)."""
    total = matrix.sum()
    return float(matrix.diag().sum().double() / total) if total > 0 else 0.0
