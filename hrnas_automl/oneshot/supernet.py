"""The weight-sharing detection supernet: building it, its backbone MACs table, path sampling and path-wise
training with resumable checkpoints.

Training follows DetNAS (REFERENCE §3.3): every step runs **one** path, drawn uniformly (the COCO supernet,
``engine/trainer.py:101-114``) or from a uniformly drawn MACs bin (the ImageNet supernet, ``train.py:210-231``);
the candidates off the path get no gradient, so SGD leaves them (and their momentum) untouched, as the official
code does by setting zero gradients to None. The step's path and batch are functions of ``(seed, step)``, so a
resumed run continues exactly where the checkpoint left off. Each step is the package trainer's
(:func:`hrnas_automl.tasks.training.train_step`), with its SGD and linear LR decay.
"""
from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch.utils.data import Dataset, default_collate

from hrnas_automl.arch import Space, resolve_space
from hrnas_automl.cost.analytic import conv_macs_table
from hrnas_automl.cost.limits import InfeasibleConstraintError
from hrnas_automl.data import build_data
from hrnas_automl.data.coco_detection import DetectionData
from hrnas_automl.files import OutputLock, load_torch_checkpoint, save_torch_atomic
from hrnas_automl.oneshot.paths import set_path, to_supernet
from hrnas_automl.oneshot.config import SupernetConfig
from hrnas_automl.runtime import distributed
from hrnas_automl.runtime.device import runtime_of
from hrnas_automl.strategies.base import random_arch
from hrnas_automl.tasks import training
from hrnas_automl.tasks.detection import Detector, check_detector_options, fcos_loss

__all__ = ["Supernet", "build_supernet", "sample_path", "batch_indices",
           "load_checkpoint", "train_supernet"]

_CHECKPOINT_KIND = "hrnas-automl detection supernet"
_BIN_TRIES = 500  # Supernet-ImageNet/train.py: at most 500 draws per MACs bin


@dataclass
class Supernet:
    """The detector over the supernet backbone, its data, and the backbone's space (choices and cost tables)."""

    model: Detector
    data: DetectionData
    space: Space  # the backbone head of the config's space
    macs_input: tuple[int, int, int]

    @property
    def choices(self) -> dict[str, list[Any]]:
        return self.space.choices

    def conv_macs(self, arch: Mapping[str, Any]) -> int:
        """Backbone Conv2d MACs of ``arch`` at ``macs_input`` (DetNAS's budget count, from the cost model)."""
        return int(conv_macs_table(self.space, self.macs_input).evaluate(arch)[0])

    def conv_macs_bounds(self) -> tuple[int, int]:
        """The space's smallest and largest backbone Conv2d MACs at ``macs_input``."""
        lo, hi = conv_macs_table(self.space, self.macs_input).bounds()
        return int(lo[0]), int(hi[0])


def build_supernet(config: SupernetConfig) -> Supernet:
    """The config's data and a freshly initialised (seeded) supernet detector on it."""
    data = build_data("detection", config.data.kind, config.data.options())
    space = resolve_space(config.space, **config.space_args, in_channels=data.input_shape[0], head="backbone")
    with torch.random.fork_rng():
        torch.manual_seed(config.train.seed)
        backbone = to_supernet(space.build())
        model = Detector(backbone, data.num_classes, data.input_shape, **check_detector_options(config.detector))
    return Supernet(model, data, space, config.macs_input)


