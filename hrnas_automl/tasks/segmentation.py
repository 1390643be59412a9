"""Semantic segmentation: per-pixel cross-entropy (ignore index 255), scored by mIoU and pixel accuracy.

The space's ``segmentation`` head gives logits at 1/4 of the input; they are upsampled bilinearly to the
label size for the loss and the prediction, as mmseg's decode heads do. Training is the package's trainer
(:func:`hrnas_automl.tasks.training.fit`) with this loss and evaluation plugged in.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from hrnas_automl.data.segmentation import IGNORE_INDEX, SegmentationData
from hrnas_automl.runtime.device import device_of
from hrnas_automl.tasks import EpochCallback, Task, training
from hrnas_automl.config import TrainSettings
from hrnas_automl.data.loading import IN_PROCESS, make_loader
from hrnas_automl.tasks.metrics.segmentation import confusion_matrix, miou, pixel_accuracy

__all__ = ["segmentation_loss", "evaluate_segmentation", "SegmentationTask", "TASK"]



def _at_label_size(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if logits.ndim != 4:
        raise ValueError(f"the segmentation head must give logits (N, classes, H/4, W/4), got shape "
                         f"{tuple(logits.shape)}; build the space with head='segmentation'")
    return F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean cross-entropy over the labelled pixels (0 with a gradient path when every pixel is ignored)."""
    logits = _at_label_size(logits, labels)
    if not (labels != ignore_index).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=ignore_index)


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, dataset: Dataset, num_classes: int, *, batch_size: int = 16,
                          device: str | torch.device | None = None, ignore_index: int = IGNORE_INDEX,
                          loading: TrainSettings = IN_PROCESS) -> dict[str, float]:
    """``miou``, ``pixel_accuracy`` and the per-pixel ``loss`` of ``model`` (eval mode) on ``dataset`` (loaded as
    ``loading`` says)."""
    if len(dataset) == 0:
        raise ValueError("cannot evaluate on an empty dataset; give the validation split at least one image")
    device = device_of(model) if device is None else device
    model.eval().to(device)
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    loss_sum, pixels = 0.0, 0
    for images, labels in make_loader(dataset, loading, batch_size=batch_size):
        logits = _at_label_size(model(images.to(device)), labels).cpu()
        counted = int((labels != ignore_index).sum())
        if counted:
            loss_sum += F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum").item()
            pixels += counted
        matrix += confusion_matrix(labels, logits.argmax(dim=1), num_classes, ignore_index=ignore_index)
    return {"miou": miou(matrix), "pixel_accuracy": pixel_accuracy(matrix), "loss": loss_sum / max(pixels, 1)}


class SegmentationTask(Task):
    """Semantic segmentation on Cityscapes, ADE20K or generated shapes; ``default`` = mIoU."""

    name = "segmentation"
    head = "segmentation"
    metric = "miou"
    def model_args(self, data: SegmentationData) -> dict[str, Any]:
        return {"num_classes": data.num_classes, "in_channels": data.input_shape[0]}

    def fit(self, model: nn.Module, data: SegmentationData, settings: TrainSettings, options: Mapping[str, Any],
            on_epoch: EpochCallback) -> dict[str, Any]:
        return training.fit(
            model, training.train_loader(data.train, settings), settings, on_epoch,
            loss=lambda logits, labels: segmentation_loss(logits, labels, data.ignore_index),
            evaluate=lambda net: evaluate_segmentation(net, data.val, data.num_classes, batch_size=settings.batch_size,
                                                       ignore_index=data.ignore_index, loading=settings))


TASK = SegmentationTask()
