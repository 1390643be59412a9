"""An NNI tuner backed by an Optuna study (ask/tell, shared/docs/NNI.md §4), so a tuning study runs
through nnictl and its web UI and is kept in an Optuna storage.

Example (nnictl YAML; examples/hrnas/optuna_lambda.yml)::

    searchSpaceFile: lambda_space.json      # hrnas-automl tune-space --config tune.yml -o lambda_space.json
    trialCommand: hrnas-automl tune-trial --config tune.yml
    tuner:
      className: hrnas_automl.nni.optuna_tuner.OptunaTuner
      classArgs: {study_name: lambda-nni, objectives: metric+macs, seed: 0, max_macs: 2.0e+5}

Each trial gets one value per search-space key (``lam``, ``threshold``, ``warmup`` for a tune space;
any flat space works, architecture spaces included) and must report the final result
``{"default": metric, "macs": MACs}``. Trials that end unsuccessfully (failed, killed, early-stopped by
an assessor) without one are told to Optuna as FAIL; a trial that succeeds without reporting one stays
RUNNING in the study. NNI sends intermediate results to assessors only, never to
tuners, so under nnictl hopeless trials are stopped by an NNI assessor (e.g. Medianstop), not by an
Optuna pruner.

``nnictl stop`` + ``nnictl resume`` continue the same study: the sampler is seeded before every ask from ``seed``
and the trial's number, so a suggestion depends on the seed and the stored trials only, not on the process that
asks; a trial asked before the stop and never ended is run again under its old number (by NNI, or by this tuner
when NNI never started it, see :mod:`hrnas_automl.nni.resume`); and no trial is asked while ``trialConcurrency``
trials are still running (NNI asks early after a resume), so with ``trialConcurrency: 1`` the suggestions after a
resume are those of an uninterrupted run.
"""
from __future__ import annotations

import logging
import math
import os
import threading
from collections import deque
from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import nni
import numpy as np
from nni.tuner import Tuner

from hrnas_automl.arch import resolve_space
from hrnas_automl.config import parse_number
from hrnas_automl.nni.compat import quiet_nni
from hrnas_automl.nni.resume import Orphans, params_key
from hrnas_automl.strategies import SpaceExhaustedError
from hrnas_automl.tuning.config import default_storage
from hrnas_automl.tuning.study import (
    CONSTRAINT_KEY,
    MACS_ATTR,
    FrozenTrial,
    METRIC_ATTR,
    Trial,
    log_warnings_only,
    make_sampler,
    open_named_study,
    running_trials,
    tell_failed,
    to_optuna_distributions,
)

__all__ = ["OptunaTuner"]

_log = logging.getLogger(__name__)
_MAX_ASKS = 100  # suggestions of known networks in a row before the tuner gives up


