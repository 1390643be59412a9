"""NNI's experiment database read without a manager: trials joined on parameterId, by id or folder, and the
strategy each tuner config stands for."""
from __future__ import annotations

from pathlib import Path

import pytest

from hrnas_automl.nni.database import read_experiment
from tests.nni.nni_db import write_experiment

STRATEGY_TUNER = {"className": "hrnas_automl.nni.StrategyTuner", "classArgs": {"strategy": "evolution", "seed": 3}}


@pytest.mark.parametrize(("tuner", "expected"), [
    (STRATEGY_TUNER, ("evolution", 3)),
    ({"className": "hrnas_automl.nni.StrategyTuner", "classArgs": {"space": "detnas-small"}}, ("random", None)),
    ({"name": "TPE", "classArgs": {"optimize_mode": "maximize", "seed": 1}}, ("tpe", 1)),
    ({"className": "hrnas_automl.nni.optuna_tuner.OptunaTuner", "classArgs": {"seed": 2}}, ("optuna-nsga2", 2)),
    ({"className": "hrnas_automl.nni.optuna_tuner.OptunaTuner", "classArgs": {"objectives": "metric"}},
     ("optuna-tpe", None)),
    ({"className": "my.OwnTuner"}, ("OwnTuner", None)),
])
def test_strategy_of_a_tuner_config(tuner: dict, expected: tuple, tmp_path: Path) -> None:
    folder = write_experiment(tmp_path, "e1", tuner, [({"a": 1}, {"default": 0.5})])
    assert read_experiment(folder).strategy == expected


def test_trials_by_id_or_folder_with_metrics_joined_on_parameter_id(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    folder = write_experiment(tmp_path / "nni-experiments", "e2", {"name": "Random"},
                              [({"a": 1}, {"default": 0.5, "macs": 3}), ({"a": 2}, None), ({"a": 3}, {"default": 0.9})])
    by_id, by_folder = read_experiment("e2"), read_experiment(folder)
    assert by_id == by_folder and by_id.id == "e2" and by_id.maximize
    assert [(t.trial_id, t.params["a"], t.status) for t in by_id.trials] == [
        ("T0", 1, "SUCCEEDED"), ("T1", 2, "FAILED"), ("T2", 3, "SUCCEEDED")]
    assert [t.metrics for t in by_id.trials] == [{"default": 0.5, "macs": 3}, None, {"default": 0.9}]
    assert by_id.trials[2].final_ms - by_id.trials[0].start_ms == 30_000
    with pytest.raises(ValueError, match=r"no NNI experiment 'e3' \(.*e3/db/nni.sqlite does not exist\)"):
        read_experiment("e3")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty is not an NNI experiment folder \(no db/nni.sqlite in it\)"):
        read_experiment(tmp_path / "empty")