def sample_path(choices: Mapping[str, list[Any]], rng: random.Random,
                macs: Callable[[Mapping[str, Any]], float] | None = None,
                bins: Sequence[tuple[float, float]] | None = None) -> dict[str, Any]:
    """A uniform random path or, with ``bins``, one whose MACs fall in a uniformly drawn ``[lo, hi)`` bin (the
    last draw when 500 draws miss the bin, as the official loop gives up)."""
    if not bins or macs is None:
        return random_arch(choices, rng)
    low, high = bins[rng.randrange(len(bins))]
    for _ in range(_BIN_TRIES):
        arch = random_arch(choices, rng)
        if low <= macs(arch) < high:
            break
    return arch


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Dataset indices of training step ``step``: epoch-wise seeded permutations, last partial batch dropped."""
    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return perm[k * batch_size:(k + 1) * batch_size].tolist()


def collate(dataset: Dataset, indices: list[int]) -> Any:
    """One batch of ``dataset`` items."""
    return default_collate([dataset[i] for i in indices])


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a supernet checkpoint (``weights_only=True``); a one-line ``ValueError`` for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"supernet checkpoint {path} does not exist; train one with "
                                "`hrnas-automl oneshot train --config ...` or fix the path")
    return load_torch_checkpoint(path, _CHECKPOINT_KIND, "supernet",
                                 "delete it or point to the file `oneshot train` wrote")


def _same_config(stored: Any, config: SupernetConfig) -> bool:
    """Whether a checkpoint's config (its JSON dump) reads as ``config``: compared as validated settings, so a dump
    without keys added since (defaults) still matches; ``train.device`` is where it ran, not what it trains, so a
    checkpoint resumes on another device (a dump of before ``auto`` says ``cpu``)."""
    try:
        old = SupernetConfig.model_validate(stored)
    except ValidationError:
        return False
    return old.model_copy(update={"train": dataclasses.replace(old.train, device=config.train.device)}) == config


def train_supernet(config: SupernetConfig, *,
                   on_checkpoint: Callable[[int, float], None] | None = None) -> dict[str, float]:
    """Train (or resume) the supernet of ``config``; returns ``{"loss", "steps"}`` (loss: mean over the last
    checkpoint interval, also when the checkpoint was already finished).

    The checkpoint holds model, optimizer, scheduler, torch RNG and step; an existing checkpoint of the same
    config is resumed, one of another config is an error. ``on_checkpoint(step, mean_loss)`` follows every save.
    The checkpoint's folder is held for the run (:class:`~hrnas_automl.files.OutputLock`).

    Devices and ``torchrun`` as :func:`hrnas_automl.tasks.training.fit`: ``train.device``/``amp``/``channels_last``,
    DDP over the ranks, each training on its share of every global batch of ``train.batch_size``; every rank draws
    the step's path from the same seeded generator and rank 0's is broadcast and checked against it (a rank that
    drew another path is an error, never a silent mix of paths); rank 0 alone holds the folder, writes the
    checkpoint and calls ``on_checkpoint``; the reported loss is the mean over ranks.

    Raises:
        InfeasibleConstraintError: a ``train.macs_bins`` bin lies outside the backbone's Conv2d MACs range (no path
            could be drawn in it).
    """
    lock = OutputLock(Path(config.checkpoint).parent, "oneshot train") if distributed.is_main() else nullcontext()
    with lock:
        return _train(config, on_checkpoint)


def _check_bins(net: Supernet, bins: Sequence[tuple[float, float]]) -> None:
    """Refuse a MACs bin no path of the space falls in (sampling would silently fall back to its last draw)."""
    lo, hi = net.conv_macs_bounds()
    for low, high in bins:
        if high <= lo or low > hi:
            raise InfeasibleConstraintError(
                f"train.macs_bins [{low:.6g}, {high:.6g}) lies outside the backbone Conv2d MACs of {net.space.name} "
                f"at {'x'.join(map(str, net.macs_input))} ({lo:.6g} to {hi:.6g}); give bins within that range")


def _train(config: SupernetConfig, on_checkpoint: Callable[[int, float], None] | None) -> dict[str, float]:
    """:func:`train_supernet` inside its lock."""
    settings = config.train
    runtime = runtime_of(settings)
    with training.torch_threads(config.threads):
        with distributed.main_first():  # rank 0 writes generated data to disk, then the others read it
            net = build_supernet(config)
        if settings.macs_bins:
            _check_bins(net, settings.macs_bins)
        model, data = runtime.place(net.model), net.data  # before the optimizer, whose state follows the weights
        _, steps = training.run_length(settings, max(1, len(data.train) // settings.batch_size))
        optimizer = training.sgd(model, settings, decay_1d=False)  # no weight decay on BN / biases (official)
        scheduler = training.linear_decay(optimizer, steps)
        path, start, last_loss = Path(config.checkpoint), 0, float("nan")
        if path.exists():
            ckpt = load_checkpoint(path)
            if not _same_config(ckpt["config"], config):
                raise ValueError(f"checkpoint {path} was written by a different supernet config; delete it or set "
                                 "checkpoint: to a new file")
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            torch.set_rng_state(ckpt["torch_rng"])
            start, last_loss = ckpt["step"], ckpt["loss"]
        elif config.init_from is not None:
            source = load_checkpoint(config.init_from)["model"]
            own = model.state_dict()
            shared = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
            if not any(k.startswith("backbone.") for k in shared):
                raise ValueError(f"init_from {config.init_from} shares no backbone weights with this supernet; "
                                 "use a checkpoint of the same space")
            model.load_state_dict(shared, strict=False)
        losses: list[float] = []
        if settings.sync_bn and distributed.is_distributed():
            distributed.convert_sync_bn(model)
        ddp = distributed.wrap_ddp(model, runtime.device, find_unused_parameters=True)  # one path per step
        scaler = runtime.grad_scaler()
        model.train()
        for step in range(start, steps):
            rng = random.Random(f"{settings.seed}/{step}")
            arch = sample_path(net.choices, rng, net.conv_macs, settings.macs_bins)
            if distributed.broadcast_object(arch) != arch:
                raise RuntimeError(f"rank {distributed.rank()} drew another path than rank 0 at step {step}; the "
                                   "ranks must run the same hrnas-automl and config")
            set_path(model.backbone, arch)
            indices = distributed.shard(batch_indices(len(data.train), settings.batch_size, step, settings.seed))
            images, targets = collate(data.train, indices)
            loss = training.train_step(ddp, optimizer, runtime.inputs(images), training.to_device(targets,
                                       runtime.device), fcos_loss, scheduler=scheduler, runtime=runtime,
                                       scaler=scaler)
            losses.append(distributed.all_reduce_mean(loss.detach().clone()).item()
                          if distributed.is_distributed() else loss.item())
            done = step + 1
            if done % settings.checkpoint_every == 0 or done == steps:
                window = losses[-settings.checkpoint_every:]
                last_loss = sum(window) / len(window)  # mean training loss since the last checkpoint
                if not distributed.is_main():
                    continue
                save_torch_atomic({"kind": _CHECKPOINT_KIND, "config": config.model_dump(mode="json"), "step": done,
                              "loss": last_loss, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                              "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state()}, path)
                if on_checkpoint is not None:
                    on_checkpoint(done, last_loss)
    return {"loss": last_loss, "steps": float(steps)}
