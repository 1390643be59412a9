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
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nni.tuner import Tuner

from hrnas_automl.config import parse_number
from hrnas_automl.nni.compat import quiet_nni
from hrnas_automl.tuning.config import default_storage
from hrnas_automl.tuning.study import (
    CONSTRAINT_KEY,
    MACS_ATTR,
    METRIC_ATTR,
    log_warnings_only,
    open_named_study,
    tell_failed,
    to_optuna_distributions,
)

__all__ = ["OptunaTuner"]

_log = logging.getLogger(__name__)


class OptunaTuner(Tuner):
    """NNI ``Tuner`` whose suggestions come from an Optuna study (ask) and whose results go back (tell).

    Args:
        study_name: the Optuna study; default ``nni-<experiment id>``. An existing study of that name is
            continued (its finished trials inform the sampler).
        storage: an SQLAlchemy URL; default ``sqlite:///<NNI log dir>/optuna_studies.db``.
        objectives: ``metric+macs`` (maximize metric, minimize MACs) or ``metric``.
        sampler: ``nsga2``, ``tpe`` or ``random``; default nsga2 for two objectives, tpe for one.
        sampler_args: passed to the sampler (e.g. ``population_size``).
        seed: the sampler's seed (same seed and history, same suggestions).
        max_macs: trials whose MACs exceed it are infeasible (Optuna constraint ``max_macs``).
        metric_key / macs_key: keys of the trial's final result dict.
    """

    def __init__(self, *, study_name: str | None = None, storage: str | None = None, objectives: str = "metric+macs",
                 sampler: str | None = None, sampler_args: Mapping[str, Any] | None = None, seed: int = 0,
                 max_macs: float | str | None = None, metric_key: str = "default", macs_key: str = "macs") -> None:
        quiet_nni()
        log_warnings_only()
        if objectives not in ("metric+macs", "metric"):
            raise ValueError(f"OptunaTuner objectives must be 'metric+macs' or 'metric', got {objectives!r}")
        self.max_macs = parse_number("OptunaTuner max_macs", max_macs, minimum=0)  # PyYAML reads 2.0e5 as a string
        self.multi = objectives == "metric+macs"
        self.metric_key, self.macs_key = metric_key, macs_key
        if study_name is None:
            import nni

            study_name = f"nni-{nni.get_experiment_id()}"
        storage = storage or default_storage(os.environ.get("NNI_LOG_DIRECTORY", "."))
        if storage.startswith("sqlite:///"):
            Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.study = open_named_study(study_name, storage, multi_objective=self.multi,
                                      sampler=sampler or ("nsga2" if self.multi else "tpe"), seed=seed,
                                      sampler_args=sampler_args)
        self.distributions: dict[str, Any] = {}  # Optuna distributions of the search space
        self.by_index: dict[str, list[Any]] = {}
        self.pending: dict[int, Any] = {}  # parameter id -> the Optuna trial asked for it

    def update_search_space(self, search_space: dict[str, Any]) -> None:
        self.distributions, self.by_index = to_optuna_distributions(search_space)

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict[str, Any]:
        if not self.distributions:
            raise ValueError("OptunaTuner got no search space; set searchSpaceFile in the experiment config")
        trial = self.study.ask(self.distributions)
        trial.set_user_attr("nni_parameter_id", parameter_id)
        self.pending[parameter_id] = trial
        return {k: self.by_index[k][v] if k in self.by_index else v for k, v in trial.params.items()}

    def receive_trial_result(self, parameter_id: int, parameters: dict[str, Any], value: Any, **kwargs: Any) -> None:
        trial = self.pending.pop(parameter_id, None)
        if trial is None:  # a customized trial, or one of a previous run of the experiment
            return
        try:
            metric, macs = self._metric_and_macs(value)
        except ValueError as exc:
            _log.error("trial %s: %s; it is stored as FAIL", parameter_id, exc)
            tell_failed(self.study, trial)
            return
        trial.set_user_attr(METRIC_ATTR, metric)
        if macs is not None:
            trial.set_user_attr(MACS_ATTR, macs)
        if self.max_macs is not None and macs is not None:
            trial.set_constraint(CONSTRAINT_KEY, macs - self.max_macs)
        self.study.tell(trial, [metric, macs] if self.multi else metric)

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        if success:  # its final result is told on arrival, also if it arrives after this call
            return
        trial = self.pending.pop(parameter_id, None)
        if trial is not None:  # ended without a final result: failed, killed or early-stopped
            tell_failed(self.study, trial)

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
