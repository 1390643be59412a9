"""Tune a RANet sample's exit thresholds with Optuna and compare them with the paper's geometric prior.

Trains the architecture with the data and training settings of a trial config (default: trial.yml next to this
file), holding out ``task_args.holdout`` of the training split; fits thresholds on that held-out part at several
average-MACs budgets with both methods; measures accuracy and average MACs on the validation split (the test
split here); writes ``thresholds.json`` and the plot ``thresholds.png`` to ``--out``.

    python examples/ranet/tune_thresholds.py --arch examples/ranet/small_arch.json --out runs/ranet-thresholds

About a minute on one core with the defaults.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from hrnas_automl.arch import freeze
from hrnas_automl.plots import plot_budget_curves
from hrnas_automl.spaces.ranet import exit_macs
from hrnas_automl.tasks import get_task
from hrnas_automl.tasks.early_exit import anytime_accuracy, budget_curve, early_exit_costs
from hrnas_automl.tasks.early_exit_task import EarlyExitOptions, train_for_thresholds
from hrnas_automl.trial import resolve_arch
from hrnas_automl.trial.config import load_trial_config

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(HERE / "trial.yml"), help="trial config (data, train, task_args)")
    parser.add_argument("--arch", default=str(HERE / "small_arch.json"), help="architecture file or preset:NAME")
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.6, 0.8],
                        help="budgets as fractions of the full network's early-exit MACs")
    parser.add_argument("--trials", type=int, default=300, help="Optuna trials per budget")
    parser.add_argument("--out", default="ranet-thresholds", help="output folder")
    args = parser.parse_args()

    config = load_trial_config(args.config)
    options = EarlyExitOptions.from_mapping(config.task_args)
    task = get_task("early-exit")
    data = task.build_data(config.data.kind, config.data.options())
    torch.set_num_threads(config.threads or 1)
    torch.manual_seed(config.train.seed)
    model = freeze(config.space, resolve_arch(config, args.arch), **config.space_args, **task.model_args(data),
                   head=task.head)
    fit_probs, fit_labels, test_probs, test_labels = train_for_thresholds(
        model, data, config.train, holdout=options.holdout, exit_weights=options.exit_weights)

    costs = early_exit_costs(model, data.input_shape)
    curves = budget_curve(fit_probs, fit_labels, test_probs, test_labels, costs,
                          [f * costs[-1] for f in args.budgets], n_trials=args.trials, seed=config.train.seed)
    anytime = (exit_macs(model, data.input_shape), anytime_accuracy(test_probs, test_labels))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"method": p.method, "budget_macs": p.budget, "thresholds": [min(t, 1e9) for t in p.fit.thresholds[:-1]],
             "fit_accuracy": p.fit.accuracy, "test_accuracy": p.accuracy, "test_avg_macs": p.avg_cost}
            for points in curves.values() for p in points]
    (out / "thresholds.json").write_text(json.dumps({"early_exit_costs": costs, "anytime_macs": anytime[0],
                                                     "anytime_accuracy": anytime[1], "fits": rows}, indent=2))
    plot_budget_curves(curves, out / "thresholds.png", anytime=anytime)
    for row in rows:
        print(f"{row['method']:9s} budget {row['budget_macs'] / 1e6:6.2f}M: test accuracy "
              f"{row['test_accuracy']:.3f} at {row['test_avg_macs'] / 1e6:.2f}M MACs/image")
    print(f"wrote {out / 'thresholds.json'} and {out / 'thresholds.png'}")


if __name__ == "__main__":
    main()
