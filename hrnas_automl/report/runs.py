"""What ``hrnas-automl report`` reads: searches of any kind as :class:`Run`s (one strategy at one seed, its trials in
the order their results arrived), from

* an nnictl experiment, by id (``nni:ID`` or a bare id) or by its folder: NNI's own database
  (:mod:`hrnas_automl.nni.database`), running or stopped; the strategy and seed come from the tuner's config, and a
  trial's ``strategy`` parameter (or metric) splits a multi-strategy experiment into one run per strategy;
* an Optuna study, ``optuna:STORAGE:STUDY`` (an SQLAlchemy URL or a journal file): its completed trials, the
  ``metric`` / ``macs`` user attributes (strategy ``optuna``; its ``strategy`` / ``seed`` user attributes if set);
* a ``oneshot search`` state file: every evaluated candidate (metric ``map``, backbone ``macs``; no wall time);
* a ``prune`` (fine-grained) result folder or its ``result.json``: each prune step (metric, MACs, params), or a
  ``trial`` result: one point.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["TrialPoint", "Run", "read_runs", "COSTS"]

COSTS = ("macs", "params", "latency_ms")  # the costs the report plots the metric against
_ONESHOT_KIND = "hrnas-automl oneshot search"  # hrnas_automl.oneshot.search writes its state with this kind


@dataclass(frozen=True)
class TrialPoint:
    """One scored trial: its metric, costs where known, and when its result arrived (seconds after the run's
    first trial started; None when the source records no time)."""

    metric: float
    time_s: float | None = None
    costs: dict[str, float] = field(default_factory=dict)
    name: str = ""


@dataclass
class Run:
    """One search: a strategy at a seed, with its scored trials in the order their results arrived."""

    source: str
    strategy: str
    seed: int | None
    maximize: bool
    trials: list[TrialPoint]
    unscored: int = 0  # trials without a final metric (failed, running, killed)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _costs(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {key: value for key in COSTS if (value := _number(metrics.get(key))) is not None}


def _nni_runs(ref: str) -> list[Run]:
    from hrnas_automl.nni.compat import STRATEGY_KEY
    from hrnas_automl.nni.database import read_experiment

    data = read_experiment(ref)
    strategy, seed = data.strategy
    if not data.trials:
        raise ValueError(f"NNI experiment {data.id} ({data.folder}) has no trial yet; wait for its first trial or "
                         "leave it out")
    starts = [row.start_ms for row in data.trials if row.start_ms is not None]
    origin = min(starts) if starts else None
    groups: dict[str, Run] = {}
    rows = sorted(data.trials, key=lambda r: (r.final_ms is None, r.final_ms or 0, r.sequence))
    for row in rows:
        own = row.params.get(STRATEGY_KEY, (row.metrics or {}).get(STRATEGY_KEY))
        name = str(own) if isinstance(own, str) and own else strategy
        run = groups.setdefault(name, Run(f"nni:{data.id}", name, data.seed_of(name) if name != strategy else seed,
                                          data.maximize, []))
        metric = _number((row.metrics or {}).get("default"))
        if metric is None:
            run.unscored += 1
            continue
        time_s = (row.final_ms - origin) / 1000 if row.final_ms is not None and origin is not None else None
        run.trials.append(TrialPoint(metric, time_s, _costs(row.metrics or {}), row.trial_id))
    return list(groups.values())


def _optuna_runs(ref: str) -> list[Run]:
    from hrnas_automl.tuning.study import METRIC_ATTR, stored_study, study_history

    storage, _, study_name = ref.rpartition(":")
    if not storage or not study_name:
        raise ValueError(f"optuna:{ref} must look like optuna:STORAGE:STUDY, e.g. optuna:sqlite:///studies.db:demo")
    study = stored_study(storage, study_name)
    rows = study_history(study)
    if not rows and not study.trials:
        raise ValueError(f"Optuna study {study_name!r} in {storage} has no trial yet; run it first or leave it out")
    starts = [row["start_s"] for row in rows if row["start_s"] is not None]
    origin = min(starts) if starts else None
    attrs = study.user_attrs
    maximize = study.directions[0].name == "MAXIMIZE"
    seed = attrs.get("seed") if isinstance(attrs.get("seed"), int) else None
    run = Run(f"optuna:{ref}", str(attrs.get("strategy") or "optuna"), seed, maximize, [],
              unscored=len(study.trials) - len(rows))
    for row in rows:
        metric = _number(row[METRIC_ATTR])
        if metric is None:
            run.unscored += 1
            continue
        time_s = row["complete_s"] - origin if row["complete_s"] is not None and origin is not None else None
        run.trials.append(TrialPoint(metric, time_s, _costs(row), f"trial {row['number']}"))
    return [run]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else type(exc).__name__
        raise ValueError(f"{path} is not a readable JSON file ({reason}); give a oneshot search state or the "
                         "result.json of a prune / trial run") from None


def _oneshot_run(path: Path, state: Mapping[str, Any]) -> Run:
    search = (state.get("fingerprint") or {}).get("search") or {}
    seed = search.get("seed") if isinstance(search.get("seed"), int) else None
    run = Run(str(path), f"oneshot-{search.get('strategy', 'evolution')}", seed, True, [])
    for row in state.get("evaluated") or []:
        metric = _number(row.get("map"))
        if metric is None:
            run.unscored += 1
            continue
        run.trials.append(TrialPoint(metric, None, _costs(row), f"candidate {row.get('index')}"))
    return run


def _result_run(path: Path, result: Mapping[str, Any]) -> Run:
    metrics = result.get("metrics") if isinstance(result.get("metrics"), Mapping) else {}
    if "prune" in result:  # a fine-grained search: each prune step is a point of its trajectory
        prune = result.get("prune") or {}
        seed = prune.get("seed") if isinstance(prune.get("seed"), int) else None
        run = Run(str(path), "fine-grained", seed, True, [])
        for step in result.get("steps") or []:
            metric = _number(step.get("default"))
            if metric is not None:
                run.trials.append(TrialPoint(metric, None, _costs(step), f"epoch {step.get('epoch')}"))
        return run
    metric = _number(metrics.get("default"))
    trials = [TrialPoint(metric, _number(metrics.get("trial_s")), _costs(metrics), "trial")] \
        if metric is not None else []
    return Run(str(path), "trial", None, True, trials, unscored=0 if trials else 1)


def _file_runs(path: Path) -> list[Run]:
    file = path / "result.json" if path.is_dir() else path
    if path.is_dir() and not file.is_file():
        raise ValueError(f"{path} is neither an NNI experiment folder (db/nni.sqlite) nor a run folder "
                         "(result.json); give one of those, a oneshot search state, or optuna:STORAGE:STUDY")
    data = _read_json(file)
    if isinstance(data, Mapping) and data.get("kind") == _ONESHOT_KIND:
        return [_oneshot_run(file, data)]
    if isinstance(data, Mapping) and isinstance(data.get("arch"), Mapping):
        return [_result_run(file, data)]
    raise ValueError(f"{file} is neither a oneshot search state nor the result.json of a prune / trial run")


def read_runs(inputs: list[str]) -> list[Run]:
    """The runs of every input (module docstring); one-line ``ValueError`` naming an input that has none, or
    inputs that optimize in opposite directions."""
    if not inputs:
        raise ValueError("give at least one input: an NNI experiment id or folder, optuna:STORAGE:STUDY, or a "
                         "result file")
    runs: list[Run] = []
    for ref in inputs:
        path = Path(ref)
        if ref.startswith("optuna:"):
            found = _optuna_runs(ref.removeprefix("optuna:"))
        elif path.is_dir() and (path / "db" / "nni.sqlite").is_file():
            found = _nni_runs(ref)
        elif path.exists():
            found = _file_runs(path)
        elif ref.startswith("nni:") or "/" not in ref:
            found = _nni_runs(ref.removeprefix("nni:"))
        else:
            raise ValueError(f"{ref}: no such file or folder; give an NNI experiment id or folder, "
                             "optuna:STORAGE:STUDY, a oneshot search state or a prune / trial result")
        if not any(run.trials for run in found):
            raise ValueError(f"{ref} has no scored trial (no final metric yet); wait for one or leave it out")
        runs.extend(found)
    if len({run.maximize for run in runs}) > 1:
        minimizing = ", ".join(run.source for run in runs if not run.maximize)
        raise ValueError(f"{minimizing} minimize(s) the metric and the other inputs maximize it; report them apart")
    return runs
