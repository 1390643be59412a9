"""The Optuna side of early-exit threshold fitting (:func:`hrnas_automl.tasks.early_exit.fit_optuna`): a seeded,
constrained, multivariate TPE search over points of the unit cube, warm-started from a given point."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import optuna

__all__ = ["quiet_optuna", "constrained_tpe"]


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna logs every trial at INFO; inside this block only warnings (a trial's log keeps only those)."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def constrained_tpe(objective: Callable[[list[float]], tuple[float, float]], names: Sequence[str], *,
                    n_trials: int, seed: int, start: Sequence[float]) -> list[int]:
    """Maximise ``objective(x) -> (value, violation)`` over ``x`` in ``[0, 1]^len(names)`` with a seeded
    multivariate TPE (the coordinates are coupled through the constraint ``violation <= 0``, recorded with
    ``Trial.set_constraint`` so TPE ranks infeasible trials below feasible ones). The first trial is ``start``.

    Returns:
        The numbers of the feasible trials, in the order ``objective`` was called (call ``k`` is trial ``k``).
    """
    def run(trial: optuna.Trial) -> float:
        value, violation = objective([trial.suggest_float(name, 0.0, 1.0) for name in names])
        trial.set_constraint("violation", violation)
        return value

    with quiet_optuna():  # a trial's log keeps Optuna's warnings, not one INFO line per threshold trial
        study = optuna.create_study(direction="maximize",
                                    sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True))
        study.enqueue_trial(dict(zip(names, start)))
        study.optimize(run, n_trials=n_trials)
    return [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if all(v <= 0 for v in t.constraints.values())]
