"""Optuna studies over {lam, threshold, warmup}: the real network-slimming objective, resume, budget,
pruning, seeding, plotting; and suggest_architecture on registered spaces."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from hrnas_automl.arch import choices_of, validate_arch
from hrnas_automl.cli import main
from hrnas_automl.tuning.study import (CONSTRAINT_KEY, MACS_ATTR, METRIC_ATTR, front_figure, front_trials, load_study,
                                        plot_front, run_study, suggest_architecture, suggest_choices)
from hrnas_automl.tuning.slimming import tuning_objective
from hrnas_automl.config import ConfigError
from hrnas_automl.tuning.config import TuneConfig, parse_tune_config
from hrnas_automl.tuning.objectives import TuneParams, TuneResult, make_objective

optuna.logging.set_verbosity(optuna.logging.WARNING)

SLIM = {"train": {"epochs": 4}, "val_size": 64}  # ~0.3 s per trial on one thread
RANGES = {"lam": {"low": 1e-3, "high": 2e-1, "log": True}, "threshold": {"low": 1e-3, "high": 5e-2, "log": True},
          "warmup": {"low": 0, "high": 2}}


def config_data(**overrides: Any) -> dict[str, Any]:
    """A tune config as its YAML file holds it."""
    return {"study_name": "s", "n_trials": 8, "objective": "network-slimming", "objective_args": SLIM,
            "ranges": RANGES, "sampler_args": {"population_size": 4}, **overrides}


def config(tmp_path: Path, **overrides: Any) -> TuneConfig:
    """That config read as from a file in ``tmp_path`` (its study storage: ``tmp_path/optuna_studies.db``)."""
    return parse_tune_config(config_data(**overrides), "test", tmp_path)


def rows(study: optuna.Study) -> list[tuple[int, str, dict, Any]]:
    return [(t.number, t.state.name, t.params, t.values) for t in study.trials]


def test_multi_objective_study_reaches_its_trials_and_plots_the_front(tmp_path: Path) -> None:
    cfg = config(tmp_path, n_trials=9)
    study = run_study(cfg)
    assert cfg.storage.url == f"sqlite:///{tmp_path.resolve() / 'optuna_studies.db'}"
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 9
    for t in done:  # values are (metric, MACs) and each trial recorded one step per epoch
        assert t.values == [t.user_attrs[METRIC_ATTR], t.user_attrs[MACS_ATTR]]
        assert [s["step"] for s in t.user_attrs["steps"]] == [0, 1, 2, 3]
        assert t.user_attrs["steps"][-1][MACS_ATTR] == t.values[1]
    front = front_trials(study)
    assert {t.number for t in front} == {t.number for t in study.best_trials}  # same front as Optuna's own
    fig = front_figure(study, metric_name="accuracy")
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("MACs", "accuracy")
    assert sum(len(c.get_offsets()) for c in ax.collections) == 9  # one point per complete trial
    png = plot_front(study, tmp_path / "front.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_interrupted_study_resumes_without_losing_finished_trials(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Interrupted in its 5th trial, the study keeps the 4 finished ones; `hrnas-automl tune` run again (as after a
    new start) goes on to the target without touching them; a further run adds nothing. (kill -9: test_workers.)"""
    overrides = {"n_trials": 6, "sampler": "tpe", "objectives": "metric", "sampler_args": {"n_startup_trials": 3}}
    cfg = config(tmp_path, **overrides)
    (tmp_path / "tune.yml").write_text(yaml.safe_dump(config_data(**overrides)))
    real = make_objective("network-slimming", SLIM)
    calls = 0

    def interrupted_after_4(params: TuneParams, report: Any) -> TuneResult:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise KeyboardInterrupt
        return real(params, report)

    with pytest.raises(KeyboardInterrupt):
        run_study(cfg, interrupted_after_4)
    before = rows(load_study(cfg))
    assert [state for _, state, _, _ in before] == ["COMPLETE"] * 4 + ["FAIL"]
    assert main(["tune", "--config", str(tmp_path / "tune.yml")]) == 0  # same name, same storage
    out = capsys.readouterr().out
    assert re.findall(r"^trial (\d+) (?:complete|pruned):", out, re.M) == ["5", "6"]  # went on after the FAIL
    assert "6 finished trials" in out
    study = load_study(cfg)
    after = rows(study)
    assert after[:5] == before  # finished trials kept as they were
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 6
    assert after[5][2] == before[4][2]  # the interrupted trial's replacement draws what it drew (same seed key)
    assert {tuple(p.items()) for _, _, p, _ in after[5:]}.isdisjoint({tuple(p.items()) for _, _, p, _ in before[:4]})
    assert rows(run_study(cfg)) == after  # the target is reached: a third run adds nothing


def test_budget_marks_over_budget_trials_infeasible(tmp_path: Path) -> None:
    full = tuning_objective(**SLIM).macs(SLIM.get("widths", (16, 32)))
    budget = 0.6 * full
    study = run_study(config(tmp_path, n_trials=8, max_macs=budget, sampler="random", sampler_args={}))
    done = study.get_trials(states=(TrialState.COMPLETE,))
    over = [t for t in done if t.user_attrs[MACS_ATTR] > budget]
    under = [t for t in done if t.user_attrs[MACS_ATTR] <= budget]
    assert over and under  # the ranges straddle the budget
    for t in done:
        assert t.constraints == {CONSTRAINT_KEY: pytest.approx(t.user_attrs[MACS_ATTR] - budget)}
    assert {t.number for t in study.best_trials} <= {t.number for t in under}
    assert {t.number for t in front_trials(study)} <= {t.number for t in under}


