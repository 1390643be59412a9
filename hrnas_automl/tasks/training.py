"""THE trainer: every training loop of the package (the tasks, the fine-grained search, the slimming objective,
the one-shot supernet) runs through it, so seeding, threads, SGD and the LR schedule exist once.

:func:`fit` is the epoch loop: it seeds torch, builds SGD with momentum and weight decay from
:class:`~hrnas_automl.config.TrainSettings`, steps an LR schedule over all steps, evaluates after every epoch and
calls back. What differs between loops is plugged in:

* ``loss(outputs, labels)``: the task's loss (default: cross-entropy with the settings' label smoothing);
* ``start_epoch(epoch)``: per-epoch state before the first batch (a penalty weight that ramps up);
* ``after_step(optimizer)``: runs after every optimizer step, before the schedule steps (a proximal step);
* ``end_epoch(epoch, optimizer)``: runs after every epoch and may return a new optimizer (a network pruned and
  shrunk in place gets an optimizer over its new parameters; the schedule carries over to it);
* ``evaluate(model)``: the validation metrics of the epoch;
* ``checkpoint(epoch, state)``: runs after every epoch with the trainer's state (weights, optimizer, schedule,
  RNGs, counts), which ``resume=state`` continues from exactly: the rest of the run is as it would have been.

:func:`train_step` is the step core :func:`fit` is made of; the step-based supernet drives it with its own path
sampling and checkpoints. :func:`recalibrate_bn` re-estimates BatchNorm statistics (the fine-grained search after
each shrink, the one-shot search for every candidate).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from contextlib import contextmanager
from typing import Any, Protocol

import torch
from torch import nn
from torch.optim import SGD, Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LRScheduler
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from hrnas_automl.config import TrainSettings
from hrnas_automl.data.loading import make_loader
from hrnas_automl.runtime import distributed
from hrnas_automl.runtime.device import Runtime, device_of, runtime_of
from hrnas_automl.tasks import EpochCallback

__all__ = ["Loss", "Schedule", "Batches", "torch_threads", "to_device", "run_length", "train_loader",
           "sgd", "cosine", "cosine_closed_form", "linear_decay", "DivergedError", "train_step", "fit",
           "recalibrate_bn"]

Loss = Callable[[Any, Any], torch.Tensor]
Schedule = Callable[[Optimizer, int], LRScheduler]  # (optimizer, total steps) -> a scheduler stepped once per step


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite: the run has no meaningful metric and must be reported as failed
    (an NNI trial FAILED, an Optuna trial FAIL), never scored."""


class Batches(Iterable[tuple[Any, Any]], Sized, Protocol):
    """What :func:`fit` trains on: ``(inputs, labels)`` batches, a fresh pass per iteration, ``len`` per pass."""


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with torch's intra-op thread count set to ``n`` (None: unchanged), then restore it."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def to_device(target: Any, device: torch.device | str) -> Any:
    """``target`` on ``device``: a tensor, or a dict/list/tuple of them (dense tasks' targets), else as is."""
    if isinstance(target, torch.Tensor):
        return target.to(device, non_blocking=True)
    if isinstance(target, Mapping):
        return {key: to_device(value, device) for key, value in target.items()}
    if isinstance(target, (list, tuple)):
        return type(target)(to_device(value, device) for value in target)
    return target


def run_length(settings: TrainSettings, batches_per_epoch: int) -> tuple[int, int]:
    """``(epochs, steps)`` of a run with ``batches_per_epoch`` steps per pass: ``settings.steps`` steps when set
    (the epochs it takes, the last one cut short), else ``settings.epochs`` full passes."""
    if batches_per_epoch < 1:
        raise ValueError("the training data gives no batch; give the training split at least batch_size images")
    steps = settings.steps if settings.steps is not None else settings.epochs * batches_per_epoch
    return math.ceil(steps / batches_per_epoch), steps


