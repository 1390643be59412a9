"""One small run per scenario, launched by tests/runtime/test_distributed.py under ``torchrun --nproc-per-node 2``
(gloo on the CPU) and called in-process for the one-process reference: ``python ddp_worker.py SCENARIO OUT``.

Every rank writes ``rank<R>.pt`` (what must be identical on every rank); rank 0 alone writes the files the
command itself writes (a trial's result.json, the supernet's checkpoint) under OUT.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from hrnas_automl.config import TrainSettings
from hrnas_automl.runtime import distributed

# 2 steps per epoch (16 images, global batch 8). HR-NAS training is chaotic: any change in the order of float sums
# (2 torch threads instead of 1) moves its loss by ~1% within 8 steps, so the runs compared stay this short.
TRAIN = {"epochs": 1, "batch_size": 8, "lr": 0.01, "sync_bn": True}
DATA = {"num_classes": 4, "image_size": 16, "train_size": 16, "val_size": 16}
SPACE_ARGS = {"setting": "tiny", "transformer": False, "dropout": 0.0}


def trial(out: Path) -> dict[str, Any]:
    """A classification trial on generated images: result.json (rank 0) and the per-epoch rows. Without dropout,
    whose masks two half batches cannot draw as one whole batch does."""
    from hrnas_automl.trial.config import parse_trial_config
    from hrnas_automl.trial.run import resolve_arch, run_trial

    config = parse_trial_config({"space": "hrnas", "space_args": SPACE_ARGS, "data": {"kind": "synthetic", **DATA},
                                 "train": TRAIN, "threads": 1, "latency": {"enabled": False}, "output_dir": str(out)})
    result = run_trial(config, resolve_arch(config))
    return {"metrics": result.metrics, "epochs": result.epochs}


def supernet(out: Path) -> dict[str, Any]:
    """A few path-wise supernet steps on generated detection data: the checkpoint (rank 0) and its loss."""
    from hrnas_automl.oneshot.config import SupernetConfig
    from hrnas_automl.oneshot.supernet import train_supernet

    config = SupernetConfig.model_validate({
        "data": {"kind": "shapes", "root": str(out / "data"), "train_size": 8, "val_size": 2, "image_size": 64},
        "detector": {"fpn_channels": 16}, "checkpoint": str(out / "supernet.pt"),
        "train": {"batch_size": 4, "lr": 0.02, "steps": 2, "checkpoint_every": 2, "sync_bn": True}})
    return train_supernet(config)


def fine_grained(out: Path) -> dict[str, Any]:
    """A fine-grained search on generated images (one epoch, then prune, BN recalibration and validation;
    classification without dropout, as :func:`trial`): arch, metrics, prune steps and the searched weights."""
    from hrnas_automl.strategies.fine_grained import FineGrainedSettings, fine_grained_search

    result = fine_grained_search("hrnas", "classification", "synthetic", DATA,
                                 FineGrainedSettings(lam=10.0, threshold=1e-3, warmup=0),
                                 train=TrainSettings(**TRAIN), space_args=SPACE_ARGS)
    return {"arch": result.arch, "metrics": result.metrics, "steps": [s.__dict__ for s in result.steps],
            "state": result.state_dict}


SCENARIOS = {"trial": trial, "supernet": supernet, "fine_grained": fine_grained}


def main(scenario: str, out: Path) -> None:
    torch.set_num_threads(1)
    result = SCENARIOS[scenario](out)
    torch.save({"rank": distributed.rank(), "world": distributed.world_size(), "result": result},
               out / f"rank{distributed.rank()}.pt")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
