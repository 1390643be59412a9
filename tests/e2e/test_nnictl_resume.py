"""Real nnictl runs (issue 17): ``nnictl stop`` + ``nnictl resume`` of an evolution search proposes what the
uninterrupted run does, and ``hrnas-automl search`` ends at once, with the tuner's error, when its tuner dies."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml

from bench.nnictl_resume import compare
from hrnas_automl.arch import choices_of
from hrnas_automl.cli import main
from hrnas_automl.nni.compat import to_nni_search_space
from hrnas_automl.nni.experiment import free_port, port_is_free


@pytest.mark.slow
def test_stopped_and_resumed_evolution_proposes_what_an_uninterrupted_run_does(tmp_path: Path) -> None:
    result = compare("evolution", trials=6, stop_after=3, root=tmp_path)  # stopped within generation 1
    assert result["trials_before_stop"] >= 3 and result["trials_after_resume"] == 6 - result["trials_before_stop"]
    assert result["equal_proposals_after_resume"] == result["trials_after_resume"] and result["all_proposals_equal"]


@pytest.mark.slow
def test_search_ends_at_once_with_the_error_of_a_tuner_that_died(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # a real mistake: the search space file is of another space than the tuner's (valid classArgs: the tuner is
    # built fine before nnictl starts, and dies on the search space NNI sends it)
    (tmp_path / "search_space.json").write_text(json.dumps(to_nni_search_space(choices_of("detnas-large"))))
    (tmp_path / "config.yml").write_text(yaml.safe_dump({
        "searchSpaceFile": "search_space.json", "trialCommand": "true", "trialCodeDirectory": ".",
        "trialConcurrency": 1, "maxTrialNumber": 2, "trainingService": {"platform": "local"},
        "tuner": {"className": "hrnas_automl.nni.StrategyTuner", "codeDirectory": ".",
                  "classArgs": {"space": "detnas-small"}}}))
    port = free_port()
    start = time.monotonic()
    assert main(["search", str(tmp_path / "config.yml"), "--port", str(port), "--timeout", "90"]) == 2
    assert time.monotonic() - start < 85  # at once, not after --timeout (a timeout would also be another line)
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and re.search(
        r"error: experiment \w+ stopped: its tuner died with ValueError: the experiment's search space differs from "
        r"space detnas-small at label '\w+'; regenerate it with `hrnas-automl export-space detnas-small", err), err
    assert port_is_free(port)  # the experiment was stopped
