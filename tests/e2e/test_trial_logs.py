"""A real nnictl run through ``hrnas-automl search`` as ``make demo`` runs it (output into a pipe, the venv not on
PATH): the output has no ANSI escapes and no ``pkg_resources`` warning, the stop command it prints works from a
plain shell, and each trial's log, as the web UI's "View trial log" / "View trial error" buttons fetch it (NNI's
REST ``trial-file/ID/trial.log`` and ``.../stderr``), shows its epochs, and a failing trial's its error."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from tests import EXAMPLES
from hrnas_automl.nni.experiment import free_port

DETNAS = EXAMPLES / "detnas"


@pytest.mark.slow
def test_search_output_and_trial_logs_in_the_web_ui(tmp_path: Path, nni_home: Path) -> None:
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
    plain = {"HOME": str(nni_home), "PATH": "/usr/bin:/bin", "HRNAS_AUTOML_CACHE": os.environ["HRNAS_AUTOML_CACHE"]}
    port = free_port()
    bin_dir = Path(sys.executable).parent
    search = subprocess.run([str(bin_dir / "hrnas-automl"), "search", "random.yml", "--port", str(port)],
                            cwd=tmp_path, env=plain, capture_output=True, text=True, timeout=400)
    out = search.stdout + search.stderr
    experiment = re.search(r"experiment (\w+) started", out)
    try:
        assert search.returncode == 0, out
        assert "\x1b[" not in out and "pkg_resources" not in out, out
        stop = re.search(r"stop the experiment with: (.+)$", out, re.M).group(1)
        assert stop == f"{bin_dir / 'nnictl'} stop {experiment.group(1)}"

        def shown(trial_id: str, name: str) -> str:  # what the web UI's button opens
            reply = requests.get(f"http://127.0.0.1:{port}/api/v1/nni/trial-file/{trial_id}/{name}", timeout=10)
            assert reply.status_code == 200, reply.text
            return reply.text

        rows = re.findall(r"^(\w+)\s+(SUCCEEDED|FAILED) ", out, re.M)
        logs = {status: (shown(trial_id, "trial.log"), shown(trial_id, "stderr")) for trial_id, status in rows}
        stopped = subprocess.run(shlex.split(stop), env=plain, capture_output=True, text=True, timeout=120)
        assert stopped.returncode == 0 and "Stop experiment success" in stopped.stdout + stopped.stderr
    finally:
        if experiment is not None:
            subprocess.run([str(bin_dir / "nnictl"), "stop", experiment.group(1)], env=plain, capture_output=True)
    assert sorted(logs) == ["FAILED", "SUCCEEDED"], out
    log, err = logs["SUCCEEDED"]
    printed = [json.loads(line.split(" PRINT ", 1)[1]) for line in log.splitlines() if " PRINT {" in line]
    assert [row["epoch"] for row in printed if "epoch" in row] == [0, 1]  # one line per epoch, then the final row
    assert {"default", "loss", "train_loss"} <= set(printed[0]) and {"default", "macs"} <= set(printed[-1])
    log, err = logs["FAILED"]
    assert re.search(r"^hrnas-automl: error: .*diverged", err, re.M)  # "View trial error"
    assert re.search(r" PRINT hrnas-automl: error: .*diverged", log)  # and in "View trial log"
