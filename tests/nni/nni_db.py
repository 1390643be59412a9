"""An nnictl experiment's database written by hand (the manager's schema: parameters in TrialJobEvent, final
metrics JSON-encoded twice in MetricData), for readers' tests that need no nnictl run."""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SCHEMA = """
    create table TrialJobEvent (timestamp integer, trialJobId text, event text, data text, logPath text,
                                sequenceId integer, message text, environmentId text);
    create table MetricData (timestamp integer, trialJobId text, parameterId text, type text, sequence integer,
                             data text);
    create table ExperimentProfile (params text, id text, execDuration integer, startTime integer,
                                    endTime integer, logDir text, nextSequenceId integer, revision integer);"""


def write_experiment(root: Path, exp_id: str, tuner: Mapping[str, Any],
                     trials: Sequence[tuple[Mapping[str, Any], Mapping[str, Any] | None]], *,
                     start_ms: int = 1_000_000, step_ms: int = 10_000) -> Path:
    """``root/exp_id`` with ``db/nni.sqlite``: trial ``i`` (ids T0, T1, ...) starts at ``start_ms + i * step_ms`` and
    reports its final metrics (None: none) ``step_ms`` later; returns the experiment folder."""
    folder = root / exp_id
    (folder / "db").mkdir(parents=True)
    conn = sqlite3.connect(folder / "db" / "nni.sqlite")
    conn.executescript(SCHEMA)
    conn.execute("insert into ExperimentProfile values (?,?,?,?,?,?,?,?)",
                 (json.dumps({"experimentName": exp_id, "tuner": dict(tuner)}), exp_id, 0, start_ms, 0, str(folder),
                  len(trials), 1))
    for i, (params, metrics) in enumerate(trials):
        trial, t0 = f"T{i}", start_ms + i * step_ms
        hp = {"parameter_id": i, "parameter_source": "algorithm", "parameters": dict(params), "parameter_index": 0}
        conn.execute("insert into TrialJobEvent values (?,?,?,?,?,?,?,?)",
                     (t0, trial, "WAITING", json.dumps(hp), str(folder / "trials" / trial), i, None, None))
        end = "SUCCEEDED" if metrics is not None else "FAILED"
        conn.execute("insert into TrialJobEvent values (?,?,?,?,?,?,?,?)",
                     (t0 + step_ms, trial, end, "", str(folder / "trials" / trial), i, None, None))
        if metrics is not None:
            conn.execute("insert into MetricData values (?,?,?,?,?,?)",
                         (t0 + step_ms, trial, str(i), "FINAL", 0, json.dumps(json.dumps(dict(metrics)))))
    conn.commit()
    conn.close()
    return folder