def stand_in(params: TuneParams, report: Any) -> TuneResult:
    """Test stand-in (deterministic, not a model): the metric peaks at lam = 1e-2 and grows per step."""
    distance = abs(math.log10(params["lam"]) + 2)
    for step in range(5):
        report(step, step - distance, 100.0)
    return TuneResult(4 - distance, 100.0)


def test_median_pruner_stops_hopeless_trials_in_single_objective_mode(tmp_path: Path) -> None:
    cfg = config(tmp_path, n_trials=12, objectives="metric", sampler="random", sampler_args={},
                 ranges={"lam": {"low": 1e-4, "high": 1.0, "log": True}},
                 pruner_args={"n_startup_trials": 3, "n_warmup_steps": 1})
    study = run_study(cfg, stand_in)
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert pruned and len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 12
    for t in pruned:  # stopped after step 1, and worse there than the median of earlier trials
        assert len(t.user_attrs["steps"]) < 5
        assert abs(math.log10(t.params["lam"]) + 2) > min(abs(math.log10(o.params["lam"]) + 2)
                                                          for o in study.trials[:t.number])


def test_multi_objective_reports_but_never_prunes(tmp_path: Path) -> None:
    study = run_study(config(tmp_path, n_trials=6, ranges={"lam": {"low": 1e-4, "high": 1.0, "log": True}}),
                      stand_in)
    assert all(t.state == TrialState.COMPLETE and len(t.user_attrs["steps"]) == 5 for t in study.trials)


def test_same_seed_same_suggestions(tmp_path: Path) -> None:
    def params(seed: int, where: str) -> list[dict]:
        (tmp_path / where).mkdir()
        cfg = config(tmp_path / where, n_trials=6, seed=seed, sampler="tpe", objectives="metric",
                     sampler_args={"n_startup_trials": 2})
        return [t.params for t in run_study(cfg, stand_in).trials]

    assert params(3, "a") == params(3, "b")
    assert params(3, "a2") != params(4, "c")


def test_stored_study_with_other_objectives_is_refused(tmp_path: Path) -> None:
    run_study(config(tmp_path, n_trials=1), stand_in)
    with pytest.raises(ValueError, match=r"study 's' .* optimizes \['maximize', 'minimize'\], "
                                         r"but \['maximize'\] was asked for; use another study_name"):
        run_study(config(tmp_path, n_trials=1, objectives="metric"), stand_in)


def test_larger_lambda_gives_fewer_macs() -> None:
    objective = tuning_objective(**SLIM)
    macs = [objective({"lam": lam, "threshold": 1e-2, "warmup": 0}, lambda *a: None).macs for lam in (0.01, 0.02, 0.05)]
    assert macs[0] > macs[1] > macs[2]
    assert macs[0] <= objective.macs((16, 32))


@pytest.mark.parametrize(("data", "message"), [
    ({"n_trials": 2, "objective": "network-slimming"}, "missing required key 'study_name'"),
    ({"study_name": "s", "n_trials": 2, "objective": "nope"},
     "unknown objective 'nope'; registered objectives: fine-grained"),
    ({"study_name": "s", "n_trials": 2, "objective": "network-slimming", "pruner": "median"},
     "prunes single-objective studies only"),
    ({"study_name": "s", "n_trials": 2, "objective": "network-slimming", "ranges": {"lam": {"low": 0, "high": 1,
                                                                                         "log": True}}},
     "a log range needs low > 0"),
    ({"study_name": "s", "n_trials": 2, "objective": "network-slimming", "sampler": "cma"}, "sampler: Input should be"),
    ({"study_name": "s", "n_trials": 2, "objective": "network-slimming", "ranges": {"lr": {}}},
     "unknown key 'ranges.lr'; allowed keys here: lam, threshold, warmup"),
])
def test_bad_configs_are_one_line_errors(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_tune_config(data)
    assert "\n" not in str(info.value)


def test_objective_lookup_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match="objective_args of 'network-slimming': .*unexpected keyword argument 'depth'"):
        make_objective("network-slimming", {"depth": 3})
    with pytest.raises(ValueError, match="objective_args of 'network-slimming': .*unexpected keyword argument 'epoch'"):
        make_objective("network-slimming", {"train": {"epoch": 3}})
    with pytest.raises(ValueError, match=r"train\.lr must be > 0, got 0"):
        make_objective("network-slimming", {"train": {"lr": 0}})


def test_slimming_train_settings_fill_in_the_objectives_own_recipe() -> None:
    objective = tuning_objective(train={"epochs": 4, "lr": 0.1})
    assert (objective.train.epochs, objective.train.lr, objective.train.batch_size, objective.train.weight_decay) == (
        4, 0.1, 32, 0.0)  # what train: leaves out is DEFAULT_TRAIN's, not TrainSettings' (64 images, 4e-5)
    with pytest.raises(KeyError, match="unknown objective 'x'; registered objectives: fine-grained, network-slimming"):
        make_objective("x")


@pytest.mark.parametrize(("space", "args"), [("detnas-small", {"num_classes": 10}), ("ranet", {})])
def test_suggest_architecture_samples_valid_reproducible_archs(space: str, args: dict) -> None:
    def archs(seed: int) -> list[dict]:
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=2))
        out: list[dict] = []
        study.optimize(lambda t: out.append(suggest_architecture(t, space, **args)) or len(out), n_trials=4)
        return out

    first = archs(0)
    choices = choices_of(space, **args)
    assert all(validate_arch(a, choices, space) == a for a in first)
    assert len({str(a) for a in first}) > 1
    assert first == archs(0) and first != archs(1)


def test_non_scalar_candidates_are_suggested_by_index() -> None:
    choices = {"skip": [[0], [1], [0, 1]], "op": ["k3", "k5"]}
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    arch = suggest_choices(trial, choices)
    assert arch["skip"] == choices["skip"][trial.params["skip"]] and arch["op"] == trial.params["op"]
