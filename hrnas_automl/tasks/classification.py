"""Image classification: train a frozen network with SGD + cosine LR and report top-1 accuracy per epoch.

Kept deliberately plain (no augmentation, no AMP) so that every strategy scores architectures under the
same, seeded, reproducible recipe; the metric dicts feed NNI's intermediate and final results.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from hrnas_automl.config import TrainSettings
from hrnas_automl.data import ClassificationData
from hrnas_automl.tasks import EpochCallback, Task

__all__ = ["train_classifier", "evaluate_classifier", "to_device", "ClassificationTask", "TASK"]


def to_device(target: Any, device: torch.device | str) -> Any:
    """``target`` on ``device``: a tensor, or a dict/list/tuple of them (dense tasks' targets), else as is."""
    if isinstance(target, torch.Tensor):
        return target.to(device, non_blocking=True)
    if isinstance(target, Mapping):
        return {key: to_device(value, device) for key, value in target.items()}
    if isinstance(target, (list, tuple)):
        return type(target)(to_device(value, device) for value in target)
    return target


@torch.no_grad()
def evaluate_classifier(model: nn.Module, dataset: Dataset, *, batch_size: int = 256,
                        device: str = "cpu") -> dict[str, float]:
    """Top-1 ``accuracy`` in [0, 1] and mean cross-entropy ``loss`` of ``model`` (eval mode) on ``dataset``."""
    if len(dataset) == 0:
        raise ValueError("cannot evaluate on an empty dataset; give the validation split at least one image")
    model.eval().to(device)
    correct, loss_sum, seen = 0, 0.0, 0
    for images, labels in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
        images, labels = images.to(device), labels.to(device)
        logits = model(images)
        loss_sum += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(dim=1) == labels).sum().item()
        seen += labels.shape[0]
    return {"accuracy": correct / seen, "loss": loss_sum / seen}


def train_classifier(model: nn.Module, data: ClassificationData, settings: TrainSettings,
                     on_epoch: Callable[[int, dict[str, Any]], None] | None = None, *,
                     output_loss: Callable[[Any, torch.Tensor, nn.Module], torch.Tensor] | None = None,
                     evaluate: Callable[[nn.Module], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train ``model`` on ``data.train``, evaluating on ``data.val`` after every epoch.

    SGD with momentum and weight decay, a cosine LR schedule over all steps, cross-entropy with label
    smoothing. ``settings.seed`` seeds torch's global RNG (dropout and the like) and the shuffling, so
    the same seed and the same initial weights give identical metrics. ``on_epoch(index, metrics)`` gets
    ``{"accuracy", "loss", "train_loss"}`` after each epoch; the last epoch's dict is returned.

    Networks with other outputs reuse the recipe: ``output_loss(outputs, labels, criterion)`` turns the
    model's outputs into the loss (default ``criterion(outputs, labels)``) and ``evaluate(model)`` gives
    the validation metrics (default :func:`evaluate_classifier` on ``data.val``). ``labels`` may be any
    batch the DataLoader collates (a mask tensor, a dict of heatmaps and weights); it is moved to the device.
    """
    device = torch.device(settings.device)
    torch.manual_seed(settings.seed)
    shuffle = torch.Generator().manual_seed(settings.seed)
    n_train = len(data.train)
    if n_train == 0:
        raise ValueError("cannot train on an empty dataset; give the training split at least one image")
    # A last batch of one image breaks BatchNorm over 1x1 features (heads) in train mode; drop it then.
    drop_last = n_train > settings.batch_size and n_train % settings.batch_size == 1
    loader = DataLoader(data.train, batch_size=settings.batch_size, shuffle=True, generator=shuffle,
                        num_workers=0, drop_last=drop_last, pin_memory=device.type == "cuda")
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                                weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs * len(loader))
    criterion = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    metrics: dict[str, Any] = {}
    for epoch in range(settings.epochs):
        model.train()
        loss_sum, seen = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{settings.epochs}", disable=not settings.progress, leave=False)
        for images, labels in bar:
            images = images.to(device, non_blocking=True)
            labels = to_device(labels, device)
            outputs = model(images)
            loss = criterion(outputs, labels) if output_loss is None else output_loss(outputs, labels, criterion)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * images.shape[0]
            seen += images.shape[0]
            bar.set_postfix(loss=f"{loss.item():.3f}")
        val = (evaluate_classifier(model, data.val, batch_size=settings.batch_size, device=settings.device)
               if evaluate is None else evaluate(model))
        metrics = {**val, "train_loss": loss_sum / seen}
        if settings.progress:
            tqdm.write(f"epoch {epoch + 1}/{settings.epochs}: "
                       + " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
        if on_epoch is not None:
            on_epoch(epoch, dict(metrics))
    return metrics


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
        return train_classifier(model, data, settings, on_epoch)


TASK = ClassificationTask()