class OptunaTuner(Orphans[Trial], Tuner):
    """NNI ``Tuner`` whose suggestions come from an Optuna study (ask) and whose results go back (tell).

    Args:
        study_name: the Optuna study; default ``nni-<experiment id>`` (under nnictl). An existing study of that name is
            continued (its finished trials inform the sampler).
        storage: an SQLAlchemy URL; default ``sqlite:///<NNI log dir>/optuna_studies.db``.
        objectives: ``metric+macs`` (maximize metric, minimize MACs) or ``metric``.
        sampler: ``nsga2``, ``tpe`` or ``random``; default nsga2 for two objectives, tpe for one.
        sampler_args: passed to the sampler (e.g. ``population_size``).
        seed: the sampler's seed (same seed and history, same suggestions): before each ask the sampler is
            seeded from it and the number of the trial asked.
        max_macs: trials whose MACs exceed it are infeasible (Optuna constraint ``max_macs``).
        metric_key / macs_key: keys of the trial's final result dict.
        space / space_args: the registered space the search space is (its ``export-space`` output): suggestions are
            compared by its canonical form (:meth:`hrnas_automl.arch.Space.canonical`); without it, by their values.
            A suggestion of a network the study already has is not run: it is stored as FAIL with user attribute
            ``duplicate_of`` (the original's number) and the study asked again (at most 100 times in a row).
    """

    def __init__(self, *, study_name: str | None = None, storage: str | None = None, objectives: str = "metric+macs",
                 sampler: str | None = None, sampler_args: Mapping[str, Any] | None = None, seed: int = 0,
                 max_macs: float | str | None = None, metric_key: str = "default", macs_key: str = "macs",
                 space: str | None = None, space_args: Mapping[str, Any] | None = None) -> None:
        quiet_nni()
        log_warnings_only()
        if objectives not in ("metric+macs", "metric"):
            raise ValueError(f"OptunaTuner objectives must be 'metric+macs' or 'metric', got {objectives!r}")
        self.max_macs = parse_number("OptunaTuner max_macs", max_macs, minimum=0)  # PyYAML reads 2.0e5 as a string
        self.multi = objectives == "metric+macs"
        self.metric_key, self.macs_key = metric_key, macs_key
        self.sampler_name, self.seed = sampler or ("nsga2" if self.multi else "tpe"), seed
        self.sampler_args = dict(sampler_args or {})
        make_sampler(self.sampler_name, seed, **self.sampler_args)  # a wrong sampler or sampler_args fails here
        self._study_name, self._storage = study_name, storage
        self._space = resolve_space(space, **dict(space_args or {})) if space is not None else None
        self.distributions: dict[str, Any] = {}  # Optuna distributions of the search space
        self.by_index: dict[str, list[Any]] = {}
        self.pending: dict[int, Trial] = {}  # parameter id -> the Optuna trial asked for it
        self._ended: set[int] = set()  # pending ids whose trial ended successfully before its result arrived
        self._lock = threading.RLock()  # NNI calls trial_end from another thread than the other callbacks
        self._concurrency: int | None = None  # trialConcurrency: the size of NNI's first request
        self._deferred: deque[int] = deque()
        self._send: Callable[[int, dict[str, Any]], None] | None = None
        Orphans.__init__(self)  # after a resume: trials asked before the stop, never ended

    # Opened on first use: building the tuner (also to check its classArgs before nnictl starts) touches no storage.
    @cached_property
    def study(self) -> Any:
        """The Optuna study (created in the storage, or loaded from it)."""
        name = self._study_name
        if name is None:  # the dispatcher has no nni.get_experiment_id(); its checkpoint folder is <id>/checkpoint
            folder = self.get_checkpoint_path()
            if folder is None:
                raise ValueError("OptunaTuner needs a study_name outside an nnictl experiment")
            name = f"nni-{Path(folder).parent.name}"
        storage = self._storage or default_storage(os.environ.get("NNI_LOG_DIRECTORY", "."))
        if storage.startswith("sqlite:///"):
            Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return open_named_study(name, storage, multi_objective=self.multi, sampler=self.sampler_name, seed=self.seed,
                                sampler_args=self.sampler_args)

    def update_search_space(self, search_space: dict[str, Any]) -> None:
        self.distributions, self.by_index = to_optuna_distributions(search_space)
        self.study  # open it now: a storage or study problem ends the dispatcher before any trial runs

    def load_checkpoint(self) -> None:
        """Find the trials asked before ``nnictl stop`` that never ended (NNI calls this when it resumes)."""
        with self._lock:
            self._orphans = running_trials(self.study, "nni_parameter_id")

    def import_data(self, data: list[dict[str, Any]]) -> None:
        """Tell the results of trials asked before a resume (NNI hands every finished trial over; those already in
        the study are skipped, as are trials this study never asked)."""
        with self._lock:
            waiting = {**(self._orphans or {}), **self._rerun}
            by_params = {params_key(self._nni_params(trial)): (pid, trial) for pid, trial in waiting.items()}
            for entry in data:
                found = by_params.get(params_key(entry["parameter"]))
                if found is not None:
                    pid, trial = found
                    (self._orphans or {}).pop(pid, None)
                    self._rerun.pop(pid, None)
                    self._tell(trial, entry["value"], f"trial {trial.number}")

    def generate_multiple_parameters(self, parameter_id_list: list[int], **kwargs: Any) -> list[dict[str, Any]]:
        with self._lock:
            self._send = kwargs.get("st_callback", self._send)
            if self._concurrency is None:
                self._concurrency = len(parameter_id_list)
            if parameter_id_list:
                self.resume_at(parameter_id_list[0])
            return super().generate_multiple_parameters(parameter_id_list, **kwargs)

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict[str, Any]:
        if not self.distributions:
            raise ValueError("OptunaTuner got no search space; set searchSpaceFile in the experiment config")
        if self._busy():
            self._deferred.append(parameter_id)
            raise nni.NoMoreTrialError("waiting for a running trial's result")
        return self._hand_out(parameter_id)

    def receive_trial_result(self, parameter_id: int, parameters: dict[str, Any], value: Any, **kwargs: Any) -> None:
        with self._lock:
            trial = self.pending.pop(parameter_id, None)
            self._ended.discard(parameter_id)
            if trial is not None:  # else a customized trial, or one of a previous run of the experiment
                self._tell(trial, value, f"trial {parameter_id}")

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        with self._lock:
            if success:  # its final result is told on arrival, also if it arrives after this call
                if parameter_id in self.pending:
                    self._ended.add(parameter_id)
                    self._send_deferred()
                return
            trial = self.pending.pop(parameter_id, None)
            if trial is not None:  # ended without a final result: failed, killed or early-stopped
                tell_failed(self.study, trial)
                self._send_deferred()

    def _busy(self) -> bool:
        """True while ``trialConcurrency`` asked trials are still running: the next ask waits for a result."""
        running = len(self.pending) - len(self._ended) + len(self._rerun)
        return self._concurrency is not None and running >= self._concurrency

    def _hand_out(self, parameter_id: int) -> dict[str, Any]:
        """Ask the study for a trial (or take one asked before a stop and never started) for ``parameter_id``."""
        if self._again:
            trial = self._again.popleft()
        else:
            trial = self._ask_new()
            trial.set_user_attr("nni_parameter_id", parameter_id)
        self.pending[parameter_id] = trial
        return self._nni_params(trial)

    def _ask_new(self) -> Trial:
        """Ask the study for a network none of its trials has (by canonical form); a suggestion of one it has is
        stored as FAIL with user attribute ``duplicate_of`` (not run: the study has that network's result, or will)."""
        trials = self.study.get_trials(deepcopy=False)
        known = {self._network(t): t.number for t in reversed(trials)}  # network -> its first trial
        for _ in range(_MAX_ASKS):
            number = len(self.study.get_trials(deepcopy=False))  # the number study.ask gives
            self.study.sampler = make_sampler(self.sampler_name, _trial_seed(self.seed, number), **self.sampler_args)
            trial = self.study.ask(self.distributions)
            original = known.get(self._network(trial))
            if original is None:
                return trial
            trial.set_user_attr("duplicate_of", original)
            tell_failed(self.study, trial)
            _log.info("trial %d suggests the network of trial %d: not run, asking again", trial.number, original)
        raise SpaceExhaustedError(f"the study suggested {_MAX_ASKS} networks in a row that its trials already have: "
                                  f"the space is (nearly) exhausted; stop the experiment or widen the search space")

    def _network(self, trial: Trial | FrozenTrial) -> str:
        """The identity of a trial's network: its NNI parameters in the space's canonical form."""
        params = self._nni_params(trial)
        return params_key(self._space.canonical(params) if self._space is not None else params)

    def _nni_params(self, trial: Trial | FrozenTrial) -> dict[str, Any]:
        """The NNI parameters of a trial (indices of list-valued choices mapped back to the values)."""
        return {k: self.by_index[k][v] if k in self.by_index else v for k, v in trial.params.items()}

    def _tell(self, trial: Trial, value: Any, what: str) -> None:
        """Tell a final result (a malformed one as FAIL), then send the trials deferred until a result."""
        try:
            metric, macs = self._metric_and_macs(value)
        except ValueError as exc:
            _log.error("%s: %s; it is stored as FAIL", what, exc)
            tell_failed(self.study, trial)
        else:
            trial.set_user_attr(METRIC_ATTR, metric)
            if macs is not None:
                trial.set_user_attr(MACS_ATTR, macs)
            if self.max_macs is not None and macs is not None:
                trial.set_constraint(CONSTRAINT_KEY, macs - self.max_macs)
            self.study.tell(trial, [metric, macs] if self.multi else metric)
        self._send_deferred()

    def _send_deferred(self) -> None:
        while self._deferred and self._send is not None and not self._busy():
            parameter_id = self._deferred.popleft()
            params = self._hand_out(parameter_id)
            _log.info("sending deferred trial %d", parameter_id)
            self._send(parameter_id, params)

    def _metric_and_macs(self, value: Any) -> tuple[float, float | None]:
        if not isinstance(value, Mapping):
            value = {self.metric_key: value}
        if self.metric_key not in value or (self.multi or self.max_macs is not None) and self.macs_key not in value:
            need = [self.metric_key] + ([self.macs_key] if self.multi or self.max_macs is not None else [])
            raise ValueError(f"the final result {value!r} lacks {need}; report_final_result({{'{self.metric_key}': "
                             f"metric, '{self.macs_key}': macs}})")
        metric = float(value[self.metric_key])
        macs = float(value[self.macs_key]) if self.macs_key in value else None
        if not math.isfinite(metric) or macs is not None and not math.isfinite(macs):
            raise ValueError(f"the final result {value!r} is not finite")
        return metric, macs


def _trial_seed(seed: int, number: int) -> int:
    """The sampler's seed for trial ``number``: distinct streams per (seed, number), the same in every process."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])
