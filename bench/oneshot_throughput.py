"""Candidates evaluated per hour: the in-process one-shot search vs one nnictl trial per candidate.

Both evaluate the same thing for every candidate (BN re-statistics on the shared supernet weights, then COCO
mAP on the validation split); the in-process search loads the supernet once, an nnictl trial starts a process,
imports torch/NNI and loads the checkpoint for each candidate. Wall-clock, one torch thread, trialConcurrency 1;
the two phases alternate (in-process, nnictl, in-process, nnictl, ...) for ``--rounds`` rounds and the ratio is
that of the medians, so a load change on the shared machine hits both alike. Scratch files go to a temporary
folder removed at the end; the JSON is written only with ``--out``.

    .venv/bin/python bench/oneshot_throughput.py [--inprocess 16] [--nni 4] [--rounds 3] [--out]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.common, run as a script too

from bench.common import add_out_argument, emit, interleaved, spread  # noqa: E402
from hrnas_automl.arch import choices_of  # noqa: E402
from hrnas_automl.nni.compat import check_pins, to_nni_search_space  # noqa: E402
from hrnas_automl.nni.experiment import NniExperiment, free_port, nni_env  # noqa: E402
from hrnas_automl.oneshot.config import SearchConfig, SupernetConfig  # noqa: E402
from hrnas_automl.oneshot.search import run_search  # noqa: E402
from hrnas_automl.oneshot.supernet import train_supernet  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inprocess", type=int, default=16, help="candidates evaluated in-process per round")
    parser.add_argument("--nni", type=int, default=4, help="nnictl trials (one candidate each) per round")
    parser.add_argument("--rounds", type=int, default=3, help="in-process / nnictl alternations")
    add_out_argument(parser, "oneshot_throughput")
    args = parser.parse_args()
    check_pins()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="oneshot_bench_") as scratch:
        result = measure(Path(scratch), args.inprocess, args.nni, args.rounds)
    emit(result, args)


def measure(work: Path, inprocess: int, nni: int, rounds: int) -> dict:
    """Train a small supernet in ``work``, then time both ways of evaluating candidates, interleaved."""
    supernet = SupernetConfig.model_validate({
        "data": {"kind": "shapes", "root": str(work / "shapes"), "train_size": 48, "val_size": 12, "image_size": 64},
        "detector": {"fpn_channels": 32}, "checkpoint": str(work / "supernet.pt"),
        "train": {"steps": 20, "batch_size": 8, "checkpoint_every": 20}})
    train_supernet(supernet)  # throughput does not depend on how well it is trained
    search = {"supernet": str(work / "supernet.pt"), "strategy": "random", "bn_batches": 2, "batch_size": 8,
              "threads": 1, "candidates": inprocess}
    (work / "search.yml").write_text(yaml.safe_dump({**search, "state": str(work / "unused.json")}))
    (work / "space.json").write_text(json.dumps(to_nni_search_space(choices_of("detnas-small"))))
    (work / "experiment.yml").write_text(yaml.safe_dump({
        "experimentName": "oneshot-throughput", "searchSpaceFile": "space.json",
        "trialCommand": "hrnas-automl oneshot eval --config search.yml", "trialCodeDirectory": ".",
        "trialConcurrency": 1, "maxTrialNumber": nni, "maxExperimentDuration": "30m",
        # NNI's built-in Random tuner: it starts fast (a tuner importing torch can miss NNI's 10 s connect limit
        # on a loaded machine), and the trials' cost is what is measured here.
        "tuner": {"name": "Random", "classArgs": {"seed": 0}},
        "trainingService": {"platform": "local"}}))

    def in_process(round_: int) -> None:  # supernet loading included
        run_search(SearchConfig.model_validate({**search, "state": str(work / f"state{round_}.json")}))

    def nnictl(round_: int) -> None:  # manager start included, as a user pays it
        home = work / f"home{round_}"
        home.mkdir()
        exp = NniExperiment.create(work / "experiment.yml", port=free_port(), env=nni_env(home=home))
        try:
            trials = exp.wait(1800)
        finally:
            exp.stop()
        ok = [t for t in trials if t.status == "SUCCEEDED"]
        if len(ok) != nni:
            raise RuntimeError(f"only {len(ok)} of {nni} nnictl trials succeeded")

    seconds = interleaved({"inprocess": in_process, "nni_trial_per_candidate": nnictl}, rounds)
    counts = {"inprocess": inprocess, "nni_trial_per_candidate": nni}
    phases = {}
    for name, times in seconds.items():
        summary = spread(times)
        phases[name] = {"candidates": counts[name], "seconds": summary,
                        "candidates_per_hour": round(counts[name] / summary["median"] * 3600, 1)}
    return {**phases, "rounds": rounds,
            "ratio": round(phases["inprocess"]["candidates_per_hour"]
                           / phases["nni_trial_per_candidate"]["candidates_per_hour"], 2),
            "setup": "detnas-small supernet, shapes 64x64 (48 train / 12 val), 2 BN batches of 8, 1 torch thread",
            "machine": platform.platform(), "torch": torch.__version__}


if __name__ == "__main__":
    main()
