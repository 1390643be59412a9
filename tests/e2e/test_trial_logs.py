"""A real nnictl run: each trial's log, as the web UI's "View trial log" / "View trial error" buttons fetch it
(NNI's REST ``trial-file/ID/trial.log`` and ``.../stderr``), shows its epochs, and a failing trial's its error."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import requests
import yaml

from tests import EXAMPLES
from hrnas_automl.nni.experiment import NniExperiment, free_port, nni_env

DETNAS = EXAMPLES / "detnas"


@pytest.mark.slow
def test_trial_log_shows_epochs_and_a_failing_trials_error(tmp_path: Path, nni_home: Path) -> None:
    shutil.copy(DETNAS / "search_space_small.json", tmp_path)
    trial = yaml.safe_load((DETNAS / "trial.yml").read_text())
    trial["data"].update(train_size=64, val_size=32)
    trial["train"].update(epochs=2)
    trial["latency"] = {"enabled": False}
    (tmp_path / "trial.yml").write_text(yaml.safe_dump(trial))
    # the second trial diverges (lr 1e6): it fails with one line naming the cause, as a user's broken trial would
    (tmp_path / "diverging.yml").write_text(yaml.safe_dump({**trial, "train": {**trial["train"], "lr": 1.0e6}}))
    config = yaml.safe_load((DETNAS / "random.yml").read_text())
    config.update(maxTrialNumber=2, trialConcurrency=1, maxExperimentDuration="10m",
                  trialCommand='hrnas-automl trial --config "$([ "$NNI_TRIAL_SEQ_ID" = 1 ] && echo diverging.yml '
                               '|| echo trial.yml)"')
    (tmp_path / "random.yml").write_text(yaml.safe_dump(config))
    with NniExperiment.create(tmp_path / "random.yml", port=free_port(), env=nni_env(home=nni_home)) as exp:
        trials = exp.wait(timeout=300)

        def shown(trial_id: str, name: str) -> str:  # what the web UI's button opens
            reply = requests.get(f"{exp.url}/api/v1/nni/trial-file/{trial_id}/{name}", timeout=10)
            assert reply.status_code == 200, reply.text
            return reply.text

        logs = {t.status: (shown(t.trial_id, "trial.log"), shown(t.trial_id, "stderr")) for t in trials}
    assert sorted(logs) == ["FAILED", "SUCCEEDED"], [(t.trial_id, t.status) for t in trials]
    log, err = logs["SUCCEEDED"]
    rows = [json.loads(line.split(" PRINT ", 1)[1]) for line in log.splitlines() if " PRINT {" in line]
    assert [row["epoch"] for row in rows if "epoch" in row] == [0, 1]  # one line per epoch, then the final row
    assert {"default", "loss", "train_loss"} <= set(rows[0]) and {"default", "macs"} <= set(rows[-1])
    log, err = logs["FAILED"]
    assert "hrnas-automl: error: the network diverged" in err  # "View trial error"
    assert "PRINT hrnas-automl: error: the network diverged" in log  # and in "View trial log"
