"""Resource-aware fine-grained search (HR-NAS, Ding et al. CVPR 2021 §3.3; REFERENCE §1.3).

The widest network of a space trains with a FLOPs-weighted L1 penalty on its importance factors α (the BN scale
after each depthwise conv, one per hidden channel of a kernel path; the token-norm scale, one per Transformer
token): ``loss = task loss + λ(epoch) Σ_i penalty_i ‖α_i‖₁`` (the L1 term as a proximal step after each SGD step,
see :func:`_soft_threshold`), ``penalty_i = Δ_i / (Σ_j h_j Δ_j / Σ_j h_j)`` where Δ_i is what one channel / token
of unit i costs and h_j its width (REFERENCE §1.3, ``prune.py:155-185``). Δ_i comes from the cost model
(:mod:`hrnas_automl.cost`): the exact ptflops MACs of one grid step of the unit in the current network
(``cost="macs"``, the reference's FLOPs) or its latency measured on this machine (``cost="latency"``,
:func:`hrnas_automl.cost.latency.latency_table`). λ ramps linearly from 0 over ``warmup`` epochs (``prune.py:296-326``).
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

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from hrnas_automl.cost.tables import CostTable
from hrnas_automl.spaces.common import OptimizerState
from hrnas_automl.spaces.hrnas import PrunableUnit

__all__ = ["FineGrainedSettings", "FineGrainedResult", "PruneStep", "prunable_root", "penalties", "shrink",
           "recalibrate_bn", "fine_grained_search", "FineGrainedObjective", "tuning_objective"]

StepCallback = Callable[["PruneStep"], None]


@dataclass(frozen=True)
class FineGrainedSettings:
    """Search hyper-parameters (REFERENCE §1.3 table: λ 1.4e-4 seg, threshold 1e-3, warm-up 25 of 430 epochs).

    ``lam`` here multiplies the normalised penalty summed over all units *per image batch*, as ρ does in the
    official loss; small networks on small data need far larger values than the shipped configs.
    """

    lam: float = 1e-3
    threshold: float = 1e-3  # model_shrink_threshold
    warmup: int = 2  # epochs over which λ ramps from 0 (epoch_warmup)
    epochs: int = 6
    prune_every: int = 1  # eval_interval
    finetune_epochs: int = 0  # last epochs: train the pruned network without penalty or pruning
    max_macs: float | None = None  # budget-driven pruning (None: threshold only)
    cost: str = "macs"  # what Δ_i weighs: "macs" (ptflops, exact) or "latency" (measured on this machine)
    batch_size: int = 16
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 4e-5
    calib_batches: int = 10  # bn_calibration_steps
    seed: int = 0
    threads: int | None = 1

    def __post_init__(self) -> None:
        checks = (("lam", self.lam >= 0, ">= 0"), ("threshold", self.threshold >= 0, ">= 0"),
                  ("warmup", self.warmup >= 0, ">= 0"), ("epochs", self.epochs >= 1, ">= 1"),
                  ("prune_every", self.prune_every >= 1, ">= 1"), ("batch_size", self.batch_size >= 2, ">= 2"),
                  ("finetune_epochs", 0 <= self.finetune_epochs < self.epochs, f"in [0, epochs={self.epochs})"),
                  ("cost", self.cost in ("macs", "latency"), "'macs' or 'latency'"),
                  ("lr", self.lr > 0, "> 0"), ("calib_batches", self.calib_batches >= 1, ">= 1"),
                  ("max_macs", self.max_macs is None or self.max_macs > 0, "> 0 or null"))
        for name, ok, need in checks:
            if not ok:
                raise ValueError(f"fine-grained setting {name} must be {need}, got {getattr(self, name)!r}")

    def lam_at(self, epoch: int) -> float:
        """λ of ``epoch`` (0-based): linear from 0 to ``lam`` over ``warmup`` epochs, then constant; 0 while
        fine-tuning."""
        if epoch >= self.epochs - self.finetune_epochs:
            return 0.0
        return self.lam * min(1.0, epoch / self.warmup) if self.warmup else self.lam

    def prune_epochs(self) -> list[int]:
        """The epochs (0-based) after which the network is pruned: every ``prune_every``-th and the last one
        before fine-tuning."""
        last = self.epochs - self.finetune_epochs - 1
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
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Re-estimate every BatchNorm's running statistics as a cumulative average over ``batches`` (train mode,
    no gradients), as the official search does before each validation (REFERENCE §1.3)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    try:
        for images in batches:
            model(images)
    finally:
        for bn, momentum in zip(norms, momenta):
            bn.momentum = momentum
        model.eval()


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


def _sgd(model: nn.Module, settings: FineGrainedSettings, state: OptimizerState | None = None) -> torch.optim.SGD:
    """SGD over ``model``'s parameters, taking over their entries of ``state`` (a shrunk network keeps its
    momentum; the entries of removed parameters are dropped)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                                weight_decay=settings.weight_decay)
    for param in model.parameters():
        if state is not None and param in state:
            optimizer.state[param] = state[param]
    return optimizer


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


