"""Resource-aware fine-grained search (HR-NAS, Ding et al. CVPR 2021 §3.3; REFERENCE §1.3).

The widest network of a space trains with a FLOPs-weighted L1 penalty on its importance factors α (the BN scale
after each depthwise conv, one per hidden channel of a kernel path; the token-norm scale, one per Transformer
token): ``loss = task loss + λ(epoch) Σ_i penalty_i ‖α_i‖₁`` (the L1 term as a proximal step after each SGD step,
see :func:`_soft_threshold`), ``penalty_i = Δ_i / (Σ_j h_j Δ_j / Σ_j h_j)`` where Δ_i is what one channel / token
of unit i costs and h_j its width (REFERENCE §1.3, ``prune.py:155-185``). Δ_i comes from the cost model
(:mod:`hrnas_automl.cost`): the exact ptflops MACs of one grid step of the unit in the current network
(``cost="macs"``, the reference's FLOPs) or its latency measured on this machine (``cost="latency"``, under eager
PyTorch or ONNX Runtime as ``backend`` says, :func:`hrnas_automl.cost.latency.latency_table`). λ ramps linearly
from 0 over ``warmup`` epochs (``prune.py:296-326``).
Every ``prune_every`` epochs the network is *physically* shrunk (conv / BN / embedding weights sliced, and their
momentum with them, ``utils/optim.py`` ``compress_mask``; a kernel path with no channel or a Transformer with no
token is removed), BN statistics are recalibrated on training batches (``train.py:552-577``) and the shrunk network
is validated. The last ``finetune_epochs`` epochs train the final network without penalty or pruning (the official
search retrains its result instead, REFERENCE §1.3; here it is part of the same run and budget of time).

Grid: a prune step counts the survivors (|α| > threshold) of a unit, rounds that count *up* to the next value
of the space's grid and keeps that many channels with the largest |α|, so the network is a sample of the space
after every step (never fewer channels than the threshold keeps). With ``max_macs`` the run is budget-driven
instead of threshold-driven (the threshold alone overshoots any budget by far or not at all, depending on λ):
the MACs target falls linearly from the supernet's to the budget over the prune steps, and at each step the
threshold effectively rises: the grid steps (one grid value down in one unit) whose channels have the smallest
mean |α| go first until the MACs (exact, from the cost table) reach the target, so the last prune step ends just
under budget. Cost enters through the penalty only, as in the reference, where a plain |α| threshold prunes.

Protocol (any space that has it works): the frozen network, or one of its submodules, has
``prunable_units() -> [PrunableUnit(label, kind, module, alpha)]`` and ``arch() -> {label: count}``; the blocks
holding the units have ``prunable_units()`` and ``shrink_unit(label, keep, state)``, which slices their own layers
(HR-NAS :class:`SearchingBlock`); :func:`shrink` only picks ``keep``. The result is a plain sample:
``freeze(space, result.arch)`` loads ``result.state_dict`` and retrains / exports like any other.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from hrnas_automl.config import LOADING_KEYS, TrainSettings, parse_number
from hrnas_automl.cost.backends import BACKENDS
from hrnas_automl.cost.limits import check_limit
from hrnas_automl.cost.tables import CostTable
from hrnas_automl.data.loading import make_loader
from hrnas_automl.files import load_torch_checkpoint, save_torch_atomic
from hrnas_automl.runtime import distributed
from hrnas_automl.runtime.device import runtime_of
from hrnas_automl.spaces.common import OptimizerState
from hrnas_automl.spaces.hrnas import PrunableUnit
from hrnas_automl.tasks import get_task, training

if TYPE_CHECKING:
    from hrnas_automl.arch import Space

__all__ = ["FineGrainedSettings", "DEFAULT_TRAIN", "FineGrainedResult", "PruneStep", "prunable_root", "penalties",
           "shrink", "fine_grained_search"]

StepCallback = Callable[["PruneStep"], None]
_CHECKPOINT_KIND = "hrnas-automl fine-grained search"
DEFAULT_TRAIN = TrainSettings(epochs=6, batch_size=16)  # of a search called without train settings


@dataclass(frozen=True)
class FineGrainedSettings:
    """Search hyper-parameters (REFERENCE §1.3 table: λ 1.4e-4 seg, threshold 1e-3, warm-up 25 of 430 epochs); how
    the network trains (epochs, batch size, lr, seed...) is a :class:`~hrnas_automl.config.TrainSettings`.

    ``lam`` here multiplies the normalised penalty summed over all units *per image batch*, as ρ does in the
    official loss; small networks on small data need far larger values than the shipped configs. ``max_macs``
    may be a string PyYAML left unparsed (``6.9e6``): it is read by :func:`~hrnas_automl.config.parse_number`.
    """

    lam: float = 1e-3
    threshold: float = 1e-3  # model_shrink_threshold
    warmup: int = 2  # epochs over which λ ramps from 0 (epoch_warmup)
    prune_every: int = 1  # eval_interval
    finetune_epochs: int = 0  # last epochs: train the pruned network without penalty or pruning
    max_macs: float | None = None  # budget-driven pruning (None: threshold only)
    cost: str = "macs"  # what Δ_i weighs: "macs" (ptflops, exact) or "latency" (measured on this machine)
    backend: str = "torch"  # where cost="latency" is measured: "torch" (eager) or "onnxruntime"
    calib_batches: int = 10  # bn_calibration_steps

    def __post_init__(self) -> None:
        # numbers through the one parser (YAML 1.1 leaves 1e-3 and 6.9e6 strings); counts must be integers
        object.__setattr__(self, "max_macs", parse_number("fine-grained setting max_macs", self.max_macs))
        for name in ("lam", "threshold"):
            object.__setattr__(self, name, parse_number(f"fine-grained setting {name}", getattr(self, name),
                                                        minimum=0, allow_none=False))

        def count(value: Any, low: int) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= low

        checks = (("warmup", count(self.warmup, 0), "an integer >= 0"),
                  ("prune_every", count(self.prune_every, 1), "an integer >= 1"),
                  ("finetune_epochs", count(self.finetune_epochs, 0), "an integer >= 0"),
                  ("cost", self.cost in ("macs", "latency"), "'macs' or 'latency'"),
                  ("backend", self.backend in BACKENDS, " or ".join(map(repr, BACKENDS))),
                  ("calib_batches", count(self.calib_batches, 1), "an integer >= 1"),
                  ("max_macs", self.max_macs is None or self.max_macs > 0, "> 0 or null"))
        for name, ok, need in checks:
            if not ok:
                raise ValueError(f"fine-grained setting {name} must be {need}, got {getattr(self, name)!r}")

    def check_epochs(self, epochs: int) -> None:
        """Raise a one-line ``ValueError`` unless a run of ``epochs`` epochs leaves one to prune in."""
        if not self.finetune_epochs < epochs:
            raise ValueError(f"fine-grained setting finetune_epochs must be in [0, epochs={epochs}), "
                             f"got {self.finetune_epochs}; lower it or train longer (train.epochs)")

    def lam_at(self, epoch: int, epochs: int) -> float:
        """λ of ``epoch`` (0-based) of ``epochs``: linear from 0 to ``lam`` over ``warmup`` epochs, then constant;
        0 while fine-tuning."""
        if epoch >= epochs - self.finetune_epochs:
            return 0.0
        return self.lam * min(1.0, epoch / self.warmup) if self.warmup else self.lam

    def prune_epochs(self, epochs: int) -> list[int]:
        """The epochs (0-based) of ``epochs`` after which the network is pruned: every ``prune_every``-th and the
        last one before fine-tuning."""
        last = epochs - self.finetune_epochs - 1
        return [e for e in range(last + 1) if (e + 1) % self.prune_every == 0 or e == last]


@dataclass(frozen=True)
class PruneStep:
    """What one prune step (or the end of fine-tuning) left: epoch, task metric after BN recalibration, MACs,
    params, λ and counts."""

    epoch: int
    metric: float
    macs: float
    params: float
    lam: float
    arch: dict[str, int]


@dataclass
class FineGrainedResult:
    """The searched sample (on the space's grid), its trained weights, final metrics and every prune step."""

    space: str
    arch: dict[str, int]
    state_dict: dict[str, torch.Tensor]
    metrics: dict[str, float]
    steps: list[PruneStep] = field(default_factory=list)
    supernet_macs: float = 0.0


def prunable_root(model: nn.Module) -> nn.Module:
    """The (sub)module of ``model`` that has ``prunable_units()`` and ``arch()`` (the protocol)."""
    for module in model.modules():
        if callable(getattr(module, "prunable_units", None)) and callable(getattr(module, "arch", None)):
            return module
    raise ValueError(f"{type(model).__name__} has no module with prunable_units() and arch(); the fine-grained "
                     "strategy needs a space whose units carry importance factors (e.g. hrnas)")


def _grid_below(grid: tuple[int, ...], count: int) -> int | None:
    """The largest grid value below ``count`` (None at the bottom of the grid)."""
    return max((g for g in grid if g < count), default=None)


def penalties(model: nn.Module, table: CostTable, grids: Mapping[str, tuple[int, ...]]
              ) -> dict[str, tuple[float, float]]:
    """``label -> (Δ, normalised penalty)`` of every unit of ``model``: Δ is what one channel / token of the unit
    costs by ``table``'s first metric (one grid step down from its current count, per channel; never negative)
    and the penalty is Δ over the channel-weighted mean Δ (REFERENCE §1.3, ``prune.py:155-185``)."""
    root = prunable_root(model)
    arch, units = root.arch(), root.prunable_units()
    delta = {}
    for unit in units:
        count = arch[unit.label]
        lower = _grid_below(grids[unit.label], count)
        step = 0.0 if lower is None else -table.marginal(arch, unit.label, lower)[0] / (count - lower)
        delta[unit.label] = max(step, 0.0)
    widths = {u.label: u.alpha.numel() for u in units}
    mean = sum(widths[k] * delta[k] for k in delta) / max(sum(widths.values()), 1)
    return {k: (d, d / mean if mean > 0 else 0.0) for k, d in delta.items()}


@torch.no_grad()
def shrink(model: nn.Module, counts: Mapping[str, int], state: OptimizerState | None = None) -> None:
    """Keep, per unit label in ``counts``, that many channels / tokens with the largest |α| (ties: the lower
    index); the unit's block slices itself (``shrink_unit``; a unit kept at 0 is removed). ``state`` (an
    optimizer's ``state``) has the sliced parameters' entries moved to their replacements."""
    for block in [m for m in model.modules() if callable(getattr(m, "shrink_unit", None))]:
        for unit in block.prunable_units():
            if unit.label not in counts or counts[unit.label] >= unit.alpha.numel():
                continue
            keep = unit.alpha.detach().abs().argsort(descending=True, stable=True)[:counts[unit.label]].sort().values
            block.shrink_unit(unit.label, keep, state)


@torch.no_grad()
def _soft_threshold(units: Iterable[PrunableUnit], deltas: Mapping[str, tuple[float, float]], step: float
                    ) -> None:
    """The proximal step of ``step · Σ penalty_i ‖α_i‖₁``: shrink each |α| by ``step · penalty_i``, stopping at 0.

    The same objective as adding the L1 term to the loss (REFERENCE §1.3), but plain sub-gradient steps leave
    α oscillating around 0 and never below a small threshold within a short run; the proximal step (ISTA) gives
    exact zeros, so a few epochs prune with the reference threshold too."""
    for unit in units:
        alpha = unit.alpha
        alpha.copy_(alpha.sign() * (alpha.abs() - step * deltas[unit.label][1]).clamp_min(0))


def _ceil_to_grid(count: int, grid: tuple[int, ...]) -> int:
    return min((g for g in grid if g >= count), default=max(grid))


def _plan(model: nn.Module, grids: Mapping[str, tuple[int, ...]], threshold: float, macs_table: CostTable,
          target: float | None) -> dict[str, int]:
    """New counts. Without ``target``: the survivors of the threshold rounded up to the grid. With one: from the
    current counts, the grid steps down whose channels have the smallest mean |α| (a rising threshold) until the
    network's MACs by ``macs_table`` reach the target (units the penalty drove to 0 go first)."""
    root = prunable_root(model)
    ranked = {u.label: u.alpha.detach().abs().sort(descending=True).values for u in root.prunable_units()}
    if target is None:
        return {label: _ceil_to_grid(int((a > threshold).sum()), grids[label]) for label, a in ranked.items()}
    counts = root.arch()
    macs = macs_table.evaluate(counts)[0]
    while macs > target:
        best, best_score = None, math.inf
        for label, a in ranked.items():
            down = _grid_below(grids[label], counts[label])
            if down is None:
                continue
            score = float(a[down:counts[label]].mean())
            if score < best_score:
                best, best_score = (label, down), score
        if best is None:
            break
        macs += macs_table.marginal(counts, *best)[0]
        counts[best[0]] = best[1]
    return counts


def _task_hooks(task: Any, data: Any) -> tuple[Callable[..., torch.Tensor], Callable[[nn.Module], dict[str, float]]]:
    """(loss(outputs, labels), evaluate(model)) of the supported tasks."""
    if task.name == "segmentation":
        from hrnas_automl.tasks.segmentation import evaluate_segmentation, segmentation_loss

        return (lambda out, y: segmentation_loss(out, y, data.ignore_index),
                lambda net: evaluate_segmentation(net, data.val, data.num_classes, ignore_index=data.ignore_index))
    if task.name == "classification":
        from hrnas_automl.tasks.classification import evaluate_classifier

        return nn.functional.cross_entropy, lambda net: evaluate_classifier(net, data.val)
    raise ValueError(f"the fine-grained strategy trains segmentation or classification, not task {task.name!r}")


@dataclass
class _Pruning:
    """The search's hooks into the trainer: λ and the penalties of each epoch, the proximal step after each SGD step,
    and after each prune epoch the shrink, BN recalibration and validation (also after fine-tuning)."""

    model: nn.Module
    settings: FineGrainedSettings
    train: TrainSettings
    epochs: int
    grids: Mapping[str, tuple[int, ...]]
    penalty_table: CostTable
    macs_table: CostTable
    calib: DataLoader
    evaluate: Callable[[nn.Module], dict[str, float]]
    metric: str
    on_step: StepCallback | None
    steps: list[PruneStep] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)  # of the last validation

    def __post_init__(self) -> None:
        self.root = prunable_root(self.model)
        self.prune_epochs = self.settings.prune_epochs(self.epochs)
        self.supernet_macs = self.macs_table.evaluate(self.root.arch())[0]

    def start_epoch(self, epoch: int) -> None:
        self.lam = self.settings.lam_at(epoch, self.epochs)
        self.deltas = penalties(self.model, self.penalty_table, self.grids)
        self.units = self.root.prunable_units()  # the same modules until the next shrink

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.lam > 0:
            _soft_threshold(self.units, self.deltas, self.lam * optimizer.param_groups[0]["lr"])

    def end_epoch(self, epoch: int, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer | None:
        """Prune + shrink on a prune epoch (an optimizer over the shrunk network, keeping momentum, is returned),
        then recalibrate BN and validate on a prune epoch or the last one."""
        replaced = None
        if epoch in self.prune_epochs:
            target = None
            if self.settings.max_macs is not None:
                done = (self.prune_epochs.index(epoch) + 1) / len(self.prune_epochs)
                target = self.supernet_macs - (self.supernet_macs - self.settings.max_macs) * done
            # decided on rank 0 and broadcast, so every rank of a torchrun launch shrinks the same way
            plan = _plan(self.model, self.grids, self.settings.threshold, self.macs_table, target)
            shrink(self.model, distributed.broadcast_object(plan), optimizer.state)
            replaced = training.sgd(self.model, self.train, state=optimizer.state)
        elif epoch < self.epochs - 1:
            return None  # neither a prune step nor the end of fine-tuning: no validation
        training.recalibrate_bn(self.model, (x for _, (x, _y) in zip(range(self.settings.calib_batches), self.calib)))
        self.metrics = distributed.broadcast_object(self.evaluate(self.model) if distributed.is_main() else None)
        arch = self.root.arch()
        macs, params = self.macs_table.evaluate(arch)
        record = PruneStep(epoch, float(self.metrics[self.metric]), macs, params, self.lam, dict(arch))
        self.steps.append(record)
        if self.on_step is not None and distributed.is_main():
            self.on_step(record)
        return replaced

    def state(self, trainer: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint after an epoch: the current widths (to rebuild the shrunk network's shapes), the steps and
        metrics so far, and the trainer's state (weights, optimizer, schedule, RNGs)."""
        return {"arch": self.root.arch(), "steps": [dataclasses.asdict(s) for s in self.steps],
                "metrics": dict(self.metrics), "trainer": trainer}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Shrink the (widest) network to a checkpoint's widths, so its weights load, and take its steps and metrics;
        the trainer restores the rest."""
        shrink(self.model, state["arch"])
        self.steps = [PruneStep(**s) for s in state["steps"]]
        self.metrics = dict(state["metrics"])


def _read_checkpoint(path: Path, fingerprint: str) -> dict[str, Any]:
    """The fine-grained checkpoint at ``path`` (``weights_only=True``) if it was written by the search of
    ``fingerprint``; a one-line ``ValueError`` for another search's or anything else."""
    state = load_torch_checkpoint(path, _CHECKPOINT_KIND, "fine-grained",
                                  "delete it to start the search afresh or choose another output folder")
    if state["fingerprint"] != fingerprint:
        raise ValueError(f"checkpoint {path} was written by a different prune config (space, data, train or prune "
                         "settings); delete it or choose another output folder")
    return state


def fine_grained_search(space: str | Space, task: str, data_kind: str, data_options: Mapping[str, Any] | None = None,
                        settings: FineGrainedSettings | None = None, *, train: TrainSettings | None = None,
                        threads: int | None = 1, space_args: Mapping[str, Any] | None = None,
                        on_step: StepCallback | None = None, checkpoint: str | Path | None = None
                        ) -> FineGrainedResult:
    """Search ``space`` on ``task`` with the generated or real data ``data_kind`` (seeded, deterministic).

    Starts from the widest sample (every label at its largest value) and trains it with the package's trainer
    (``train``, default :data:`DEFAULT_TRAIN`; on the CPU with ``threads`` torch threads) under the penalty,
    prunes, recalibrates BN and validates after each of ``settings.prune_epochs()`` and after fine-tuning,
    calling ``on_step`` each time.

    With ``checkpoint`` (a file), the search's state is written there atomically after every epoch (so after every
    prune step) and a checkpoint of the same search found there is resumed: the result is bit-identical to an
    uninterrupted run's (``on_step`` is called for the steps after the checkpoint only).

    Raises:
        InfeasibleConstraintError: ``settings.max_macs`` is below the smallest MACs the search can reach (every
            prunable unit at its smallest width), before any training.
        ValueError: ``checkpoint`` holds another search's state, or is not a checkpoint.
    """
    from hrnas_automl.arch import resolve_space
    from hrnas_automl.cost import cost_table
    from hrnas_automl.cost.latency import latency_table

    settings = settings or FineGrainedSettings()
    train = train or DEFAULT_TRAIN
    if train.batch_size < 2:
        raise ValueError(f"the fine-grained search trains in batches of >= 2 images (BatchNorm), got "
                         f"train.batch_size={train.batch_size}")
    runtime = runtime_of(train)
    task_obj = get_task(task)
    with distributed.main_first():  # rank 0 writes generated data to disk, then the others read it
        data = task_obj.build_data(data_kind, dict(data_options or {}))
    space = resolve_space(space, **dict(space_args or {}), **task_obj.model_args(data), head=task_obj.head)
    grids = {k: tuple(sorted(v)) for k, v in space.choices.items()}
    loss_fn, evaluate = _task_hooks(task_obj, data)
    shape, n = tuple(data.input_shape), len(data.train)
    # Unlike a task's loader (training.train_loader): any last partial batch is dropped, no seed drawn per pass.
    loader = make_loader(data.train, train, shuffle=True, drop_last=n > train.batch_size, shard=True)
    epochs, _ = training.run_length(train, len(loader))
    settings.check_epochs(epochs)
    path = Path(checkpoint) if checkpoint is not None else None
    # What a checkpoint must match to be resumed: the whole search but the progress bars, the thread count and the
    # device it ran on.
    fingerprint = json.dumps({"space": space.name, "space_args": dict(space_args or {}), "task": task,
                              "data": [data_kind, dict(data_options or {})], "settings": dataclasses.asdict(settings),
                              "train": {k: v for k, v in {**dataclasses.asdict(train), "progress": None,
                                                          "device": None}.items() if k not in LOADING_KEYS}},
                             sort_keys=True, default=str)
    resumed = _read_checkpoint(path, fingerprint) if path is not None and path.exists() else None
    with training.torch_threads(threads), torch.random.fork_rng():
        torch.manual_seed(train.seed)  # the widest network's weights, then the dropout of its training
        model = space.freeze({k: max(v) for k, v in grids.items()})
        macs_table = cost_table(space, shape)  # exact ptflops MACs and params of every sample
        if settings.max_macs is not None:
            smallest, widest = (macs_table.evaluate({k: f(v) for k, v in grids.items()})[0] for f in (min, max))
            check_limit(space.name, "macs", settings.max_macs, smallest, widest,
                        f"at {'x'.join(map(str, shape))}, every prunable unit at its smallest width")
        # measured on rank 0 (on the training device under eager torch) and broadcast: every rank's penalties agree
        penalty_table = (macs_table if settings.cost == "macs" else distributed.broadcast_object(
            latency_table(space, shape, threads=threads, backend=settings.backend,
                          device=str(runtime.device) if settings.backend == "torch" else "cpu")
            if distributed.is_main() else None))
        calib = make_loader(data.train, train, shard=True)
        run = _Pruning(model, settings, train, epochs, grids, penalty_table, macs_table, calib, evaluate,
                       task_obj.metric, on_step)
        if resumed is not None:
            run.restore(resumed)

        def save(_epoch: int, trainer: dict[str, Any]) -> None:
            save_torch_atomic({"kind": _CHECKPOINT_KIND, "fingerprint": fingerprint, **run.state(trainer)}, path)

        training.fit(model, loader, train, loss=loss_fn, start_epoch=run.start_epoch, after_step=run.after_step,
                     end_epoch=run.end_epoch, schedule=training.cosine_closed_form, seed_torch=False,
                     checkpoint=save if path is not None else None,
                     resume=resumed["trainer"] if resumed is not None else None)
    final = run.steps[-1]
    result_metrics = {"default": final.metric, **{k: float(v) for k, v in run.metrics.items()}, "macs": final.macs,
                      "params": final.params}
    return FineGrainedResult(space.name, {k: final.arch[k] for k in grids}, model.state_dict(), result_metrics,
                             run.steps, run.supernet_macs)
