"""OptunaTuner driven the way NNI's dispatcher drives it (no manager): ask through generate_parameters,
tell through receive_trial_result / trial_end, everything kept in the Optuna storage."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from hrnas_automl.arch import choices_of, validate_arch
from hrnas_automl.nni.compat import to_nni_search_space
from hrnas_automl.nni.optuna_tuner import OptunaTuner, to_optuna_distributions
from hrnas_automl.tuning.study import CONSTRAINT_KEY, MACS_ATTR, front_trials, plot_front
from hrnas_automl.tuning.slimming import tuning_objective
from hrnas_automl.tuning.config import TuneRanges, tune_search_space

RANGES = TuneRanges.model_validate({"lam": {"low": 1e-3, "high": 2e-1, "log": True},
                                    "threshold": {"low": 1e-3, "high": 5e-2, "log": True},
                                    "warmup": {"low": 0, "high": 2}})
SLIM = tuning_objective(train={"epochs": 4}, val_size=64)


def slimming_result(params: dict[str, Any]) -> dict[str, float]:
    """What `hrnas-automl tune-trial` reports: the real objective's final metric and MACs."""
    result = SLIM(params, lambda *a: None)
    return {"default": result.metric, "macs": result.macs}


def drive(tuner: OptunaTuner, n_trials: int, concurrency: int, result: Any = slimming_result) -> list[dict]:
    """Keep `concurrency` trials running; finish the oldest, then request one more, as the NNI manager does."""
    tuner.update_search_space(tune_search_space(RANGES))
    running = [(i, tuner.generate_parameters(i)) for i in range(concurrency)]
    sent = list(running)
    while running:
        pid, params = running.pop(0)
        value = result(params)
        if value is not None:
            tuner.receive_trial_result(pid, params, value)
        tuner.trial_end(pid, value is not None)
        if len(sent) < n_trials:
            nxt = len(sent)
            sent.append((nxt, tuner.generate_parameters(nxt)))
            running.append(sent[-1])
    return [p for _, p in sent]


def storage(tmp_path: Path, name: str = "s.db") -> str:
    return f"sqlite:///{tmp_path / name}"


def test_multi_objective_nsga2_through_the_dispatcher_calls(tmp_path: Path) -> None:
    tuner = OptunaTuner(study_name="lam", storage=storage(tmp_path), seed=0, sampler_args={"population_size": 4})
    params = drive(tuner, n_trials=8, concurrency=2)
    assert len(params) == 8 and not tuner.pending
    for p in params:
        assert set(p) == {"lam", "threshold", "warmup"} and isinstance(p["warmup"], int)
        assert RANGES.lam.low <= p["lam"] <= RANGES.lam.high and 0 <= p["warmup"] <= 2
    study = tuner.study
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert [t.params for t in done] == params
    for t in done:  # what the trial reported, as (metric, MACs)
        assert t.values == list(slimming_result(t.params).values())
    assert {t.number for t in front_trials(study)} == {t.number for t in study.best_trials}
    assert plot_front(study, tmp_path / "nni_front.png").stat().st_size > 5000
    again = OptunaTuner(study_name="lam", storage=storage(tmp_path, "other.db"), seed=0,
                        sampler_args={"population_size": 4})
    assert drive(again, n_trials=8, concurrency=2) == params  # same seed, same suggestions


def test_single_objective_tpe_takes_scalar_results(tmp_path: Path) -> None:
    tuner = OptunaTuner(study_name="tpe", storage=storage(tmp_path), objectives="metric", seed=1,
                        sampler_args={"n_startup_trials": 3})
    params = drive(tuner, n_trials=6, concurrency=1, result=lambda p: -abs(math.log10(p["lam"]) + 2))
    assert [t.value for t in tuner.study.trials] == [-abs(math.log10(p["lam"]) + 2) for p in params]
    assert tuner.study.best_value == max(t.value for t in tuner.study.trials)


