"""Benchmark: budgeted early exiting of a RANet sample, the paper's geometric exit prior against Optuna's thresholds.

Data: the generated Gabor patterns (10 classes, 32x32 grey), made small (window radius 0.1 of the width, 6 and 9
grating cycles per width) and with a per-image noise level drawn from [0, 0.4]. Small patterns need resolution:
RANet's first exits read the 8x8 flow and get fewer of them right than the 16x16 and 32x32 exits, and the noise
spread makes some images easy at any exit and others hard at all of them. That is the trade early exiting makes;
on nearly solved data (scikit-learn digits at 32x32, the previous version of this benchmark: every exit alone at
95-97%) every budget gave the same policy. Generated data also gives as many images as wanted: 2000 to train on,
6000 held out to fit the thresholds on, 2000 to test (one test image is 0.05%). The fitting split is the larger
one because 300 Optuna trials over 6 thresholds overfit 2000 images once (seed 1, 8.2M: +33 images on
validation, -1 on test); fitting costs inference only.

1. Trains a small RANet sample (6 exits) for 6 epochs, fits thresholds on the held-out part with both methods at
   5 average-MACs budgets spread between the first exit's cost and the full network's, and measures accuracy and
   the average MACs actually spent on the test split (seen by neither training nor fitting).
2. Runs the Optuna thresholds of the middle budget for real with EarlyExitRunner, one image at a time, and
   compares MACs and wall time per *easy* sample (one that leaves at the first exit) with the full network
   (every exit computed), timed in the same run.

With ``--out``, writes bench/results/ranet_thresholds_seed<seed>.json (or the given path) and the plot (.png next
to it). Run: .venv/bin/python bench/ranet_thresholds.py --seed 0 --out  (a few minutes on one core)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.common, run as a script too

from bench.common import add_out_argument, emit, out_path  # noqa: E402
from hrnas_automl.arch import freeze  # noqa: E402
from hrnas_automl.cost import count_cost  # noqa: E402
from hrnas_automl.data import build_classification_data  # noqa: E402
from hrnas_automl.plots import plot_budget_curves  # noqa: E402
from hrnas_automl.spaces.ranet import exit_macs  # noqa: E402
from hrnas_automl.config import TrainSettings  # noqa: E402
from hrnas_automl.tasks.early_exit import (  # noqa: E402
    BudgetPoint,
    EarlyExitRunner,
    anytime_accuracy,
    budget_curve,
    early_exit_costs,
)
from hrnas_automl.tasks.early_exit_task import train_for_thresholds  # noqa: E402
# A RANet sample with 3 scales and block_step 2: 2 + 2 * 2 = 6 exits.
ARCH = {"n_scales": 3, "n_channels": 8, "growth_rate": 4, "gr_factor": "4-2-1-1", "bn_factor": "4-2-1-1",
        "block_step": 2, "step": 2, "step_mode": "even"}
# 32x32 grey images (the CIFAR exits need 8x8 maps at the lowest of the three resolutions); three quarters of the
# training split are held out to fit the thresholds on, the val split is the test split.
DATA = {"num_classes": 10, "image_size": 32, "channels": 1, "noise": (0.0, 0.4), "window": 0.1, "cycles": (6.0, 9.0),
        "train_size": 8000, "val_size": 2000}
HOLDOUT = 0.75
# Budgets between the first exit's cost and the full network's, as fractions of that range.
BUDGET_POSITIONS = (0.1, 0.2, 0.35, 0.5, 0.7)


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def runtime(model: torch.nn.Module, thresholds: tuple[float, ...], images: torch.Tensor, costs: list[int],
            repeats: int) -> dict[str, float]:
    """MACs and median wall time per easy image (exits first) under ``thresholds`` vs the full network."""
    runner = EarlyExitRunner(model, thresholds)
    _, exits = runner.run(images)
    easy = images[exits == 0]
    if len(easy) == 0:
        raise RuntimeError("no test image leaves at the first exit under these thresholds; pick a lower budget")
    model.eval()
    with torch.no_grad():
        # One image at a time in both cases, interleaved so that machine noise hits both alike.
        early_s, full_s = [], []
        for image in easy[:32]:
            x = image.unsqueeze(0)
            early_s.append(_median_time(lambda: runner.run(image), repeats))
            full_s.append(_median_time(lambda: model(x), repeats))
    full_macs = count_cost(model, tuple(images.shape[1:])).macs
    return {"easy_fraction": float((exits == 0).float().mean()), "easy_images_timed": len(early_s),
            "easy_macs": costs[0], "full_macs": full_macs, "macs_ratio": costs[0] / full_macs,
            "easy_ms": 1e3 * statistics.median(early_s), "full_ms": 1e3 * statistics.median(full_s),
            "time_ratio": statistics.median(early_s) / statistics.median(full_s),
            "mean_macs_all_test_images": float(torch.tensor([costs[k] for k in exits.tolist()],
                                                            dtype=torch.float64).mean())}


def _policy(point: BudgetPoint, test_n: int) -> dict[str, Any]:
    """One method's fit at one budget: its thresholds, validation (fit) and test figures."""
    return {"accuracy": point.accuracy, "correct": round(point.accuracy * test_n), "avg_macs": point.avg_cost,
            "fit_accuracy": point.fit.accuracy, "fit_avg_macs": point.fit.avg_cost,
            "thresholds": [min(t, 1e9) for t in point.fit.thresholds[:-1]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--trials", type=int, default=300, help="Optuna trials per budget")
    parser.add_argument("--repeats", type=int, default=5, help="timings per image (median)")
    parser.add_argument("--seed", type=int, default=0)
    add_out_argument(parser, "ranet_thresholds_seed{seed}")
    args = parser.parse_args()
    torch.set_num_threads(1)

    data = build_classification_data("synthetic", **DATA, seed=args.seed)
    torch.manual_seed(args.seed)
    model = freeze("ranet", ARCH, num_classes=data.num_classes, in_channels=1, head="exits")
    settings = TrainSettings(epochs=args.epochs, batch_size=32, lr=0.05, seed=args.seed)
    t0 = time.perf_counter()
    fit_probs, fit_labels, test_probs, test_labels = train_for_thresholds(model, data, settings, holdout=HOLDOUT)
    train_s = time.perf_counter() - t0
    costs = early_exit_costs(model, data.input_shape)
    budgets = [costs[0] + f * (costs[-1] - costs[0]) for f in BUDGET_POSITIONS]
    t0 = time.perf_counter()
    curves = budget_curve(fit_probs, fit_labels, test_probs, test_labels, costs, budgets, n_trials=args.trials,
                          seed=args.seed)
    fit_s = time.perf_counter() - t0
    anytime = (exit_macs(model, data.input_shape), anytime_accuracy(test_probs, test_labels))
    test_n = test_labels.numel()
    geometric, tuned = curves["geometric"], curves["optuna"]
    result = {
        "data": {"kind": "synthetic", **DATA, "train": len(data.train) - fit_labels.numel(),
                 "threshold_fit": fit_labels.numel(), "test": test_n},
        "arch": ARCH, "epochs": args.epochs, "holdout": HOLDOUT, "optuna_trials": args.trials, "seed": args.seed,
        "train_s": train_s, "fit_s": fit_s,
        "early_exit_costs": costs,
        "anytime": [{"exit": k + 1, "macs": m, "accuracy": a} for k, (m, a) in enumerate(zip(*anytime))],
        "budgets": [{"budget_macs": b, "geometric": _policy(g, test_n), "optuna": _policy(o, test_n),
                     "optuna_minus_geometric_test_images": round((o.accuracy - g.accuracy) * test_n),
                     "optuna_kept_geometric": o.fit.thresholds == g.fit.thresholds}
                    for b, g, o in zip(budgets, geometric, tuned)],
        "optuna_ge_geometric": all(o.accuracy >= g.accuracy for g, o in zip(geometric, tuned)),
        "runtime": runtime(model, tuned[2].fit.thresholds, torch.stack([data.val[i][0]
                           for i in range(len(data.val))]), costs, args.repeats),
    }
    emit(result, args)
    out = out_path(args)
    if out is not None:
        plot_budget_curves(curves, out.with_suffix(".png"), anytime=anytime,
                           title=f"RANet sample on noisy patterns, seed {args.seed}, {test_n} test images")
    print("anytime", [f"{a:.4f}" for a in anytime[1]])
    for row in result["budgets"]:
        print(f"budget {row['budget_macs'] / 1e6:6.2f}M  " + "  ".join(
            f"{m} {row[m]['accuracy']:.4f} @ {row[m]['avg_macs'] / 1e6:5.2f}M" for m in curves))


if __name__ == "__main__":
    main()
