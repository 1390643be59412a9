"""Image classification: train a frozen network with the package's trainer (SGD + cosine LR, cross-entropy with
label smoothing) and report top-1 accuracy per epoch.

Kept deliberately plain (no augmentation, no AMP) so that every strategy scores architectures under the
same, seeded, reproducible recipe; the metric dicts feed NNI's intermediate and final results.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from hrnas_automl.config import TrainSettings
from hrnas_automl.data import ClassificationData
from hrnas_automl.data.loading import IN_PROCESS, make_loader
from hrnas_automl.runtime.device import device_of
from hrnas_automl.tasks import EpochCallback, Task, training

__all__ = ["evaluate_classifier", "ClassificationTask", "TASK"]


@torch.no_grad()
def evaluate_classifier(model: nn.Module, dataset: Dataset, *, batch_size: int = 256,
                        device: str | torch.device | None = None, loading: TrainSettings = IN_PROCESS
                        ) -> dict[str, float]:
    """Top-1 ``accuracy`` in [0, 1] and mean cross-entropy ``loss`` of ``model`` (eval mode) on ``dataset``, loaded
    as ``loading`` (train settings: workers, pinning) says."""
    if len(dataset) == 0:
        raise ValueError("cannot evaluate on an empty dataset; give the validation split at least one image")
    device = device_of(model) if device is None else device
    model.eval().to(device)
    correct, loss_sum, seen = 0, 0.0, 0
    for images, labels in make_loader(dataset, loading, batch_size=batch_size):
        images, labels = images.to(device), labels.to(device)
        logits = model(images)
        loss_sum += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(dim=1) == labels).sum().item()
        seen += labels.shape[0]
    return {"accuracy": correct / seen, "loss": loss_sum / seen}


class ClassificationTask(Task):
    """Image classification on the ``synthetic``, ``digits`` or ``folder`` data; ``default`` = top-1 accuracy."""

    name = "classification"
    head = "classifier"
    metric = "accuracy"
    data_family = "classification"

    def model_args(self, data: ClassificationData) -> dict[str, Any]:
        return {"num_classes": data.num_classes, "in_channels": data.input_shape[0]}

    def fit(self, model: nn.Module, data: ClassificationData, settings: TrainSettings, options: Mapping[str, Any],
            on_epoch: EpochCallback) -> dict[str, Any]:
        return training.fit(model, training.train_loader(data.train, settings), settings, on_epoch,
                            evaluate=lambda net: evaluate_classifier(net, data.val, batch_size=settings.batch_size,
                                                                     loading=settings))


TASK = ClassificationTask()
