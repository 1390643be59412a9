"""An nnictl experiment read from NNI's own SQLite database, running or stopped, without its manager: the one
reader of ``<experimentWorkingDirectory>/<id>/db/nni.sqlite`` (``export --from nni:`` and ``report`` use it).

The working directory comes from NNI's registry ``~/nni-experiments/.experiment`` (``logDir``), default
``~/nni-experiments``. Parameters (``TrialJobEvent.data`` of the WAITING/RUNNING event) and final metrics
(``MetricData`` of type FINAL, JSON-encoded twice) are joined on ``parameterId``, never on the trial id
(shared/docs/NNI.md §3). Timestamps are NNI's milliseconds since the epoch.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["NniTrialRow", "NniExperimentData", "experiment_db", "read_experiment"]


@dataclass(frozen=True)
class NniTrialRow:
    """One trial job: its parameters, its final metrics (None: it reported none) and when it started / reported.

    Attributes:
        sequence: NNI's trial sequence number (the order trials were submitted).
        start_ms: the first event of the job (WAITING or RUNNING).
        final_ms: when its final metric arrived (None without one).
        status: the job's last event (SUCCEEDED, FAILED, USER_CANCELED, RUNNING, ...).
        folder: the trial folder (``NNI_OUTPUT_DIR``), where NNI recorded one.
    """

    trial_id: str
    parameter_id: int
    sequence: int
    params: dict[str, Any]
    metrics: dict[str, Any] | None
    start_ms: int | None
    final_ms: int | None
    status: str
    folder: Path | None = None


@dataclass(frozen=True)
class NniExperimentData:
    """An experiment's config (the canonical one NNI stored, tuner included), start time and trials."""

    id: str
    folder: Path
    config: dict[str, Any]
    start_ms: int | None
    trials: list[NniTrialRow] = field(default_factory=list)

    @property
    def tuner(self) -> dict[str, Any]:
        """The tuner section: ``name`` (a built-in) or ``className``, and ``classArgs``."""
        return dict(self.config.get("tuner") or {})

    @property
    def tuner_args(self) -> dict[str, Any]:
        return dict(self.tuner.get("classArgs") or {})

    @property
    def strategy(self) -> tuple[str, int | None]:
        """The search this experiment's tuner runs, and its seed: a built-in tuner's name (``tpe``), a
        ``StrategyTuner``'s ``strategy`` classArg, ``optuna-<sampler>`` for an ``OptunaTuner`` (its default
        sampler: nsga2 for metric+macs, tpe for metric), else the tuner class's name."""
        tuner, args = self.tuner, self.tuner_args
        seed = args.get("seed") if isinstance(args.get("seed"), int) else None
        if tuner.get("name"):
            return str(tuner["name"]).lower(), seed
        class_name = str(tuner.get("className", "unknown")).rpartition(".")[2]
        if class_name == "StrategyTuner":
            return str(args.get("strategy", "random")), seed
        if class_name == "OptunaTuner":
            default = "nsga2" if args.get("objectives", "metric+macs") == "metric+macs" else "tpe"
            return f"optuna-{args.get('sampler') or default}", seed
        return class_name, seed

    def seed_of(self, tag: str) -> int | None:
        """The seed of the strategy a trial is tagged with in a multi-strategy experiment (the classArgs
        ``strategies`` entry whose ``tag``, else ``strategy``, is ``tag``), else the tuner's own seed."""
        for entry in self.tuner_args.get("strategies") or []:
            if isinstance(entry, Mapping) and entry.get("tag", entry.get("strategy")) == tag:
                return entry["seed"] if isinstance(entry.get("seed"), int) else None
        return self.strategy[1]

    @property
    def maximize(self) -> bool:
        """The tuner's ``optimize_mode`` (NNI's default: maximize)."""
        return self.tuner_args.get("optimize_mode", "maximize") != "minimize"


