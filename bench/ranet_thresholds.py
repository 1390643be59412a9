"""Benchmark: budgeted early exiting of a RANet sample on scikit-learn digits (or the synthetic patterns).

1. Trains a small RANet sample (6 exits) briefly (4 epochs: the exits still differ; after 2 the first exit is
   the best one and every fit sends all images there) on digits (32x32, 1 channel), holding out half of the training split; fits exit
   thresholds on that held-out part with the paper's geometric prior and with Optuna at 5 average-MACs budgets;
   measures accuracy and the average MACs actually spent on the validation split, used here as the test split
   (seen by neither training nor fitting).
2. Runs the Optuna thresholds of the middle budget for real with EarlyExitRunner, one image at a time, and
   compares MACs and wall time per *easy* sample (one that leaves at the first exit) with the full network
   (every exit computed), timed in the same run.

Writes bench/results/ranet_thresholds_<data>_seed<seed>.json and the plot (.png next to it).
Run: .venv/bin/python bench/ranet_thresholds.py  (about 2 minutes on one core)
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from hrnas_automl.arch import freeze
from hrnas_automl.cost import count_cost
from hrnas_automl.data import build_classification_data
from hrnas_automl.plots import plot_budget_curves
from hrnas_automl.spaces.ranet import exit_macs
from hrnas_automl.tasks.classification import TrainSettings
from hrnas_automl.tasks.early_exit import EarlyExitRunner, anytime_accuracy, budget_curve, early_exit_costs
from hrnas_automl.tasks.early_exit_task import train_for_thresholds

RESULTS = Path(__file__).resolve().parent / "results"
# A RANet sample with 3 scales and block_step 2: 2 + 2 * 2 = 6 exits.
ARCH = {"n_scales": 3, "n_channels": 8, "growth_rate": 4, "gr_factor": "4-2-1-1", "bn_factor": "4-2-1-1",
        "block_step": 2, "step": 2, "step_mode": "even"}
# 32x32 grey images (the CIFAR exits need 8x8 maps at the lowest of the three resolutions).
DATA = {"digits": {"image_size": 32, "channels": 1, "val_fraction": 0.3},
        "synthetic": {"image_size": 32, "channels": 1, "num_classes": 8, "train_size": 1280, "val_size": 640}}
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=sorted(DATA), default="digits")
    parser.add_argument("--epochs", type=int, default=4, help="few: the exits still differ")
    parser.add_argument("--holdout", type=float, default=0.5, help="share of the training split fitted on")
    parser.add_argument("--trials", type=int, default=300, help="Optuna trials per budget")
    parser.add_argument("--repeats", type=int, default=5, help="timings per image (median)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    data = build_classification_data(args.data, **DATA[args.data], seed=args.seed)
    torch.manual_seed(args.seed)
    model = freeze("ranet", ARCH, num_classes=data.num_classes, in_channels=1, head="exits")
    settings = TrainSettings(epochs=args.epochs, batch_size=32, lr=0.05, seed=args.seed)
    t0 = time.perf_counter()
    fit_probs, fit_labels, test_probs, test_labels = train_for_thresholds(model, data, settings, holdout=args.holdout)
    train_s = time.perf_counter() - t0
    costs = early_exit_costs(model, data.input_shape)
    budgets = [costs[0] + f * (costs[-1] - costs[0]) for f in BUDGET_POSITIONS]
    t0 = time.perf_counter()
    curves = budget_curve(fit_probs, fit_labels, test_probs, test_labels, costs, budgets, n_trials=args.trials,
                          seed=args.seed)
    fit_s = time.perf_counter() - t0
    anytime = (exit_macs(model, data.input_shape), anytime_accuracy(test_probs, test_labels))
    result = {
        "data": {"kind": args.data, **DATA[args.data], "train": len(data.train) - fit_labels.numel(),
                 "threshold_fit": fit_labels.numel(), "test": test_labels.numel()},
        "arch": ARCH, "epochs": args.epochs, "holdout": args.holdout, "optuna_trials": args.trials, "seed": args.seed,
        "train_s": train_s, "fit_s": fit_s,
        "early_exit_costs": costs,
        "anytime": [{"exit": k + 1, "macs": m, "accuracy": a} for k, (m, a) in enumerate(zip(*anytime))],
        "budgets": [
            {"budget_macs": b, **{method: {"accuracy": points[i].accuracy, "avg_macs": points[i].avg_cost,
                                           "fit_accuracy": points[i].fit.accuracy,
                                           "fit_avg_macs": points[i].fit.avg_cost}
                                  for method, points in curves.items()}}
            for i, b in enumerate(budgets)],
        "optuna_ge_geometric": all(curves["optuna"][i].accuracy >= curves["geometric"][i].accuracy
                                   for i in range(len(budgets))),
        "runtime": runtime(model, curves["optuna"][2].fit.thresholds, torch.stack([data.val[i][0]
                           for i in range(len(data.val))]), costs, args.repeats),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"ranet_thresholds_{args.data}_seed{args.seed}.json").write_text(json.dumps(result, indent=2))
    plot_budget_curves(curves, RESULTS / f"ranet_thresholds_{args.data}_seed{args.seed}.png", anytime=anytime,
                       title=f"RANet sample on {args.data}, test split")
    for row in result["budgets"]:
        print(f"budget {row['budget_macs'] / 1e6:6.2f}M  " + "  ".join(
            f"{m} {row[m]['accuracy']:.4f} @ {row[m]['avg_macs'] / 1e6:5.2f}M" for m in curves))
    print(json.dumps(result["runtime"], indent=1))


if __name__ == "__main__":
    main()
