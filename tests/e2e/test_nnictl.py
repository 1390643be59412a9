"""End to end through nnictl: the example experiments, shrunk, run by the NNI manager and read back
through NNI's Python API. Each test runs under a private HOME and stops its experiment, also on failure."""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any
from types import SimpleNamespace

import pytest
import yaml

from tests import EXAMPLES
from hrnas_automl.cost import arch_cost
from hrnas_automl.cost.latency import latency_table
from hrnas_automl.nni.compat import STRATEGY_KEY
from hrnas_automl.nni.experiment import NniExperiment, free_port, nni_env

EXAMPLES = EXAMPLES / "detnas"
# an example's search has signal (issue 18 item 6): a few of its trials' `default` differ by this much, and the
# best is this far above chance
SPREAD, ABOVE_CHANCE = 0.02, 0.05


def shrunk_example(name: str, dest: Path, trials: int, trial_config: str = "trial.yml", keep_data: bool = False,
                   **class_args: Any) -> Path:
    """Copy an example experiment (and its trial config) with tiny data (or, ``keep_data``, the example's data and
    training, whose trials must differ) and few trials, keeping its tuner and search space; ``class_args`` are set
    in its tuner's classArgs."""
    config = yaml.safe_load((EXAMPLES / name).read_text())
    shutil.copy(EXAMPLES / config["searchSpaceFile"], dest)
    trial = yaml.safe_load((EXAMPLES / trial_config).read_text())
    if not keep_data:
        trial["data"].update(train_size=128, val_size=64)
        trial["train"].update(epochs=2, batch_size=32)
    trial["latency"].update(repeats=3, warmup=1)
    (dest / trial_config).write_text(yaml.safe_dump(trial))
    config.update(maxTrialNumber=trials, trialConcurrency=2, maxExperimentDuration="10m")
    if config["tuner"].get("classArgs", {}).get("strategy") == "evolution":  # reach generation 1 within the trials
        config["tuner"]["classArgs"].update(population_size=2, select_num=1, mutation_num=1, crossover_num=0)
    config["tuner"].setdefault("classArgs", {}).update(class_args)
    (dest / name).write_text(yaml.safe_dump(config))
    return dest / name


def test_trials_list_intermediate_results_in_report_order() -> None:
    """NNI's REST API may return a trial's metrics out of order; ``trials()`` sorts them by NNI's sequence."""
    def metric(kind: str, sequence: int, data: dict) -> SimpleNamespace:
        return SimpleNamespace(type=kind, sequence=sequence, parameterId="0", data=data)

    hp = SimpleNamespace(parameter_id=0, parameters={"lam": 0.1})
    job = SimpleNamespace(trialJobId="t1", status="SUCCEEDED", hyperParameters=[hp])
    api = SimpleNamespace(list_trial_jobs=lambda: [job], get_job_metrics=lambda: {"t1": [
        metric("PERIODICAL", 1, {"default": 0.6, "step": 1}), metric("FINAL", 0, {"default": 0.7}),
        metric("PERIODICAL", 0, {"default": 0.5, "step": 0})]})
    exp = NniExperiment("e1", port=0, env={})
    exp._connection = api
    (record,) = exp.trials()
    assert [m["step"] for m in record.intermediate] == [0, 1]
    assert record.metrics == {"default": 0.7} and record.arch == {"lam": 0.1}


def test_waiting_on_a_manager_that_was_stopped_ends_with_how_to_resume() -> None:
    """`nnictl stop` from another shell while `search` waits: one line saying how to continue, not a traceback of
    requests' ConnectionError (nothing listens on a fresh free port, as after the stop)."""
    exp = NniExperiment("abc123", port=free_port(), env={})
    with pytest.raises(RuntimeError, match=r"the NNI manager of experiment abc123 stopped answering .*; continue it "
                                           rf"with `.*nnictl resume abc123 --port {exp.port}`"):
        exp.wait(5)


SLOW_MANAGER = ("requests.exceptions.ConnectionError: HTTPConnectionPool(host='localhost', port=8080): Max retries "
                "exceeded with url: /api/v1/nni/check-status (Caused by NewConnectionError(... Connection refused))")