def _registry_dir(experiment: str) -> Path:
    """The experiment working directory NNI's registry records for ``experiment`` (default ``~/nni-experiments``)."""
    home = Path.home() / "nni-experiments"
    try:
        registry = json.loads((home / ".experiment").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        registry = None
    if isinstance(registry, Mapping) and isinstance(registry.get(experiment), Mapping):
        log_dir = registry[experiment].get("logDir")
        if log_dir:
            return Path(log_dir)
    return home


def experiment_db(ref: str | Path) -> Path:
    """The database of an experiment given by id (looked up as NNI does) or by its folder
    (``<working dir>/<id>``); ``ValueError`` (one line) when there is none."""
    path = Path(ref)
    if path.is_dir():
        db = path / "db" / "nni.sqlite"
        if db.is_file():
            return db
        raise ValueError(f"{path} is not an NNI experiment folder (no db/nni.sqlite in it); give the folder "
                         "<experimentWorkingDirectory>/<id> or the experiment id")
    experiment = str(ref)
    db = _registry_dir(experiment) / experiment / "db" / "nni.sqlite"
    if not experiment or "/" in experiment or not db.is_file():
        raise ValueError(f"no NNI experiment {experiment!r} ({db} does not exist); `nnictl experiment list --all` "
                         "lists the experiments")
    return db


def _decode(data: str) -> Any:
    value = json.loads(data)
    return json.loads(value) if isinstance(value, str) else value  # NNI encodes metric data twice


def read_experiment(ref: str | Path) -> NniExperimentData:
    """Every trial of the experiment ``ref`` names (:func:`experiment_db`), in submission order; a final metric
    that is a bare number becomes ``{"default": number}``."""
    db = experiment_db(ref)
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            profile_row = conn.execute("select params, id, startTime from ExperimentProfile "
                                       "order by revision desc limit 1").fetchone()
            events = conn.execute("select timestamp, trialJobId, event, data, logPath, sequenceId from TrialJobEvent "
                                  "order by timestamp, rowid").fetchall()
            finals = conn.execute("select timestamp, trialJobId, parameterId, data from MetricData "
                                  "where type='FINAL' order by timestamp, rowid").fetchall()
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"cannot read NNI database {db} ({exc}); give the folder of an experiment nnictl wrote") \
            from None
    config = json.loads(profile_row[0]) if profile_row and profile_row[0] else {}
    jobs: dict[str, dict[str, Any]] = {}
    params: dict[int, dict[str, Any]] = {}
    for timestamp, trial_id, event, data, log_path, sequence in events:
        job = jobs.setdefault(trial_id, {"start": timestamp, "sequence": sequence, "status": event, "folder": None,
                                         "parameter_id": None})
        job["status"] = event
        if log_path:
            job["folder"] = Path(log_path.removeprefix("file://localhost:"))
        if data:
            hp = json.loads(data)
            params[int(hp["parameter_id"])] = hp["parameters"]
            job["parameter_id"] = int(hp["parameter_id"])
    final: dict[str, tuple[int, int, dict[str, Any]]] = {}
    for timestamp, trial_id, parameter_id, data in finals:
        value = _decode(data)
        final[trial_id] = (timestamp, int(parameter_id), dict(value) if isinstance(value, Mapping)
                           else {"default": value})
    rows = []
    for trial_id, job in jobs.items():
        stamp, parameter_id, metrics = final.get(trial_id, (None, job["parameter_id"], None))
        if parameter_id is None:
            continue  # a job that never received parameters
        rows.append(NniTrialRow(trial_id, parameter_id, job["sequence"] if job["sequence"] is not None else -1,
                                dict(params.get(parameter_id, {})), metrics, job["start"], stamp, job["status"],
                                job["folder"]))
    rows.sort(key=lambda r: (r.sequence, r.start_ms or 0))
    experiment = profile_row[1] if profile_row and profile_row[1] else db.parent.parent.name
    start = profile_row[2] if profile_row else None
    return NniExperimentData(experiment, db.parent.parent, config, start, rows)
