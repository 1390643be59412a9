"""Optuna trials under ``torchrun``: every rank trains, rank 0 alone talks to the study.

Each rank of a torchrun job runs :func:`optimize_distributed` with the same objective. For every trial, rank 0 asks
the study (``study.ask(search_space)``: all parameters drawn up front) and broadcasts them; every rank runs
``objective(trial)`` on a :class:`DistributedTrial` holding those parameters (and trains its share of a DDP run);
:meth:`DistributedTrial.report` records intermediate values on rank 0 only; :meth:`DistributedTrial.should_prune`
is decided by rank 0's pruner and broadcast, so a pruned trial stops on every rank at the same step; rank 0 tells
the study the outcome. This is the pattern optuna-integration's ``TorchDistributedTrial`` does not give: there each
rank's sampler may draw different parameters unless every ``suggest_*`` call is broadcast in the same order.

Every call that talks to the other ranks (:func:`optimize_distributed`, :meth:`DistributedTrial.should_prune`) is
a collective: all ranks must make it, in the same order. Without an initialised process group (a plain
``python`` run) everything runs on this one process, as rank 0.

Example (``examples/detnas/optuna_ddp.py``)::

    torchrun --nproc-per-node 2 examples/detnas/optuna_ddp.py --storage sqlite:///ddp.db --trials 8
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from hrnas_automl.runtime.distributed import all_gather_object, broadcast_object, is_main

__all__ = ["TrialPruned", "DistributedTrial", "optimize_distributed"]

TrialPruned = optuna.TrialPruned  # what an objective raises when should_prune() says so (no optuna import needed)


class DistributedTrial:
    """One trial as every rank sees it: rank 0's parameters; intermediate values go to rank 0's Optuna trial, and
    the pruning decision comes from it (``trial`` is None on the other ranks).

    An error of rank 0's Optuna trial (e.g. ``report`` on a multi-objective study) is kept in :attr:`error` and
    raised on every rank at the next :meth:`should_prune`, so no rank leaves a collective call alone."""

    def __init__(self, number: int, params: Mapping[str, Any], trial: optuna.Trial | None) -> None:
        self.number = number
        self.params = dict(params)
        self.error: Exception | None = None
        self._trial = trial

    def report(self, value: float, step: int) -> None:
        """Record ``value`` at ``step`` for the pruner (rank 0; a no-op elsewhere, no communication)."""
        if self._trial is not None and self.error is None:
            try:
                self._trial.report(value, step)
            except Exception as exc:  # raised on every rank by should_prune
                self.error = exc

    def should_prune(self) -> bool:
        """Rank 0's pruner's decision on the values reported so far, on every rank (a collective call)."""
        decision: Any = None
        if self._trial is not None and self.error is None:
            try:
                decision = self._trial.should_prune()
            except Exception as exc:
                self.error = exc
        decision = broadcast_object(self.error or decision)
        if isinstance(decision, Exception):
            raise decision
        return bool(decision)


Value = float | Sequence[float]  # one objective, or one value per direction of a multi-objective study


def optimize_distributed(study: optuna.Study | None, objective: Callable[[DistributedTrial], Value],
                         search_space: Mapping[str, BaseDistribution], n_trials: int) -> list[tuple[int, str, Any]]:
    """Run ``n_trials`` trials of ``objective`` on every rank of the process group; ``study`` is used on rank 0 only
    (the other ranks may pass None: they never open the storage). Returns each trial's ``(number, state, value)``
    (``complete``: the objective's value, ``pruned``: None), the same on every rank.

    An objective raising :class:`optuna.TrialPruned` (after :meth:`DistributedTrial.should_prune`) ends the trial
    PRUNED. When the objective raises anything else on any rank, the trial is told FAIL and every rank raises a
    ``RuntimeError`` naming the ranks that failed (the ranks compare outcomes after each trial, so none waits for
    a rank that is gone). Rank 0's value is told: an objective should return the same on every rank (an
    all-reduced metric, or one evaluated on the full validation split with the synchronised weights).
    """
    leader = is_main()
    if leader and study is None:
        raise ValueError("rank 0 needs the study: open it there (the other ranks may pass None)")
    outcomes: list[tuple[int, str, Any]] = []
    for _ in range(n_trials):
        trial = study.ask(dict(search_space)) if leader else None  # type: ignore[union-attr]
        number, params = broadcast_object((trial.number, trial.params) if trial is not None else None)
        try:
            shared = DistributedTrial(number, params, trial)
            value = objective(shared)
            if shared.error is not None:  # rank 0's trial failed after the last should_prune
                raise shared.error
            outcome: tuple[str, Any] = ("complete", [float(v) for v in value] if isinstance(value, Sequence)
                                        else float(value))
        except optuna.TrialPruned:
            outcome = ("pruned", None)
        except Exception as exc:  # reported to the other ranks, then raised on every rank below
            outcome = ("fail", f"{type(exc).__name__}: {exc}")
        everyone = all_gather_object(outcome)
        failed = {r: o[1] for r, o in enumerate(everyone) if o[0] == "fail"}
        if not failed and len({o[0] for o in everyone}) > 1:  # pruned on some ranks only: a broken collective
            failed = {r: f"ended {o[0]}, rank 0 {everyone[0][0]}" for r, o in enumerate(everyone) if r}
        if failed:
            if trial is not None:
                study.tell(trial, state=TrialState.FAIL)  # type: ignore[union-attr]
            raise RuntimeError(f"trial {number} failed on rank(s) {sorted(failed)}: "
                               + "; ".join(f"rank {r}: {why}" for r, why in failed.items()))
        state, value = outcome
        if trial is not None:
            if state == "pruned":
                study.tell(trial, state=TrialState.PRUNED)  # type: ignore[union-attr]
            else:
                study.tell(trial, value)  # type: ignore[union-attr]
        outcomes.append((number, state, value))
    return outcomes
