"""A trial whose network diverges fails (exit 2, one line naming the cause) and reports no final result, so NNI
marks it FAILED instead of ranking a meaningless number."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hrnas_automl.cli import main
from hrnas_automl.registry import get_preset
from hrnas_automl.tasks.training import DivergedError
from hrnas_automl.trial import Reporter, run_trial
from hrnas_automl.trial.config import parse_trial_config

ARCH = "preset:detnas-coco-fpn-300m"
# lr 1e6: the first step's training loss is finite (about 2e10 after it), the validation loss is already NaN, and
# the second epoch's training loss is NaN
DIVERGING = {"space": "detnas-small",
             "data": {"kind": "synthetic", "num_classes": 4, "image_size": 32, "train_size": 64, "val_size": 32},
             "train": {"epochs": 2, "batch_size": 32, "lr": 1.0e6, "seed": 0},
             "latency": {"enabled": False}}


@pytest.mark.parametrize("epochs", [1, 2])
def test_a_diverged_trial_reports_nothing_and_stops_at_the_first_bad_epoch(epochs: int) -> None:
    """A finite training loss but a NaN validation loss after epoch 0: no row reaches NNI (an intermediate point
    would be plotted, a final one ranked) and a 2-epoch run does not train its second epoch."""
    config = parse_trial_config({**DIVERGING, "train": {**DIVERGING["train"], "epochs": epochs}})
    rows: list[dict] = []
    finals: list[dict] = []
    with pytest.raises(DivergedError, match=r"epoch 0 metrics are not finite \(loss=nan\)"):
        run_trial(config, dict(get_preset(ARCH.removeprefix("preset:")).arch), report_intermediate=rows.append,
                  report_final=finals.append)
    assert rows == [] and finals == []


def test_the_trial_command_exits_2_with_one_line_and_no_final(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    finals: list[dict] = []
    monkeypatch.setattr(Reporter, "final", lambda self, row: finals.append(dict(row)))
    config = tmp_path / "trial.yml"
    config.write_text(yaml.safe_dump({**DIVERGING, "train": {**DIVERGING["train"], "epochs": 1}}))
    assert main(["trial", "--config", str(config), "--arch", ARCH]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("hrnas-automl: error: the network diverged"), err
    assert finals == []