@pytest.mark.parametrize(("outputs", "runs", "error"), [
    ([(1, SLOW_MANAGER), (0, "Experiment ID: abc123")], 2, None),  # a manager too slow for nnictl: run again
    ([(1, SLOW_MANAGER)] * 3, 3, "check-status"),  # gives up after `attempts` runs, naming the cause
    ([(1, "ERROR: tuner: unknown key 'foo'")], 1, "unknown key 'foo'"),  # any other failure is not retried
])
def test_create_retries_only_a_manager_too_slow_to_answer(outputs: list[tuple[int, str]], runs: int,
                                                          error: str | None, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        code, out = outputs[len(calls) - 1]
        return subprocess.CompletedProcess(argv, code, stdout=out, stderr="")

    monkeypatch.setattr("hrnas_automl.nni.experiment.subprocess.run", fake_run)
    (tmp_path / "config.yml").write_text("{}")
    if error is None:
        assert NniExperiment.create(tmp_path / "config.yml", port=free_port(), env={}).id == "abc123"
    else:
        with pytest.raises(RuntimeError, match=error):
            NniExperiment.create(tmp_path / "config.yml", port=free_port(), env={})
    assert len(calls) == runs


@pytest.mark.parametrize(("outcomes", "created", "error"), [
    (["missed", "running"], 2, None),  # a tuner that missed NNI's 10 s window: created again
    (["missed"] * 3, 3, "did not connect"),  # up to `attempts` in all, then the error
    (["died"], 1, "its tuner died"),  # any other failure is not retried
    (["done"], 1, None),
])
def test_start_creates_again_an_experiment_whose_tuner_missed_the_connect_window(
        outcomes: list[str], created: int, error: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[NniExperiment] = []
    stopped: list[str] = []

    def fake_create(cls: type, config: str, **_: object) -> NniExperiment:
        exp = NniExperiment(f"e{len(made)}", port=0, env={})
        made.append(exp)
        return exp

    def fake_wait(self: NniExperiment, timeout: float, **_: object) -> list:
        outcome = outcomes[len(made) - 1]
        if outcome == "missed":
            raise RuntimeError(f"experiment {self.id} failed: tuner_command_channel: Tuner did not connect in 10 "
                               "seconds.")
        if outcome == "died":
            raise RuntimeError(f"experiment {self.id} stopped: its tuner died with ValueError")
        if outcome == "running":
            raise TimeoutError("still RUNNING")
        return []

    monkeypatch.setattr(NniExperiment, "create", classmethod(fake_create))
    monkeypatch.setattr(NniExperiment, "wait", fake_wait)
    monkeypatch.setattr(NniExperiment, "stop", lambda self: stopped.append(self.id))
    if error is None:
        assert NniExperiment.start("config.yml", env={}).id == f"e{created - 1}"
    else:
        with pytest.raises(RuntimeError, match=error):
            NniExperiment.start("config.yml", env={})
    assert len(made) == created and stopped == [f"e{i}" for i in range(created) if outcomes[i] in ("missed", "died")]


@pytest.mark.slow
@pytest.mark.parametrize("example", ["evolution.yml", "random.yml", "tpe.yml"])
def test_example_experiment_runs_and_reports_common_keys(example: str, tmp_path: Path, nni_home: Path) -> None:
    """The random search runs on the example's own data and training (issue 18: every example is a search with
    signal): its trials' ``default`` differ and the best is above chance (10 classes: 0.1)."""
    signal = example == "random.yml"
    config = shrunk_example(example, tmp_path, trials=3, keep_data=signal)
    with NniExperiment.start(config, env=nni_env(home=nni_home)) as exp:
        trials = exp.wait(timeout=420)
    assert len(trials) == 3 and all(t.status == "SUCCEEDED" for t in trials), [(t.trial_id, t.status) for t in trials]
    limit = yaml.safe_load(config.read_text())["tuner"].get("classArgs", {}).get("max_macs")
    epochs = yaml.safe_load((tmp_path / "trial.yml").read_text())["train"]["epochs"]
    for t in trials:
        assert {"default", "macs", "params", "latency_ms"} <= set(t.metrics)
        assert 0.0 <= t.metrics["default"] <= 1.0
        # the metrics belong to this arch: its MACs, counted again here, match what the trial reported
        assert t.metrics["macs"] == arch_cost("detnas-small", t.arch, (3, 32, 32), num_classes=10).macs
        assert limit is None or t.metrics["macs"] <= limit
        assert [row["epoch"] for row in t.intermediate] == list(range(epochs))
    if signal:
        scores = [t.metrics["default"] for t in trials]
        assert max(scores) - min(scores) >= SPREAD and max(scores) >= 0.1 + ABOVE_CHANCE, scores
    assert (nni_home / "nni-experiments" / exp.id).is_dir()  # the registry went to the private HOME


@pytest.mark.slow
def test_lite_hrnet_search_runs_under_nnictl_on_keypoints(tmp_path: Path, nni_home: Path) -> None:
    """On the example's own data and training (issue 18 item 6): the trials' `default` (PCK) differ and the best is
    above what guessing reaches (a keypoint within 0.05 of the box size: about 1% of uniform guesses)."""
    examples = EXAMPLES.parent / "lite_hrnet"
    shutil.copy(examples / "search_space.json", tmp_path)
    trial = yaml.safe_load((examples / "trial_kpt.yml").read_text())
    trial["data"].update(cache_dir=str(tmp_path / "data"))
    (tmp_path / "trial_kpt.yml").write_text(yaml.safe_dump(trial))
    config = yaml.safe_load((examples / "evolution.yml").read_text())
    config.update(maxTrialNumber=3, maxExperimentDuration="10m")
    config["tuner"]["classArgs"].update(population_size=2, select_num=1, mutation_num=1, crossover_num=0)
    (tmp_path / "evolution.yml").write_text(yaml.safe_dump(config))
    with NniExperiment.start(tmp_path / "evolution.yml", env=nni_env(home=nni_home)) as exp:
        trials = exp.wait(timeout=420)
    assert len(trials) == 3 and all(t.status == "SUCCEEDED" for t in trials), [(t.trial_id, t.status) for t in trials]
    for t in trials:
        assert {"default", "ap", "pck", "macs", "params"} <= set(t.metrics)
        assert t.metrics["default"] == t.metrics["pck"]
        assert t.metrics["macs"] == arch_cost("lite-hrnet", t.arch, (3, 64, 48), head="keypoints").macs
    scores = [t.metrics["default"] for t in trials]
    assert max(scores) - min(scores) >= SPREAD and max(scores) >= 0.01 + ABOVE_CHANCE / 2, scores


@pytest.mark.slow
def test_evolution_under_an_onnxruntime_latency_limit_runs_through_nnictl(tmp_path: Path, nni_home: Path) -> None:
    """examples/detnas/evolution_ort_latency.yml, shrunk (issue 20): the tuner proposes only networks whose ONNX
    Runtime latency, predicted by the table, is under the limit, and every trial reports the latency it measured
    under ONNX Runtime. The limit is set inside this machine's range; the table, compiled here first, is the one the
    tuner reads (the session's cache is shared with nnictl's processes)."""
    table = latency_table("detnas-small", (3, 32, 32), threads=1, backend="onnxruntime", num_classes=10)
    (lo,), (hi,) = table.bounds()
    limit = (lo + hi) / 2
    config = shrunk_example("evolution_ort_latency.yml", tmp_path, trials=3, trial_config="trial_ort_latency.yml",
                            max_latency_ms=limit)
    with NniExperiment.start(config, env=nni_env(home=nni_home)) as exp:
        trials = exp.wait(timeout=420)
    assert len(trials) == 3 and all(t.status == "SUCCEEDED" for t in trials), [(t.trial_id, t.status) for t in trials]
    for t in trials:
        assert table.evaluate(t.arch)[0] <= limit and t.metrics["latency_ms"] > 0
        assert t.metrics["macs"] == arch_cost("detnas-small", t.arch, (3, 32, 32), num_classes=10).macs


@pytest.mark.slow
def test_strategies_side_by_side_take_equal_turns_and_tag_their_trials(tmp_path: Path, nni_home: Path) -> None:
    config = shrunk_example("compare.yml", tmp_path, trials=4)  # random, evolution, optuna, NNI's TPE: one each
    with NniExperiment.start(config, env=nni_env(home=nni_home)) as exp:
        trials = exp.wait(timeout=420)
    assert len(trials) == 4 and all(t.status == "SUCCEEDED" for t in trials), [(t.trial_id, t.status) for t in trials]
    tags = [t.arch[STRATEGY_KEY] for t in trials]  # the parameters NNI's REST API lists
    assert sorted(tags) == ["evolution", "optuna", "random", "tpe"]
    assert len({json.dumps(t.arch, sort_keys=True) for t in trials}) == 4  # seeds differ: so do the networks
    limit = yaml.safe_load(config.read_text())["tuner"]["classArgs"]["max_macs"]
    for t in trials:
        assert t.metrics[STRATEGY_KEY] == t.arch[STRATEGY_KEY]  # and the final result
        arch = {k: v for k, v in t.arch.items() if k != STRATEGY_KEY}
        assert t.metrics["macs"] == arch_cost("detnas-small", arch, (3, 32, 32), num_classes=10).macs
        assert t.metrics["macs"] <= limit  # also Optuna's and NNI's TPE's: the tuner asks them again past it
    db = sqlite3.connect(nni_home / "nni-experiments" / exp.id / "db" / "nni.sqlite")
    stored = [json.loads(row[0])["parameters"] for row in
              db.execute("SELECT data FROM TrialJobEvent WHERE event = 'RUNNING'")]  # NNI's own database
    assert sorted(params[STRATEGY_KEY] for params in stored) == sorted(tags)
