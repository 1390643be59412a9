"""Candidates evaluated per hour: the in-process one-shot search vs one nnictl trial per candidate.

Both evaluate the same thing for every candidate (BN re-statistics on the shared supernet weights, then COCO
mAP on the validation split); the in-process search loads the supernet once, an nnictl trial starts a process,
imports torch/NNI and loads the checkpoint for each candidate. Both are measured in one run (the machine is
shared), wall-clock, one torch thread, trialConcurrency 1. Writes bench/results/oneshot_throughput.json.

    .venv/bin/python bench/oneshot_throughput.py [--inprocess 16] [--nni 4]
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
import yaml

from hrnas_automl.arch import choices_of
from hrnas_automl.nni.compat import check_pins, to_nni_search_space
from hrnas_automl.nni.experiment import NniExperiment, free_port, nni_env
from hrnas_automl.oneshot.config import SearchConfig, SupernetConfig
from hrnas_automl.oneshot.search import run_search
from hrnas_automl.oneshot.supernet import train_supernet

RESULTS = Path(__file__).resolve().parent / "results" / "oneshot_throughput.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inprocess", type=int, default=16, help="candidates evaluated in-process")
    parser.add_argument("--nni", type=int, default=4, help="nnictl trials (one candidate each)")
    args = parser.parse_args()
    check_pins()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="oneshot_bench_"))
    supernet = SupernetConfig.model_validate({
        "data": {"kind": "shapes", "root": str(work / "shapes"), "train_size": 48, "val_size": 12, "image_size": 64},
        "detector": {"fpn_channels": 32}, "checkpoint": str(work / "supernet.pt"),
        "train": {"steps": 20, "batch_size": 8, "checkpoint_every": 20}})
    train_supernet(supernet)  # throughput does not depend on how well it is trained
    search = {"supernet": str(work / "supernet.pt"), "strategy": "random", "bn_batches": 2, "batch_size": 8,
              "threads": 1, "candidates": args.inprocess}

    t0 = time.perf_counter()
    run_search(SearchConfig.model_validate({**search, "state": str(work / "state.json")}))
    inprocess_s = time.perf_counter() - t0  # supernet loading included

    (work / "search.yml").write_text(yaml.safe_dump({**search, "state": str(work / "unused.json")}))
    (work / "space.json").write_text(json.dumps(to_nni_search_space(choices_of("detnas-small"))))
    (work / "experiment.yml").write_text(yaml.safe_dump({
        "experimentName": "oneshot-throughput", "searchSpaceFile": "space.json",
        "trialCommand": "hrnas-automl oneshot eval --config search.yml", "trialCodeDirectory": ".",
        "trialConcurrency": 1, "maxTrialNumber": args.nni, "maxExperimentDuration": "30m",
        # NNI's built-in Random tuner: it starts fast (a tuner importing torch can miss NNI's 10 s connect limit
        # on a loaded machine), and the trials' cost is what is measured here.
        "tuner": {"name": "Random", "classArgs": {"seed": 0}},
        "trainingService": {"platform": "local"}}))
    (work / "home").mkdir()
    t0 = time.perf_counter()
    exp = NniExperiment.create(work / "experiment.yml", port=free_port(), env=nni_env(home=work / "home"))
    try:
        trials = exp.wait(1800)
    finally:
        exp.stop()
    nni_s = time.perf_counter() - t0  # manager start included, as a user pays it
    ok = [t for t in trials if t.status == "SUCCEEDED"]
    if len(ok) != args.nni:
        raise RuntimeError(f"only {len(ok)} of {args.nni} nnictl trials succeeded")

    inprocess_rate = args.inprocess / inprocess_s * 3600
    nni_rate = args.nni / nni_s * 3600
    result = {"inprocess": {"candidates": args.inprocess, "seconds": round(inprocess_s, 2),
                            "candidates_per_hour": round(inprocess_rate, 1)},
              "nni_trial_per_candidate": {"candidates": args.nni, "seconds": round(nni_s, 2),
                                          "candidates_per_hour": round(nni_rate, 1)},
              "ratio": round(inprocess_rate / nni_rate, 2),
              "setup": "detnas-small supernet, shapes 64x64 (48 train / 12 val), 2 BN batches of 8, 1 torch thread",
              "machine": platform.platform(), "torch": torch.__version__}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
