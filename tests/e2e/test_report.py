"""``hrnas-automl report`` on two real, stopped nnictl experiments (random and evolution on detnas-small, shrunk)
and one real Optuna study, its numbers checked against the experiments' SQLite databases and the study, each read
here independently of the report's readers. The experiments are made once for the module."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import optuna
import pytest

from hrnas_automl.cli import main
from hrnas_automl.nni.experiment import NniExperiment, nni_env
from hrnas_automl.tuning.study import open_named_study
from tests.e2e.test_nnictl import shrunk_example

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two experiments run side by side (3 trials each, then stopped; the second starts once the first's tuner is
    up) and a 4-trial study in SQLite."""
    root = tmp_path_factory.mktemp("report")
    experiments = {}
    started = []
    try:
        for name in ("random", "evolution"):
            (root / name / "home").mkdir(parents=True)
            config = shrunk_example(f"{name}.yml", root / name, trials=3)
            # one after the other, each past NNI's 10 s window for its tuner to connect (started again if missed)
            exp = NniExperiment.start(config, env=nni_env(home=root / name / "home"))
            started.append((name, root / name / "home", exp))
        for name, home, exp in started:
            trials = exp.wait(timeout=420)
            assert len(trials) == 3 and all(t.status == "SUCCEEDED" for t in trials), [t.status for t in trials]
            experiments[name] = home / "nni-experiments" / exp.id
    finally:
        for _, _, exp in started:
            exp.stop()
    storage = f"sqlite:///{root / 'study.db'}"
    study = open_named_study("tiny", storage, multi_objective=False, sampler="random", seed=0)
    for _ in range(4):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
        x = trial.params["x"]
        trial.set_user_attr("metric", 1 - (x - 0.3) ** 2)
        trial.set_user_attr("macs", 1e6 * (1 + x))
        study.tell(trial, 1 - (x - 0.3) ** 2)
    return {"experiments": experiments, "study": f"optuna:{storage}:tiny", "db": root / "study.db",
            "homes": {name: home for name, home, _ in started}}


def _db_rows(folder: Path) -> list[dict[str, Any]]:
    """Final metrics straight from NNI's database (decoded twice)."""
    with sqlite3.connect(folder / "db" / "nni.sqlite") as conn:
        return [json.loads(json.loads(data)) for (data,) in
                conn.execute("select data from MetricData where type='FINAL'")]


def _front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(metric, cost) pairs no other pair beats: higher metric and lower-or-equal cost, counted by brute force."""
    return sorted({(m, c) for m, c in points if not any((m2 >= m and c2 <= c) and (m2, c2) != (m, c)
                                                         for m2, c2 in points)}, key=lambda p: p[1])


def test_report_matches_the_databases(made: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HOME", str(made["homes"]["random"]))  # the random experiment by id, through its registry
    random_id = made["experiments"]["random"].name
    out = tmp_path / "report"
    assert main(["report", random_id, str(made["experiments"]["evolution"]), made["study"], "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    data = json.loads((out / "report.json").read_text())
    rows = {row["strategy"]: row for row in data["strategies"]}
    assert set(rows) == {"random", "evolution", "optuna"}
    for name in ("random", "evolution"):
        finals = _db_rows(made["experiments"][name])
        row = rows[name]
        assert row["trials"] == len(finals) == 3 and row["seeds"] == 1
        assert row["best"] == max(f["default"] for f in finals) == row["median_best"]
        for cost in ("macs", "params", "latency_ms"):
            front = [(p["metric"], p[cost]) for p in data["pareto"][name][cost]]
            assert front == _front([(f["default"], f[cost]) for f in finals]), cost
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{made['db']}")
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert rows["optuna"]["trials"] == len(done) == 4
    assert rows["optuna"]["best"] == max(t.user_attrs["metric"] for t in done)
    assert [(p["metric"], p["macs"]) for p in data["pareto"]["optuna"]["macs"]] == \
        _front([(t.user_attrs["metric"], t.user_attrs["macs"]) for t in done])
    assert len(data["significance"]) == 3 and all("too few seeds" in c["sentence"] for c in data["significance"])
    assert data["target"] == sorted([rows[n]["best"] for n in rows])[1]  # the median of three runs' bests
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and random_id in page
