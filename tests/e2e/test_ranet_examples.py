"""The RANet examples run as shipped (shrunk data): the Optuna threshold-tuning script writes its fits and plot,
and (slow) the nnictl random search reports the anytime curve and the budgeted accuracy of every trial."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import EXAMPLES
from hrnas_automl.cost import arch_cost
from hrnas_automl.nni.experiment import NniExperiment, nni_env
from tests.e2e.test_nnictl import ABOVE_CHANCE, SPREAD

EXAMPLES = EXAMPLES / "ranet"


def shrunk_trial(dest: Path, **task_args: object) -> Path:
    trial = yaml.safe_load((EXAMPLES / "trial.yml").read_text())
    trial["data"].update(train_size=64, val_size=32)
    trial["train"].update(epochs=1)
    trial["task_args"].update(task_args)
    trial["latency"].update(repeats=2, warmup=0)
    (dest / "trial.yml").write_text(yaml.safe_dump(trial))
    return dest / "trial.yml"


def test_tune_thresholds_example_writes_fits_and_plot(tmp_path: Path) -> None:
    config = shrunk_trial(tmp_path, holdout=0.5)
    out = tmp_path / "out"
    subprocess.run([sys.executable, str(EXAMPLES / "tune_thresholds.py"), "--config", str(config), "--budgets",
                    "0.4", "0.7", "--trials", "5", "--out", str(out)], check=True, capture_output=True, timeout=300)
    result = json.loads((out / "thresholds.json").read_text())
    costs = result["early_exit_costs"]
    assert len(costs) == len(result["anytime_accuracy"]) == 6  # small_arch.json: 2 + 2 * 2 exits
    assert [(r["method"], r["budget_macs"]) for r in result["fits"]] == [
        (m, pytest.approx(f * costs[-1])) for m in ("geometric", "optuna") for f in (0.4, 0.7)]
    for row in result["fits"]:
        assert costs[0] <= row["test_avg_macs"] <= costs[-1] and 0 <= row["test_accuracy"] <= 1
        assert row["fit_accuracy"] >= 0 and len(row["thresholds"]) == 5
    assert (out / "thresholds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_random_search_example_runs_under_nnictl(tmp_path: Path, nni_home: Path) -> None:
    """On the example's own data and budget (issue 18 item 6): every network meets the budget (none scores 0 for a
    first exit over it), the trials' ``default`` differ and the best is above chance (4 classes: 0.25)."""
    shutil.copy(EXAMPLES / "search_space.json", tmp_path)
    trial = yaml.safe_load((EXAMPLES / "trial.yml").read_text())
    trial["latency"].update(repeats=2, warmup=0)
    (tmp_path / "trial.yml").write_text(yaml.safe_dump(trial))
    config = yaml.safe_load((EXAMPLES / "random.yml").read_text())
    config.update(maxTrialNumber=3, maxExperimentDuration="10m")
    (tmp_path / "random.yml").write_text(yaml.safe_dump(config))
    with NniExperiment.start(tmp_path / "random.yml", env=nni_env(home=nni_home)) as exp:
        trials = exp.wait(timeout=420)
    assert len(trials) == 3 and all(t.status == "SUCCEEDED" for t in trials), [(t.trial_id, t.status) for t in trials]
    for t in trials:
        n_exits = sum(1 for key in t.metrics if key.endswith("_macs") and key.startswith("exit"))
        assert n_exits >= 4 and all(f"exit{k}_accuracy" in t.metrics for k in range(1, n_exits + 1))
        assert t.metrics["default"] == t.metrics["budgeted_accuracy"] and t.metrics["budget_met"] == 1
        assert t.metrics["macs"] == arch_cost("ranet", t.arch, (3, 32, 32), num_classes=4).macs  # this arch's metrics
        assert t.metrics["macs"] <= config["tuner"]["classArgs"]["max_macs"]
    scores = [t.metrics["default"] for t in trials]
    assert max(scores) - min(scores) >= SPREAD and max(scores) >= 0.25 + ABOVE_CHANCE, scores
