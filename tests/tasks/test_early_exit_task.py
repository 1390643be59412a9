"""The early-exit trial task: a RANet sample trained through the trial entry point reports its anytime curve
(one accuracy and one cumulative MACs per exit), its budgeted accuracy as ``default``, and the full network's
MACs; its task_args are checked with one-line errors; thresholds are fitted on data held out of training."""
from __future__ import annotations

import pytest
import torch
import yaml

from hrnas_automl.arch import freeze
from hrnas_automl.data import TensorImageDataset
from hrnas_automl.spaces.ranet import exit_macs
from hrnas_automl.tasks import get_task, task_names
from hrnas_automl.tasks.early_exit import early_exit_costs
from hrnas_automl.tasks.early_exit_task import EarlyExitOptions, hold_out
from hrnas_automl.trial import run_trial
from hrnas_automl.config import ConfigError
from hrnas_automl.trial.config import parse_trial_config

# The smallest sample of the space (3 scales, 1 block step): 4 exits, 13.5M MACs at 32x32.
ARCH = {"n_scales": 3, "n_channels": 8, "growth_rate": 4, "gr_factor": "4-2-1-1", "bn_factor": "4-2-1-1",
        "block_step": 1, "step": 2, "step_mode": "even"}
CONFIG = {"space": "ranet", "task": "early-exit",
          "data": {"kind": "synthetic", "num_classes": 4, "image_size": 32, "train_size": 80, "val_size": 32},
          "train": {"epochs": 1, "batch_size": 32, "lr": 0.05, "seed": 0},
          "latency": {"enabled": False}}


def test_task_is_registered_for_the_exits_head() -> None:
    assert "early-exit" in task_names()
    task = get_task("early-exit")
    assert (task.head, task.metric) == ("exits", "budgeted_accuracy")


@pytest.mark.parametrize(("task_args", "message"), [
    ({"budget": 0.5}, r"unknown option 'budget' of task 'early-exit'; options: budget_fraction, budget_macs"),
    ({"method": "grid"}, r"method must be one of geometric, optuna, got 'grid'"),
    ({"budget_fraction": 1.5}, r"budget_fraction must be a number in \(0, 1\], got 1.5"),
    ({"budget_macs": -3}, r"budget_macs must be a positive number of MACs per image, got -3"),
    ({"budget_macs": "lots"}, r"budget_macs must be a number, got 'lots'; write e.g. 6900000 or 6.9e\+6"),
    ({"holdout": 1}, r"holdout must be a number strictly between 0 and 1, got 1"),
    ({"optuna_trials": 0}, r"optuna_trials must be an integer >= 1, got 0"),
    ({"exit_weights": "1,1"}, r"exit_weights must be a list of non-negative numbers"),
])
def test_task_args_errors_are_one_line(task_args: dict, message: str) -> None:
    """Every bad task_args value is one line; budgets read through the one parser (parse_number)."""
    with pytest.raises(ConfigError, match=message) as info:
        parse_trial_config({**CONFIG, "task_args": task_args}, "trial.yml")
    assert "\n" not in str(info.value) and str(info.value).startswith("trial.yml: task_args: ")


def test_a_budget_yaml_leaves_a_string_is_read_as_its_number() -> None:
    options = yaml.safe_load("budget_macs: 6.9e6")  # no sign in the exponent: YAML 1.1 keeps it a string
    config = parse_trial_config({**CONFIG, "task_args": options})
    assert options == {"budget_macs": "6.9e6"} and EarlyExitOptions.from_mapping(config.task_args).budget_macs == 6.9e6


def test_a_space_without_exits_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"space detnas-small has no 'exits' head, which task 'early-exit' needs"):
        parse_trial_config({**CONFIG, "space": "detnas-small"})


def test_hold_out_is_a_seeded_partition() -> None:
    dataset = TensorImageDataset(torch.zeros(50, 1, 2, 2), torch.arange(50))
    train, held = hold_out(dataset, 0.2, seed=3)
    train_ids, held_ids = {int(dataset[i][1]) for i in train.indices}, {int(dataset[i][1]) for i in held.indices}
    assert len(held_ids) == 10 and len(train_ids) == 40 and not train_ids & held_ids
    assert hold_out(dataset, 0.2, seed=3)[1].indices == held.indices
    assert hold_out(dataset, 0.2, seed=4)[1].indices != held.indices
    with pytest.raises(ValueError, match="leaves an empty part"):
        hold_out(dataset, 0.001, seed=0)


@pytest.fixture(scope="module")
def trial():
    config = parse_trial_config({**CONFIG, "task_args": {"budget_fraction": 0.6, "method": "optuna",
                                                         "optuna_trials": 20}})
    epochs: list[dict] = []
    return run_trial(config, ARCH, report_intermediate=epochs.append), epochs


def test_trial_reports_anytime_curve_and_budgeted_accuracy(trial) -> None:
    result, epochs = trial
    metrics = result.metrics
    net = freeze("ranet", ARCH, num_classes=4, head="exits")
    costs = early_exit_costs(net, (3, 32, 32))
    assert [metrics[f"exit{k}_macs"] for k in range(1, 5)] == exit_macs(net, (3, 32, 32))
    assert "exit5_macs" not in metrics
    assert all(0 <= metrics[f"exit{k}_accuracy"] <= 1 for k in range(1, 5))
    assert metrics["accuracy"] == metrics["exit4_accuracy"]
    # ptflops runs the list-output network whole: every sub-network and every exit head.
    assert metrics["macs"] == costs[-1]
    assert metrics["budget_macs"] == pytest.approx(0.6 * costs[-1])
    assert metrics["default"] == metrics["budgeted_accuracy"] and metrics["budget_met"] == 1
    assert costs[0] <= metrics["budgeted_macs"] <= costs[-1]
    assert all(isinstance(v, (int, float)) for v in metrics.values())  # flat numbers only, as NNI wants
    assert [row["epoch"] for row in epochs] == [0] and epochs[0]["default"] == metrics["default"]


def test_a_budget_below_the_first_exit_ranks_last() -> None:
    config = parse_trial_config({**CONFIG, "task_args": {"budget_macs": 1000}})
    metrics = run_trial(config, ARCH).metrics
    assert (metrics["budget_met"], metrics["budgeted_accuracy"]) == (0, 0.0)
    assert metrics["exit1_accuracy"] >= 0  # the anytime curve is still reported