def train_loader(dataset: Dataset, settings: TrainSettings) -> DataLoader:
    """The training split of a task in shuffled batches of ``settings.batch_size``, the order seeded by
    ``settings.seed``; a last batch of one image is dropped (it breaks BatchNorm over 1x1 features in train mode)."""
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError("cannot train on an empty dataset; give the training split at least one image")
    # skip_draws=1: the tasks' loop always drew one seed per pass (its progress bar, ``tqdm.auto``, made an unused
    # iterator of the loader), so the tasks' seeded results stay as they were.
    last_of_one = n > settings.batch_size and n % settings.batch_size == 1
    return make_loader(dataset, settings, shuffle=True, drop_last=last_of_one, skip_draws=1, shard=True)


def sgd(model: nn.Module, settings: TrainSettings, *, decay_1d: bool = True,
        state: Mapping[torch.Tensor, dict[str, Any]] | None = None) -> SGD:
    """SGD with the settings' lr, momentum and weight decay over ``model``'s parameters.

    ``decay_1d=False`` exempts BN / GN weights and biases from weight decay (DetNAS's supernet). ``state`` (an
    earlier optimizer's ``state``) hands its entries on to the parameters still present: a network shrunk in
    place keeps the momentum of its survivors, and the entries of removed parameters are dropped.
    """
    if decay_1d:
        optimizer = SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                        weight_decay=settings.weight_decay)
    else:
        decay = [p for p in model.parameters() if p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.ndim <= 1]
        optimizer = SGD([{"params": decay, "weight_decay": settings.weight_decay},
                         {"params": no_decay, "weight_decay": 0.0}], lr=settings.lr, momentum=settings.momentum)
    for param in model.parameters():
        if state is not None and param in state:
            optimizer.state[param] = state[param]
    return optimizer


def cosine(optimizer: Optimizer, steps: int) -> LRScheduler:
    """Cosine annealing to 0 over ``steps`` steps, by torch's ``CosineAnnealingLR`` (the tasks' schedule)."""
    return CosineAnnealingLR(optimizer, T_max=steps)


def cosine_closed_form(optimizer: Optimizer, steps: int) -> LRScheduler:
    """The curve of :func:`cosine`, each step's LR computed from the step index (``lr · ½(1 + cos πs/steps)``)
    instead of torch's update from the previous LR; the two round differently in the last bits, and the
    fine-grained search has always used this one, so it keeps its results."""
    return LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))


def linear_decay(optimizer: Optimizer, steps: int) -> LRScheduler:
    """LR falling linearly to 0 over ``steps`` steps (DetNAS's supernet, REFERENCE §3.3)."""
    return LambdaLR(optimizer, lambda step: max(0.0, 1 - step / steps))


