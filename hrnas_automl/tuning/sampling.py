"""Per-trial seeding of an Optuna sampler, so that parallel workers never repeat each other and a resumed
study continues exactly as an uninterrupted one.

Each trial gets a fresh sampler seeded from ``(seed, k)``, where ``k`` (the trial's *seed key*, stored in its
system attribute :data:`SEED_KEY_ATTR`) is the number of trials before it when it started, not counting those
that failed without a verdict on their parameters (a dead worker, a stale heartbeat, an interrupt). A single
worker's keys are 0, 1, 2, ... whatever it went through: a trial left RUNNING by a killed worker becomes FAIL
and its replacement gets its key again, so it draws what it would have drawn; a trial that failed on its own
(diverged, non-finite: :data:`VERDICT_ATTR`) keeps its key, so the next one draws anew. Workers running in
parallel get distinct keys, since each trial counts the other workers' running ones; should two trials still
end up with one key (a trial before both was failed in between), both take the fallback ``(seed, 1, number)``,
unique by the trial number. The sampler's result depends on nothing but the seed key and the study's history
(Optuna's samplers are deterministic given both), never on how long a worker has been running.

A relative sampler (NSGA-II's crossover and mutation) may return a copy of a parameter set the study already
holds; such a draw is redrawn with the next sub-seed (up to :data:`REDRAWS` times), as pymoo's
``eliminate_duplicates`` does.
TPE gets ``constant_liar=True`` unless the config says otherwise: running trials count as bad results, so
parallel workers spread out.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from hrnas_automl.tuning.storage import mark_worker

__all__ = ["SEED_KEY_ATTR", "VERDICT_ATTR", "REDRAWS", "trial_seed", "PerTrialSeededSampler"]

SEED_KEY_ATTR = "hrnas_automl:seed_key"
VERDICT_ATTR = "hrnas_automl:failed_on_its_own"  # system attribute of a FAIL that says something of its parameters
REDRAWS = 10
_FALLBACK = "fallback"


def trial_seed(seed: int, key: int | str, number: int = 0, redraw: int = 0) -> int:
    """The 32-bit seed of one trial's sampler: from (seed, seed key, redraw), or (seed, 1, trial number, redraw)
    for the fallback key."""
    words = [seed, 1, number, redraw] if key == _FALLBACK else [seed, 0, int(key), redraw]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def _param_key(params: dict[str, Any]) -> tuple:
    return tuple(sorted(params.items()))


def _holds_its_key(trial: FrozenTrial) -> bool:
    """Whether a trial keeps its seed key: anything but a FAIL without a verdict (whose replacement takes it)."""
    return trial.state != TrialState.FAIL or bool(trial.system_attrs.get(VERDICT_ATTR))


class PerTrialSeededSampler(BaseSampler):
    """Delegates each trial to ``factory(seed)``, a new sampler seeded by :func:`trial_seed`; also records the
    trial's worker (:func:`~hrnas_automl.tuning.storage.mark_worker`) before anything is sampled.

    Args:
        factory: builds the real sampler from a seed (e.g. ``lambda s: TPESampler(seed=s)``).
        seed: the study's seed (the tune config's ``seed``).
    """

    def __init__(self, factory: Callable[[int], BaseSampler], seed: int) -> None:
        self._factory, self._seed = factory, seed
        self._samplers: dict[int, BaseSampler] = {}  # trial id -> its sampler (one thread asks at a time)
        self._keys: dict[int, int | str] = {}  # trial id -> its seed key

    def _seed_key(self, study: optuna.Study, trial: FrozenTrial) -> int | str:
        storage = study._storage
        trials = storage.get_all_trials(study._study_id, deepcopy=False)
        key = sum(1 for t in trials if t.number < trial.number and _holds_its_key(t))
        storage.set_trial_system_attr(trial._trial_id, SEED_KEY_ATTR, key)
        trials = storage.get_all_trials(study._study_id, deepcopy=False)  # written, then read: see the module doc
        if any(t.number != trial.number and _holds_its_key(t) and t.system_attrs.get(SEED_KEY_ATTR) == key
               for t in trials):
            key = _FALLBACK
            storage.set_trial_system_attr(trial._trial_id, SEED_KEY_ATTR, key)
        return key

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        mark_worker(study._storage, trial._trial_id)
        key = self._keys[trial._trial_id] = self._seed_key(study, trial)
        self._samplers[trial._trial_id] = self._factory(trial_seed(self._seed, key, trial.number))
        self._samplers[trial._trial_id].before_trial(study, trial)

    def _sampler(self, trial: FrozenTrial) -> BaseSampler:
        return self._samplers[trial._trial_id]

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._sampler(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        params = self._complete(study, trial, search_space)
        if not params:
            return params  # nothing relative (a first generation, TPE): drawn independently at random
        taken = {_param_key(t.params) for t in study._storage.get_all_trials(study._study_id, deepcopy=False)
                 if t.number != trial.number and _holds_its_key(t)}
        key = self._keys[trial._trial_id]
        for redraw in range(1, REDRAWS + 1):
            if _param_key(params) not in taken:
                break
            self._samplers[trial._trial_id] = self._factory(trial_seed(self._seed, key, trial.number, redraw))
            params = self._complete(study, trial, search_space)
        return params

    def _complete(self, study: optuna.Study, trial: FrozenTrial,
                  search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        """The relative draw, with the parameters it leaves to independent sampling (NSGA-II's mutations) drawn
        now, so that the whole set can be compared with the study's."""
        sampler = self._sampler(trial)
        params = sampler.sample_relative(study, trial, search_space)
        if params:
            params.update({name: sampler.sample_independent(study, trial, name, dist)
                           for name, dist in search_space.items() if name not in params})
        return params

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._sampler(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        sampler = self._samplers.pop(trial._trial_id, None)
        self._keys.pop(trial._trial_id, None)
        if sampler is not None:
            sampler.after_trial(study, trial, state, values)