def test_failed_and_malformed_trials_are_told_as_fail(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tuner = OptunaTuner(study_name="fail", storage=storage(tmp_path), seed=0, sampler_args={"population_size": 2})
    results = iter([None, {"default": 0.5}, {"default": 0.7, "macs": 1e5}, None, {"default": 0.6, "macs": 2e5}])
    drive(tuner, n_trials=5, concurrency=2, result=lambda p: next(results))
    states = [t.state.name for t in tuner.study.trials]
    assert states == ["FAIL", "FAIL", "COMPLETE", "FAIL", "COMPLETE"] and not tuner.pending
    assert "lacks ['default', 'macs']" in caplog.text  # the malformed result names the fix


def test_result_arriving_after_trial_end_is_still_told(tmp_path: Path) -> None:
    tuner = OptunaTuner(study_name="late", storage=storage(tmp_path), objectives="metric", seed=0)
    tuner.update_search_space(tune_search_space(RANGES))
    params = tuner.generate_parameters(7)
    tuner.trial_end(7, True)  # the manager's messages may cross
    tuner.receive_trial_result(7, params, {"default": 0.4, "macs": 1.0})
    assert [(t.state, t.value) for t in tuner.study.trials] == [(TrialState.COMPLETE, 0.4)] and not tuner.pending


def test_budget_constraint_and_resume_on_the_same_study(tmp_path: Path) -> None:
    args = dict(study_name="budget", storage=storage(tmp_path), seed=0, max_macs="4.0e5",  # YAML gives a string
                sampler_args={"population_size": 4})
    first = OptunaTuner(**args)
    drive(first, n_trials=6, concurrency=2)
    before = [(t.number, t.params, t.values) for t in first.study.trials]
    resumed = OptunaTuner(**args)  # nnictl resume / a new experiment with the same study_name
    resumed.update_search_space(tune_search_space(RANGES))
    pid = 100
    p = resumed.generate_parameters(pid)
    resumed.receive_trial_result(pid, p, slimming_result(p))
    trials = resumed.study.trials
    assert [(t.number, t.params, t.values) for t in trials[:6]] == before and trials[6].number == 6
    assert p not in [params for _, params, _ in before]
    over = [t for t in trials if t.user_attrs[MACS_ATTR] > 4e5]
    assert over and len(over) < len(trials)
    for t in trials:
        assert t.constraints[CONSTRAINT_KEY] == pytest.approx(t.user_attrs[MACS_ATTR] - 4e5)
    assert all(t.user_attrs[MACS_ATTR] <= 4e5 for t in resumed.study.best_trials)


def test_architecture_space_through_the_tuner(tmp_path: Path) -> None:
    choices = choices_of("detnas-small")
    tuner = OptunaTuner(study_name="arch", storage=storage(tmp_path), objectives="metric", seed=0)
    tuner.update_search_space(to_nni_search_space(choices))
    arch = tuner.generate_parameters(0)
    assert validate_arch(arch, choices, "detnas-small") == arch
    tuner.receive_trial_result(0, arch, {"default": 0.3})
    assert tuner.study.trials[0].state == TrialState.COMPLETE


def test_search_space_conversion() -> None:
    space = tune_search_space(RANGES) | {"skip": {"_type": "choice", "_value": [[0], [1]]}}
    dists, by_index = to_optuna_distributions(json.loads(json.dumps(space)))
    assert dists["lam"].log and (dists["lam"].low, dists["lam"].high) == (RANGES.lam.low, RANGES.lam.high)
    assert (dists["warmup"].low, dists["warmup"].high) == (0, 2)  # NNI randint excludes its upper bound
    assert by_index == {"skip": [[0], [1]]} and dists["skip"].choices == (0, 1)
    with pytest.raises(ValueError, match="key 'x' has _type 'normal'; supported: choice"):
        to_optuna_distributions({"x": {"_type": "normal", "_value": [0, 1]}})


def test_bad_class_args_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_macs must be a number, got 'lots'"):
        OptunaTuner(study_name="x", storage=storage(tmp_path), max_macs="lots")
    with pytest.raises(ValueError, match="objectives must be 'metric\\+macs' or 'metric', got 'macs'"):
        OptunaTuner(study_name="x", storage=storage(tmp_path), objectives="macs")
    with pytest.raises(ValueError, match="unknown sampler 'cmaes'; samplers: nsga2, tpe, random"):
        OptunaTuner(study_name="x", storage=storage(tmp_path), sampler="cmaes")
    assert not (tmp_path / "s.db").exists()  # building the tuner (as `search` does to check it) opens no storage
    OptunaTuner(study_name="x", storage=storage(tmp_path)).update_search_space(tune_search_space(RANGES))
    with pytest.raises(ValueError, match="optimizes \\['maximize', 'minimize'\\].*use another study_name"):
        OptunaTuner(study_name="x", storage=storage(tmp_path), objectives="metric").update_search_space({})


def test_default_study_is_named_after_the_experiment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # NNI's dispatcher process has no nni.get_experiment_id(): the id is the name of the experiment's folder
    (tmp_path / "abc123" / "checkpoint").mkdir(parents=True)
    monkeypatch.setenv("NNI_CHECKPOINT_DIRECTORY", str(tmp_path / "abc123" / "checkpoint"))
    monkeypatch.setenv("NNI_LOG_DIRECTORY", str(tmp_path / "abc123" / "log"))
    tuner = OptunaTuner(objectives="metric")
    tuner.update_search_space(tune_search_space(RANGES))
    assert tuner.study.study_name == "nni-abc123" and (tmp_path / "abc123" / "log").is_dir()
    monkeypatch.delenv("NNI_CHECKPOINT_DIRECTORY")
    with pytest.raises(ValueError, match="needs a study_name outside an nnictl experiment"):
        OptunaTuner(objectives="metric").update_search_space({})



def test_no_two_trials_build_one_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hrnas_automl.spaces.lite_hrnet import canonical_arch
    from hrnas_automl.strategies import SpaceExhaustedError
    from tests.strategies.test_strategies import SMALL_LITE_HRNET  # 512 samples, 12 networks

    tuner = OptunaTuner(study_name="lite", storage=storage(tmp_path), objectives="metric", sampler="tpe", seed=0,
                        space="lite-hrnet")
    tuner.update_search_space(to_nni_search_space(SMALL_LITE_HRNET))
    archs = []
    for pid in range(8):
        archs.append(tuner.generate_parameters(pid))
        tuner.receive_trial_result(pid, archs[-1], {"default": sum(v == "ccw" for v in archs[-1].values()) / 20})
    assert len({json.dumps(canonical_arch(a), sort_keys=True) for a in archs}) == 8
    skipped = tuner.study.get_trials(states=(TrialState.FAIL,))
    assert skipped and all(t.user_attrs["duplicate_of"] < t.number for t in skipped)  # told, never run
    one = {**{label: values[:1] for label, values in SMALL_LITE_HRNET.items()}, "s3_m2": ["naive", "ccw"]}
    tuner = OptunaTuner(study_name="one", storage=storage(tmp_path), objectives="metric", sampler="random",
                        space="lite-hrnet")
    tuner.update_search_space(to_nni_search_space(one))  # 2 samples, 1 network
    tuner.receive_trial_result(0, tuner.generate_parameters(0), 0.5)
    monkeypatch.setattr("hrnas_automl.nni.optuna_tuner._MAX_ASKS", 5)  # 100 under nnictl; each ask writes the storage
    with pytest.raises(SpaceExhaustedError, match="5 networks in a row that its trials already have"):
        tuner.generate_parameters(1)
