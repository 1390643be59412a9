"""Optuna trials under torchrun: one process as rank 0 alone, and two gloo ranks under torchrun (slow), where rank 0
asks, broadcasts, reports, decides pruning for both and alone tells."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hrnas_automl.nni.experiment import free_port
from hrnas_automl.tuning.distributed import DistributedTrial, optimize_distributed

WORKER = Path(__file__).with_name("ddp_worker.py")


def test_without_a_process_group_it_is_an_ordinary_study() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0),
                                pruner=optuna.pruners.ThresholdPruner(upper=0.5))

    def objective(trial: DistributedTrial) -> float:
        trial.report(trial.params["x"], 0)
        if trial.should_prune():
            raise optuna.TrialPruned()
        return trial.params["x"]

    outcomes = optimize_distributed(study, objective, {"x": FloatDistribution(0, 1)}, n_trials=6)
    assert [(t.number, t.state.name.lower()) for t in study.trials] == [(n, s) for n, s, _ in outcomes]
    complete = [t.value for t in study.trials if t.state == TrialState.COMPLETE]
    assert complete == [v for _, s, v in outcomes if s == "complete"]
    assert {s for _, s, _ in outcomes} == {"complete", "pruned"}
    assert all((v <= 0.5) == (s == "complete") for s, v in ((t.state.name.lower(), t.params["x"])
                                                          for t in study.trials))


def test_a_failing_objective_fails_the_trial_and_raises_one_line() -> None:
    study = optuna.create_study()

    def objective(_trial: DistributedTrial) -> float:
        raise ZeroDivisionError("division by zero")

    with pytest.raises(RuntimeError, match=r"^trial 0 failed on rank\(s\) \[0\]: rank 0: ZeroDivisionError: division"):
        optimize_distributed(study, objective, {"x": FloatDistribution(0, 1)}, n_trials=2)
    assert [t.state for t in study.trials] == [TrialState.FAIL]
    with pytest.raises(ValueError, match="rank 0 needs the study"):
        optimize_distributed(None, objective, {}, n_trials=1)


@pytest.mark.slow
def test_two_gloo_ranks_share_each_trial(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'ddp.db'}"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                          "--master-port", str(free_port()), str(WORKER), storage, str(tmp_path)],
                         capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["trials"] == ranks[1]["trials"]  # the same parameters, outcomes and values on both ranks
    assert ranks[0]["told"] == [0, 1, 2] and ranks[1]["told"] == []  # only rank 0 told the study
    trials = optuna.load_study(storage=storage, study_name="ddp").trials
    seen = ranks[0]["trials"]
    assert [t.params for t in trials] == [row["params"] for row in seen] == [{"lr": lr} for lr in (0.05, 3.0, 0.2)]
    assert [t.state.name.lower() for t in trials] == [row["state"] for row in seen] == [
        "complete", "pruned", "complete"]
    assert [trials[0].value, trials[2].value] == [seen[0]["value"], seen[2]["value"]] and seen[1]["value"] is None
    assert [t.intermediate_values for t in trials] == [{step: v for step, v in row["reported"]} for row in seen]
    assert len(seen[1]["reported"]) < 4 and seen[1]["reported"][-1][1] > 50.0  # stopped where it crossed 50



def test_an_error_of_rank_0s_optuna_trial_fails_the_trial_on_every_rank() -> None:
    """report() on a multi-objective study raises in Optuna; the error waits for should_prune, the next call every
    rank makes, and fails the trial there."""
    study = optuna.create_study(directions=["maximize", "minimize"])

    def objective(trial: DistributedTrial) -> list[float]:
        trial.report(0.5, 0)
        trial.should_prune()
        return [0.5, 1.0]

    with pytest.raises(RuntimeError, match=r"trial 0 failed on rank\(s\) \[0\]: rank 0: NotImplementedError"):
        optimize_distributed(study, objective, {"x": FloatDistribution(0, 1)}, n_trials=1)
    assert [t.state for t in study.trials] == [TrialState.FAIL]
    (outcome,) = optimize_distributed(study, lambda t: [t.params["x"], 1.0], {"x": FloatDistribution(0, 1)}, 1)
    assert outcome[1] == "complete" and study.trials[1].values == outcome[2]  # multi-objective, without report
