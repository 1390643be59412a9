"""What ``hrnas-automl tune`` tunes: an objective that searches under {lam, threshold, warmup} and
returns the task metric and the MACs of what it found.

A tuning objective is any callable ``objective(params, report) -> TuneResult | (metric, macs)``:

* ``params`` is a :class:`TuneParams` dict: ``lam`` (the sparsity weight λ), ``threshold`` (prune a unit
  whose |importance| is at or below it) and ``warmup`` (epochs over which λ ramps up from 0).
* ``report(step, metric, macs)`` is called after each pruning step / epoch. It may raise (Optuna's
  ``TrialPruned`` when a pruner stops a hopeless trial): let it propagate, never catch it.
* the return value is the final metric (higher is better) and MACs.

Objectives are registered by name in :data:`hrnas_automl.registry.OBJECTIVES` (a factory each; a plugin adds its own
through the entry-point group ``hrnas_automl.objectives``); a tune config names one (``objective: fine-grained``)
and passes ``objective_args`` to its factory, which returns the callable.
This module imports neither Optuna nor torch, so an objective module and an nnictl trial stay cheap.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict

__all__ = ["TuneParams", "TuneResult", "Report", "TuneObjective", "NonFiniteResultError", "objective_names",
           "make_objective", "parse_params", "as_result"]


class TuneParams(TypedDict):
    """The hyper-parameters one tuning trial runs with."""

    lam: float  # λ, weight of the resource-aware L1 penalty on the importance factors
    threshold: float  # units with |importance| <= threshold are pruned
    warmup: int  # epochs over which λ ramps linearly from 0 to lam


class Report(Protocol):
    """Called by an objective after each step; may raise to stop the trial (do not catch that)."""

    def __call__(self, step: int, metric: float, macs: float) -> None: ...


class NonFiniteResultError(ValueError):
    """An objective returned NaN or infinity: the trial failed, it has no score."""


@dataclass(frozen=True)
class TuneResult:
    """The outcome of one tuning trial: the task metric (higher is better) and the MACs of the result."""

    metric: float
    macs: float


class TuneObjective(Protocol):
    """Runs one search under ``params`` and returns its final metric and MACs."""

    def __call__(self, params: TuneParams, report: Report) -> TuneResult | tuple[float, float]: ...


def objective_names() -> list[str]:
    """The registered objective names."""
    from hrnas_automl.registry import OBJECTIVES

    return OBJECTIVES.names()


def make_objective(name: str, args: Mapping[str, Any] | None = None) -> TuneObjective:
    """Build the objective registered as ``name`` with ``args`` (a tune config's ``objective_args``).

    Raises:
        KeyError: unknown name (lists the known ones).
        ValueError: an argument the factory does not take or rejects.
    """
    from hrnas_automl.registry import OBJECTIVES

    factory: Callable[..., TuneObjective] = OBJECTIVES.get(name)
    try:
        return factory(**dict(args or {}))
    except TypeError as exc:
        raise ValueError(f"objective_args of {name!r}: {exc}") from None


def parse_params(value: Any) -> TuneParams:
    """Check a parameter mapping (from nnictl or the command line) and convert it to :class:`TuneParams`."""
    keys = ("lam", "threshold", "warmup")
    if not isinstance(value, Mapping) or set(value) != set(keys):
        raise ValueError(f"tuning parameters must be a mapping with exactly the keys {', '.join(keys)}, got {value!r}; "
                         "under nnictl use the search space of `hrnas-automl tune-space`")
    try:
        lam, threshold, warmup = float(value["lam"]), float(value["threshold"]), value["warmup"]
    except (TypeError, ValueError):
        raise ValueError(f"lam and threshold must be numbers, got {value!r}") from None
    if not (lam >= 0 and threshold >= 0) or isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"need lam >= 0, threshold >= 0 and an integer warmup >= 0, got {value!r}")
    return TuneParams(lam=lam, threshold=threshold, warmup=warmup)


def as_result(value: Any) -> TuneResult:
    """Normalise what an objective returned to a :class:`TuneResult` with finite numbers."""
    if isinstance(value, TuneResult):
        metric, macs = value.metric, value.macs
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        metric, macs = value
    else:
        raise TypeError(f"a tuning objective must return TuneResult or (metric, macs), got {value!r}")
    metric, macs = float(metric), float(macs)
    if not (math.isfinite(metric) and math.isfinite(macs)):
        raise NonFiniteResultError(f"a tuning objective returned a non-finite result: metric={metric}, macs={macs}")
    return TuneResult(metric, macs)