def fine_grained_search(space: str, task: str, data_kind: str, data_options: Mapping[str, Any] | None = None,
                        settings: FineGrainedSettings | None = None, *, space_args: Mapping[str, Any] | None = None,
                        on_step: StepCallback | None = None) -> FineGrainedResult:
    """Search ``space`` on ``task`` with the generated or real data ``data_kind`` (seeded, deterministic).

    Starts from the widest sample (every label at its largest value), trains with the penalty, prunes,
    recalibrates BN and validates after each of ``settings.prune_epochs()`` and after fine-tuning, calling
    ``on_step`` each time.
    """
    from hrnas_automl.arch import choices_of, freeze
    from hrnas_automl.cost import cost_table
    from hrnas_automl.cost.latency import latency_table, torch_threads
    from hrnas_automl.tasks import get_task

    settings = settings or FineGrainedSettings()
    task_obj = get_task(task)
    data = task_obj.build_data(data_kind, dict(data_options or {}))
    args = {**dict(space_args or {}), **task_obj.model_args(data), "head": task_obj.head}
    grids = {k: tuple(sorted(v)) for k, v in choices_of(space, **args).items()}
    loss_fn, evaluate = _task_hooks(task_obj, data)
    shape = tuple(data.input_shape)
    with torch_threads(settings.threads), torch.random.fork_rng():
        torch.manual_seed(settings.seed)
        model = freeze(space, {k: max(v) for k, v in grids.items()}, **args)
        root = prunable_root(model)
        macs_table = cost_table(space, shape, **args)  # exact ptflops MACs and params of every sample
        penalty_table = macs_table if settings.cost == "macs" else latency_table(
            space, shape, threads=settings.threads, **args)
        supernet_macs = macs_table.evaluate(root.arch())[0]
        shuffle = torch.Generator().manual_seed(settings.seed)
        loader = DataLoader(data.train, batch_size=settings.batch_size, shuffle=True, generator=shuffle,
                            drop_last=len(data.train) > settings.batch_size)
        calib = DataLoader(data.train, batch_size=settings.batch_size, shuffle=False)
        prune_epochs = settings.prune_epochs()
        total_steps, step, steps = settings.epochs * len(loader), 0, []
        optimizer = _sgd(model, settings)
        for epoch in range(settings.epochs):
            lam = settings.lam_at(epoch)
            deltas = penalties(model, penalty_table, grids)
            units = root.prunable_units()  # the same modules until the next shrink
            model.train()
            for images, labels in loader:
                for group in optimizer.param_groups:  # cosine schedule over all steps
                    group["lr"] = settings.lr * 0.5 * (1 + math.cos(math.pi * step / total_steps))
                loss = loss_fn(model(images), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if lam > 0:
                    _soft_threshold(units, deltas, lam * optimizer.param_groups[0]["lr"])
                step += 1
            if epoch in prune_epochs:
                target = None
                if settings.max_macs is not None:
                    done = (prune_epochs.index(epoch) + 1) / len(prune_epochs)
                    target = supernet_macs - (supernet_macs - settings.max_macs) * done
                shrink(model, _plan(model, grids, settings.threshold, macs_table, target), optimizer.state)
                optimizer = _sgd(model, settings, optimizer.state)
            elif epoch < settings.epochs - 1:
                continue  # neither a prune step nor the end of fine-tuning: no validation
            recalibrate_bn(model, (x for _, (x, _y) in zip(range(settings.calib_batches), calib)))
            metrics = evaluate(model)
            arch = root.arch()
            macs, params = macs_table.evaluate(arch)
            record = PruneStep(epoch, float(metrics[task_obj.metric]), macs, params, lam, dict(arch))
            steps.append(record)
            if on_step is not None:
                on_step(record)
    final = steps[-1]
    result_metrics = {"default": final.metric, **{k: float(v) for k, v in metrics.items()}, "macs": final.macs,
                      "params": final.params}
    return FineGrainedResult(space, {k: final.arch[k] for k in grids}, model.state_dict(), result_metrics, steps,
                             supernet_macs)


@dataclass(frozen=True)
class FineGrainedObjective:
    """The ``fine-grained`` tuning objective: one :func:`fine_grained_search` per call of ``{lam, threshold,
    warmup}``; every field is an ``objective_args`` key (``settings`` takes :class:`FineGrainedSettings` fields
    other than those three)."""

    space: str = "hrnas"
    space_args: Mapping[str, Any] = field(default_factory=lambda: {"setting": "tiny", "transformer": False})
    task: str = "segmentation"
    data: Mapping[str, Any] = field(default_factory=lambda: {"kind": "shapes", "image_size": 64,
                                                              "train_size": 32, "val_size": 16})
    settings: Mapping[str, Any] = field(default_factory=lambda: {"epochs": 3})

    def __post_init__(self) -> None:
        allowed = {f.name for f in fields(FineGrainedSettings)} - {"lam", "threshold", "warmup"}
        unknown = set(self.settings) - allowed
        if unknown:
            raise ValueError(f"settings: unknown keys {', '.join(sorted(unknown))}; "
                             f"allowed: {', '.join(sorted(allowed))}")
        if "kind" not in self.data:
            raise ValueError("data needs a 'kind' (e.g. shapes)")

    def __call__(self, params: Mapping[str, Any], report: Callable[[int, float, float], None]) -> Any:
        from hrnas_automl.tuning.objectives import TuneResult

        settings = FineGrainedSettings(lam=float(params["lam"]), threshold=float(params["threshold"]),
                                       warmup=int(params["warmup"]), **dict(self.settings))
        options = {k: v for k, v in self.data.items() if k != "kind"}
        result = fine_grained_search(self.space, self.task, self.data["kind"], options, settings,
                                     space_args=self.space_args,
                                     on_step=lambda s: report(s.epoch, s.metric, s.macs))
        return TuneResult(result.metrics["default"], result.metrics["macs"])


def tuning_objective(**objective_args: Any) -> FineGrainedObjective:
    """The registered factory of the ``fine-grained`` objective (``objective_args`` = its fields)."""
    return FineGrainedObjective(**objective_args)

