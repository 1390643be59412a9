"""The Optuna tuning examples and commands: configs validate, the nnictl example matches its tune config,
`hrnas-automl tune` runs and plots, `tune-trial` runs one trial, and errors are one line."""
from __future__ import annotations

import importlib
import inspect
import json
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml

from tests import EXAMPLES
from hrnas_automl.cli import main
from hrnas_automl.tuning.config import load_tune_config, tune_search_space
from tests.e2e.test_nnictl import ABOVE_CHANCE, SPREAD

HRNAS = EXAMPLES / "hrnas"


@pytest.mark.parametrize("name", ["tune.yml", "tune_slimming.yml"])
def test_tune_examples_validate(name: str) -> None:
    config = load_tune_config(HRNAS / name)
    assert config.storage.url == f"sqlite:///{(HRNAS / 'optuna_studies.db').resolve()}"
    assert config.objective == {"tune.yml": "fine-grained", "tune_slimming.yml": "network-slimming"}[name]


def test_nnictl_example_uses_the_tuner_and_the_space_of_its_tune_config(tmp_path: Path) -> None:
    experiment = yaml.safe_load((HRNAS / "optuna_lambda.yml").read_text())
    command = experiment["trialCommand"].split()
    assert command[:2] == ["hrnas-automl", "tune-trial"]
    tune = load_tune_config(HRNAS / experiment["trialCodeDirectory"] / command[command.index("--config") + 1])
    assert tune.objective == "fine-grained"
    assert json.loads((HRNAS / experiment["searchSpaceFile"]).read_text()) == tune_search_space(tune.ranges)
    module, _, name = experiment["tuner"]["className"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    args = experiment["tuner"]["classArgs"]
    assert set(args) <= set(inspect.signature(cls.__init__).parameters)
    cls(**args, storage=f"sqlite:///{tmp_path / 'x.db'}")  # the classArgs are valid


def test_tune_command_runs_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = yaml.safe_load((HRNAS / "tune_slimming.yml").read_text())
    config.update(objective_args={"train": {"epochs": 4}, "val_size": 64}, sampler_args={"population_size": 2},
                  max_macs=4.1e5)
    path = tmp_path / "tune.yml"
    path.write_text(yaml.safe_dump(config))
    assert main(["tune", "--config", str(path), "--n-trials", "5", "--plot", str(tmp_path / "f.png")]) == 0
    out = capsys.readouterr().out  # (resuming a study: tests/tuning/test_study.py)
    assert re.findall(r"^trial (\d+) complete:", out, re.M) == ["0", "1", "2", "3", "4"]
    assert "5 finished trials" in out and (tmp_path / "f.png").stat().st_size > 5000
    assert (tmp_path / "optuna_studies.db").is_file()
    assert main(["front", "--config", str(path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["number"] for r in rows] == list(range(5)) and any(r["pareto"] for r in rows)
    assert all(r["feasible"] == (r["macs"] <= config["max_macs"]) for r in rows)


def test_tune_trial_outside_nnictl(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tune-trial", "--config", str(HRNAS / "tune_slimming.yml"),
                 "--params", "{lam: 0.02, threshold: 0.01, warmup: 1}"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["step"] for row in lines[:-1]] == list(range(6))  # one report per epoch (epochs: 6)
    assert lines[-1]["macs"] == lines[-2]["macs"] and lines[-1]["params"]["warmup"] == 1


@pytest.mark.parametrize(("argv", "message"), [
    (["tune-trial", "--config", "{tmp}/bad_args.yml", "--params", "{lam: 1, threshold: 0, warmup: 1}"],
     "objective_args: unknown key 'epochs'; allowed keys here: space, space_args, task, task_args, metric, data, "
     "train"),
    (["tune-trial", "--config", str(HRNAS / "tune_slimming.yml"), "--params", "{lam: 1}"],
     "must be a mapping with exactly the keys lam, threshold, warmup"),
    (["front", "--config", "{tmp}/t.yml"], "no study 'x': {tmp}/optuna_studies.db does not exist"),
    (["tune", "--config", "{tmp}/bad_storage.yml"], "cannot open Optuna storage 'nope://'"),
])
def test_command_errors_are_one_line(argv: list[str], message: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    base = {"study_name": "x", "n_trials": 1, "objective": "network-slimming"}
    (tmp_path / "t.yml").write_text(yaml.safe_dump(base))
    (tmp_path / "bad_storage.yml").write_text(yaml.safe_dump({**base, "storage": "nope://"}))
    bad_args = {"space": "hrnas", "data": {"kind": "shapes"}, "epochs": 2}  # epochs belongs under train:
    (tmp_path / "bad_args.yml").write_text(yaml.safe_dump({**base, "objective": "fine-grained",
                                                           "objective_args": bad_args}))
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message.replace("{tmp}", str(tmp_path)) in err and "\n" not in err
    assert not (tmp_path / "optuna_studies.db").exists()  # front reads; it creates no storage


def test_interrupted_tune_command_says_how_to_continue(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(HRNAS / "tune_slimming.yml", tmp_path)
    import hrnas_automl.tuning.study as tuning

    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(tuning, "run_study", interrupt)
    with pytest.raises(SystemExit) as info:
        main(["tune", "--config", str(tmp_path / "tune_slimming.yml")])
    assert info.value.code == 130 and "run the same command to continue" in capsys.readouterr().err


@pytest.mark.slow
def test_optuna_tuner_runs_under_nnictl(tmp_path: Path, nni_home: Path) -> None:
    """The nnictl example with network-slimming in place of fine-grained: NNI runs the trials, the
    Optuna study (in a storage named here) holds every one of them with what the trial reported."""
    import optuna

    from hrnas_automl.nni.experiment import NniExperiment, nni_env

    tune = yaml.safe_load((HRNAS / "tune_slimming.yml").read_text())
    epochs = tune["objective_args"]["train"]["epochs"]  # the example's own training: trials must differ
    (tmp_path / "tune.yml").write_text(yaml.safe_dump(tune))
    assert main(["tune-space", "--config", str(tmp_path / "tune.yml"), "-o", str(tmp_path / "lambda_space.json")]) == 0
    experiment = yaml.safe_load((HRNAS / "optuna_lambda.yml").read_text())
    storage = f"sqlite:///{tmp_path / 'nni_study.db'}"
    experiment.update(maxTrialNumber=6, trialConcurrency=2, maxExperimentDuration="10m")
    experiment["tuner"]["classArgs"].update(storage=storage, sampler_args={"population_size": 2},
                                            max_macs=tune["max_macs"])
    (tmp_path / "optuna_lambda.yml").write_text(yaml.safe_dump(experiment))
    study_name = experiment["tuner"]["classArgs"]["study_name"]

    def told() -> list[tuple[dict, list[float]]]:
        study = optuna.load_study(study_name=study_name, storage=storage)
        return [(t.params, t.values) for t in study.trials if t.state.name == "COMPLETE"]

    with NniExperiment.start(tmp_path / "optuna_lambda.yml", env=nni_env(home=nni_home)) as exp:
        trials = exp.wait(timeout=420)
        deadline = time.monotonic() + 60  # DONE may come before the dispatcher has told the last results
        while len(told()) < len(trials) and time.monotonic() < deadline:
            time.sleep(1)
    assert len(trials) == 6 and all(t.status == "SUCCEEDED" for t in trials), [(t.trial_id, t.status) for t in trials]
    stored = told()
    assert len(stored) == 6
    for t in trials:  # each NNI trial is in the study with the parameters it ran and the result it reported
        assert set(t.arch) == {"lam", "threshold", "warmup"}
        assert [row["step"] for row in t.intermediate] == list(range(epochs))
        assert (t.arch, [t.metrics["default"], t.metrics["macs"]]) in stored
    # a search with signal (issue 18 item 6): the λs' accuracies differ, the best is above chance (4 classes: 0.25),
    # and some trial is within the study's max_macs, so its front is not empty
    scores = [t.metrics["default"] for t in trials]  # (6 trials: here the first 4 all scored 0.25)
    assert max(scores) - min(scores) >= SPREAD and max(scores) >= 0.25 + ABOVE_CHANCE, scores
    assert any(t.metrics["macs"] <= tune["max_macs"] for t in trials), [t.metrics["macs"] for t in trials]
