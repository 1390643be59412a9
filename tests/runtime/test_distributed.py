"""Two gloo ranks on the CPU under ``torchrun --nproc-per-node 2`` against one process with the same global batch:
a trial's training, the supernet's training and the fine-grained search (tests/runtime/ddp_worker.py runs each).

With ``sync_bn`` the two runs compute the same thing: each rank trains on half of every global batch, DDP averages
the gradients and BatchNorm normalises over the whole batch; what is left is the order of float sums (per-rank
partial sums, all-reduced), a relative 2e-5 in the gradients of the first step. HR-NAS training amplifies such
differences quickly (two torch threads instead of one move a 1-process run's loss by ~1% within 8 steps), so the runs
are 2-4 steps long. What differs by design is stated per test.
"""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from hrnas_automl.nni.experiment import free_port
from tests.runtime import ddp_worker

WORKER = Path(ddp_worker.__file__)


def _torchrun(scenario: str, out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both ranks' results of ``scenario`` run by torchrun with 2 gloo processes."""
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
           str(WORKER), scenario, str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [(r["rank"], r["world"]) for r in ranks] == [(0, 2), (1, 2)]
    return ranks[0]["result"], ranks[1]["result"]


def _one_process(scenario: str, out: Path) -> dict[str, Any]:
    out.mkdir()
    return ddp_worker.SCENARIOS[scenario](out)


def _close(a: float, b: float, rel: float) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=rel)


@pytest.mark.slow
def test_trial_training_on_two_ranks_equals_one_process(tmp_path: Path) -> None:
    two, other = _torchrun("trial", tmp_path / "two")
    one = _one_process("trial", tmp_path / "one")
    assert two["metrics"] == other["metrics"] | {k: two["metrics"][k] for k in ("trial_s",)}  # broadcast metrics
    for key in ("train_loss", "loss", "accuracy"):  # measured: 3e-4 apart (train_loss; 1e-6 after the first step)
        assert _close(two["metrics"][key], one["metrics"][key], 2e-3), (key, two["metrics"][key], one["metrics"][key])
    assert (tmp_path / "two" / "result.json").is_file()  # written by rank 0 alone, under no lock contention


@pytest.mark.slow
def test_supernet_training_on_two_ranks_samples_one_path_and_matches_one_process(tmp_path: Path) -> None:
    two, other = _torchrun("supernet", tmp_path / "two")
    one = _one_process("supernet", tmp_path / "one")
    assert two == other  # the mean loss over ranks, on every rank
    # FCOS normalises its losses by the positives of the batch a rank holds, so 2 ranks' averaged gradient is not
    # the whole batch's exactly (DDP's usual per-rank normalisation); the loss stays within 2 %.
    assert _close(two["loss"], one["loss"], 2e-2), (two, one)
    states = [torch.load(tmp_path / d / "supernet.pt", weights_only=True)["model"] for d in ("two", "one")]
    assert states[0].keys() == states[1].keys()
    two_w, one_w = (torch.cat([s[k].flatten() for k in s if s[k].is_floating_point()]) for s in states)
    assert float((two_w - one_w).norm() / one_w.norm()) < 1e-2  # measured: 3e-3


@pytest.mark.slow
def test_fine_grained_search_on_two_ranks_prunes_alike_and_matches_one_process(tmp_path: Path) -> None:
    two, other = _torchrun("fine_grained", tmp_path / "two")
    one = _one_process("fine_grained", tmp_path / "one")
    assert two["arch"] == other["arch"] == one["arch"]  # every rank shrank the same way, as one process
    assert two["steps"] == other["steps"]
    for key in two["state"]:  # the proximal steps kept the ranks' weights (importance factors too) identical
        assert torch.equal(two["state"][key], other["state"][key]), key
    assert [(s["epoch"], s["arch"], s["macs"]) for s in two["steps"]] == [
        (s["epoch"], s["arch"], s["macs"]) for s in one["steps"]]
    # The weights follow the 1-process run's closely (measured 0.6 %); the accuracy over 16 images of a network pruned
    # this hard is too discrete to compare (one image is 6 %). Its validation loss is as sensitive to the order of
    # float sums as the network is: measured 2.8 % apart, and the 1-process run itself moves by 1.3 % (and its
    # accuracy from 0.19 to 0.31) on 2 torch threads instead of 1.
    two_w, one_w = (torch.cat([s[k].flatten() for k in s if k.endswith("weight")])
                    for s in (two["state"], one["state"]))
    assert float((two_w - one_w).norm() / one_w.norm()) < 1e-2
    assert _close(two["metrics"]["loss"], one["metrics"]["loss"], 5e-2), (two["metrics"], one["metrics"])
