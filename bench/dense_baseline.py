"""Does a network of SPACE learn the generated segmentation data? mIoU after training vs the majority class.

    python bench/dense_baseline.py --space SPACE [--space-args YAML] [--arch preset:NAME|file] [--epochs 20]
                                   [--out [PATH]]  (bare --out: bench/results/dense_baseline_SPACE.json)

Trains one architecture (default: a seeded random sample) on the ``shapes`` data through ``run_trial``
and prints (``--out``: also writes) ``{"space", "arch", "miou", "pixel_accuracy", "majority_miou", "margin",
"trial_s", ...}``;
the majority baseline predicts the most frequent training class everywhere on the val masks.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.common, run as a script too

from bench.common import add_out_argument, emit  # noqa: E402
from hrnas_automl.tasks import get_task  # noqa: E402
from hrnas_automl.tasks.metrics.segmentation import confusion_matrix, miou  # noqa: E402
from hrnas_automl.trial import resolve_arch, run_trial  # noqa: E402
from hrnas_automl.trial.config import parse_trial_config  # noqa: E402


def majority_miou(data) -> float:
    """mIoU on ``data.val`` of predicting the most frequent class of ``data.train`` everywhere."""
    counts = torch.zeros(data.num_classes, dtype=torch.int64)
    for _, labels in data.train:
        counts += torch.bincount(labels[labels != data.ignore_index], minlength=data.num_classes)
    matrix = torch.zeros(data.num_classes, data.num_classes, dtype=torch.int64)
    for _, labels in data.val:
        matrix += confusion_matrix(labels, torch.full_like(labels, int(counts.argmax())), data.num_classes)
    return miou(matrix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", required=True)
    parser.add_argument("--arch")
    parser.add_argument("--space-args", default="{}",
                        help="space constructor arguments as YAML, e.g. '{setting: tiny}'")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    add_out_argument(parser, "dense_baseline_{space}")
    args = parser.parse_args()
    data_options = {"train_size": 128, "val_size": 32, "image_size": args.image_size, "seed": args.seed}
    config = parse_trial_config({
        "space": args.space, "space_args": yaml.safe_load(args.space_args), "task": "segmentation",
        "data": {"kind": "shapes", **data_options},
        "train": {"epochs": args.epochs, "batch_size": 16, "lr": 0.05, "seed": args.seed}, "threads": args.threads,
        "latency": {"enabled": False}})
    arch = resolve_arch(config, args.arch)
    result = run_trial(config, arch)
    baseline = majority_miou(get_task("segmentation").build_data("shapes", data_options))
    report = {"space": args.space, "arch": arch, "epochs": args.epochs, **data_options,
              "miou": result.metrics["miou"], "pixel_accuracy": result.metrics["pixel_accuracy"],
              "majority_miou": baseline, "margin": result.metrics["miou"] - baseline,
              "params": result.metrics["params"], "macs": result.metrics["macs"], "trial_s": result.metrics["trial_s"]}
    emit(report, args)


if __name__ == "__main__":
    main()