def train_step(model: nn.Module, optimizer: Optimizer, inputs: Any, labels: Any, loss: Loss, *,
               after_step: Callable[[Optimizer], None] | None = None,
               scheduler: LRScheduler | None = None, runtime: Runtime | None = None,
               scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
    """One SGD step on one batch: forward (under ``runtime``'s autocast), ``loss(outputs, labels)``, backward, the
    optimizer step (through ``scaler`` for fp16), then ``after_step(optimizer)`` (at this step's LR) and the
    schedule's step. Returns the loss.

    Raises:
        DivergedError: the loss is not finite (checked before the step, so the weights stay as they were).
    """
    if runtime is None:
        value = loss(model(inputs), labels)
    else:
        with runtime.autocast():
            value = loss(model(inputs), labels)
    if not torch.isfinite(value):
        raise DivergedError(f"training diverged: the loss is {value.item()}; lower train.lr (the learning rate) "
                            "or check the data")
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        value.backward()
        optimizer.step()
    else:
        scaler.scale(value).backward()
        scaler.step(optimizer)
        scaler.update()
    if after_step is not None:
        after_step(optimizer)
    if scheduler is not None:
        scheduler.step()
    return value


def _carry_schedule(scheduler: LRScheduler, schedule: Schedule, optimizer: Optimizer, steps: int) -> LRScheduler:
    """``schedule`` on ``optimizer``, where ``scheduler`` (on the optimizer it replaces) had got to."""
    moved = schedule(optimizer, steps)
    moved.load_state_dict(scheduler.state_dict())
    for group, lr in zip(optimizer.param_groups, scheduler.get_last_lr()):
        group["lr"] = lr
    return moved


def _loader_generator(batches: Batches) -> torch.Generator | None:
    """The generator a loader shuffles with (None: it does not shuffle, or draws from torch's global one)."""
    return getattr(batches, "generator", None)


def _trainer_state(model: nn.Module, batches: Batches, optimizer: Optimizer, scheduler: LRScheduler | None,
                   epochs_done: int, steps_done: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """What :func:`fit` needs to continue a run after ``epochs_done`` epochs: weights, optimizer (momentum),
    schedule, torch's RNG, the loader's generator, counts and the last metrics (tensors and plain values only,
    so ``torch.load(weights_only=True)`` reads it back). The caller rebuilds the model's shapes before resuming."""
    generator = _loader_generator(batches)
    return {"epoch": epochs_done, "step": steps_done, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "torch_rng": torch.get_rng_state(), "loader_rng": generator.get_state() if generator is not None else None,
            "metrics": dict(metrics)}


def fit(model: nn.Module, batches: Batches, settings: TrainSettings, on_epoch: EpochCallback | None = None, *,
        loss: Loss | None = None, evaluate: Callable[[nn.Module], dict[str, Any]] | None = None,
        start_epoch: Callable[[int], None] | None = None, after_step: Callable[[Optimizer], None] | None = None,
        end_epoch: Callable[[int, Optimizer], Optimizer | None] | None = None,
        schedule: Schedule | None = cosine, seed_torch: bool = True,
        checkpoint: Callable[[int, dict[str, Any]], None] | None = None,
        resume: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train ``model`` on ``batches`` (e.g. :func:`train_loader`) with SGD (:func:`sgd`) and ``schedule`` (None:
    a constant LR) over all steps of the run (:func:`run_length`); returns the last epoch's metrics.

    ``settings.seed`` seeds torch's global RNG (dropout and the like; ``seed_torch=False`` keeps the stream
    of a caller that seeded it where it built the network) and, through :func:`train_loader`, the shuffling,
    so the same seed and the same initial weights give identical metrics. After each epoch, in this order:
    ``end_epoch(epoch, optimizer)`` (a new optimizer it returns takes over, with the schedule where it was),
    ``evaluate(model)`` and ``on_epoch(epoch, metrics)`` with the evaluation's metrics plus ``train_loss``
    (the mean training loss of the epoch), then ``checkpoint(epoch, state)``. ``resume`` (such a
    state, the model already of its shapes) restores it and runs the remaining epochs. The hooks are described in
    the module docstring.

    Devices (:mod:`hrnas_automl.runtime.device`): the model, batches and labels move to ``settings.device``; the
    forward passes of training, ``end_epoch`` and ``evaluate`` run under its AMP autocast (fp16 with a gradient
    scaler); ``channels_last`` stores the weights NHWC. Under ``torchrun`` (:mod:`hrnas_automl.runtime.distributed`)
    the model trains in DDP (``sync_bn``: BatchNorm over the global batch), ``train_loss`` is the global batch's,
    ``evaluate`` runs on rank 0 and its metrics are broadcast, and only rank 0 calls ``checkpoint``.
    """
    runtime = runtime_of(settings)
    if seed_torch:
        torch.manual_seed(settings.seed)
    runtime.place(model)
    optimizer = sgd(model, settings)
    scaler = runtime.grad_scaler()
    epochs, steps = run_length(settings, len(batches))
    scheduler = schedule(optimizer, steps) if schedule is not None else None
    loss = loss or nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    metrics: dict[str, Any] = {}
    first, step = 0, 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(resume["scheduler"])
        torch.set_rng_state(resume["torch_rng"])
        generator = _loader_generator(batches)
        if generator is not None:
            generator.set_state(resume["loader_rng"])
        first, step, metrics = resume["epoch"], resume["step"], dict(resume["metrics"])
    net = _parallel(model, settings, runtime)
    for epoch in range(first, epochs):
        if start_epoch is not None:
            start_epoch(epoch)
        model.train()
        loss_sum, seen = 0.0, 0
        # One iterator per pass (each one of a shuffling DataLoader draws from its generator), run to its end but
        # on the last step of the run (the sampler draws its next permutation there).
        bar = tqdm(iter(batches), total=min(len(batches), steps - step), desc=f"epoch {epoch + 1}/{epochs}",
                   disable=not settings.progress, leave=False)
        for inputs, labels in bar:
            inputs = runtime.inputs(inputs)
            value = train_step(net, optimizer, inputs, to_device(labels, runtime.device), loss, after_step=after_step,
                               scheduler=scheduler, runtime=runtime, scaler=scaler)
            loss_sum += value.item() * inputs.shape[0]
            seen += inputs.shape[0]
            bar.set_postfix(loss=f"{value.item():.3f}")
            step += 1
            if step == steps:
                break
        if distributed.is_distributed():  # the global batch's mean loss, as one process computes it
            loss_sum, seen = distributed.all_reduce_sum(torch.tensor([loss_sum, seen], dtype=torch.float64)).tolist()
        if end_epoch is not None:
            with runtime.autocast():
                replaced = end_epoch(epoch, optimizer)
            if replaced is not None and replaced is not optimizer:
                if scheduler is not None and schedule is not None:
                    scheduler = _carry_schedule(scheduler, schedule, replaced, steps)
                optimizer = replaced
                net = model  # the old DDP wrapper (hooks on the old parameters) goes before the new one is built
                net = _parallel(model, settings, runtime)
        with runtime.autocast():
            evaluated = evaluate(model) if evaluate is not None and distributed.is_main() else {}
        metrics = {**distributed.broadcast_object(evaluated), "train_loss": loss_sum / seen}
        if settings.progress:
            tqdm.write(f"epoch {epoch + 1}/{epochs}: "
                       + " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
        if on_epoch is not None:
            on_epoch(epoch, dict(metrics))
        if checkpoint is not None and distributed.is_main():
            checkpoint(epoch, _trainer_state(model, batches, optimizer, scheduler, epoch + 1, step, metrics))
    return metrics


def _parallel(model: nn.Module, settings: TrainSettings, runtime: Runtime) -> nn.Module:
    """What the training steps run: ``model`` itself in one process; under ``torchrun`` ``model`` in DDP, its
    BatchNorms synchronised first with ``settings.sync_bn``, on ``runtime``'s device and memory format (again after
    a shrink, whose new layers need both)."""
    runtime.place(model)
    if not distributed.is_distributed():
        return model
    if settings.sync_bn:
        distributed.convert_sync_bn(model)
    return distributed.wrap_ddp(model, runtime.device)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Re-estimate every BatchNorm's running statistics as a cumulative average over ``batches`` (train mode, no
    gradients, on the model's device), as HR-NAS's search before each validation and DetNAS's before scoring a
    candidate (REFERENCE §1.3, §3.3); the BN momenta are restored and the model left in eval mode even if a batch
    fails. Under ``torchrun`` each rank passes its share of every batch and the statistics are all-reduced (the
    layers synchronised for the pass), so every rank ends with those of the whole batches, as one process would."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in norms]
    classes = [type(bn) for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average
    if distributed.is_distributed():
        distributed.convert_sync_bn(model)
    device = device_of(model)
    model.train()
    try:
        for images in batches:
            model(images.to(device))
    finally:
        for bn, momentum, cls in zip(norms, momenta, classes):
            bn.momentum = momentum
            bn.__class__ = cls
        model.eval()
