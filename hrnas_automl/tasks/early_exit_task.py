"""The early-exit trial task: train a multi-exit network (a RANet sample) and report its anytime curve and its
budgeted accuracy, so nnictl searches over the RANet space compare architectures by accuracy under a budget.

Splits: the config's ``data.train`` is split once (seeded by ``train.seed``) into the part the network trains on
and a held-out part (``task_args.holdout``) on which the exit thresholds are fitted; every reported accuracy is
measured on ``data.val``, which neither training nor threshold fitting sees (the official code fits thresholds
on its test set, REFERENCE §5.17).

Reported keys (flat numbers, as NNI's web UI wants them), exits numbered from 1 in computation order:

* ``exit{k}_accuracy`` / ``exit{k}_macs``: anytime prediction, each exit on its own, and its cumulative MACs per
  image (:func:`~hrnas_automl.spaces.ranet.exit_macs`),
* ``budgeted_accuracy`` (``default``), ``budgeted_macs``: accuracy and average MACs actually spent per image under
  the thresholds fitted for ``budget_macs`` (the early-exit cost counts the heads of the exits passed over,
  :func:`~hrnas_automl.tasks.early_exit.early_exit_costs`); ``budget_met`` is 0 when the budget lies below the
  first exit's cost (then ``budgeted_accuracy`` is 0, so a search ranks the network last),
* ``accuracy`` (the last exit), ``loss``, ``train_loss``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, random_split

from hrnas_automl.data import ClassificationData
from hrnas_automl.spaces.ranet import exit_macs
from hrnas_automl.tasks import EpochCallback
from hrnas_automl.tasks.classification import ClassificationTask
from hrnas_automl.config import TrainSettings, parse_number
from hrnas_automl.runtime.device import runtime_of
from hrnas_automl.tasks.early_exit import (
    THRESHOLD_METHODS,
    anytime_accuracy,
    apply_thresholds,
    collect_exit_probs,
    early_exit_costs,
    fit_thresholds,
    train_multi_exit,
)

__all__ = ["EarlyExitOptions", "EarlyExitTask", "TASK", "hold_out", "train_for_thresholds"]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class EarlyExitOptions:
    """The task's ``task_args``; validated on construction (one-line ``ValueError`` naming the option).

    Attributes:
        budget_fraction: the average-MACs budget per image as a fraction of the full network's early-exit cost
            (every exit evaluated); ignored when ``budget_macs`` is given.
        budget_macs: the budget in MACs per image, the same for every architecture (a fair search comparison).
        method: 'geometric' (the paper's exit prior) or 'optuna' (TPE over the thresholds, warm-started).
        optuna_trials: Optuna trials per fit.
        holdout: fraction of ``data.train`` held out (not trained on) to fit the thresholds.
        exit_weights: loss weight per exit (default: all 1, the official sum).
    """

    budget_fraction: float = 0.5
    budget_macs: float | None = None
    method: str = "geometric"
    optuna_trials: int = 100
    holdout: float = 0.2
    exit_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        # the one budget parser: a 6.9e6 that YAML left a string reads as the number it is
        object.__setattr__(self, "budget_macs", parse_number("budget_macs", self.budget_macs))
        checks = (
            ("budget_fraction", _number(self.budget_fraction) and 0 < self.budget_fraction <= 1,
             "a number in (0, 1]"),
            ("budget_macs", self.budget_macs is None or (_number(self.budget_macs) and self.budget_macs > 0),
             "a positive number of MACs per image"),
            ("method", self.method in THRESHOLD_METHODS, f"one of {', '.join(THRESHOLD_METHODS)}"),
            ("optuna_trials", isinstance(self.optuna_trials, int) and not isinstance(self.optuna_trials, bool)
             and self.optuna_trials >= 1, "an integer >= 1"),
            ("holdout", _number(self.holdout) and 0 < self.holdout < 1, "a number strictly between 0 and 1"),
            ("exit_weights", self.exit_weights is None or (isinstance(self.exit_weights, (list, tuple))
                                                           and all(_number(w) and w >= 0 for w in self.exit_weights)),
             "a list of non-negative numbers, one per exit"),
        )
        for name, ok, need in checks:
            if not ok:
                raise ValueError(f"{name} must be {need}, got {getattr(self, name)!r}")

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> EarlyExitOptions:
        """Build from ``task_args``; an unknown key raises a one-line ``ValueError`` listing the known ones."""
        known = [name for name in cls.__dataclass_fields__]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"unknown option {unknown[0]!r} of task 'early-exit'; options: {', '.join(known)}")
        return cls(**options)


def hold_out(dataset: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """A seeded (train, held-out) split of ``dataset`` with ``round(len * fraction)`` held out, both non-empty."""
    n = len(dataset)
    n_held = round(n * fraction)
    if n < 2 or not 1 <= n_held < n:
        raise ValueError(f"task_args.holdout {fraction} of {n} training images leaves an empty part; "
                         "give more training images or another holdout")
    train, held = random_split(dataset, [n - n_held, n_held], generator=torch.Generator().manual_seed(seed))
    return train, held


def train_for_thresholds(model: nn.Module, data: ClassificationData, settings: TrainSettings, *,
                         holdout: float = 0.2, exit_weights: tuple[float, ...] | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train a multi-exit ``model`` on ``data.train`` less a held-out part (:func:`hold_out`), then return the exit
    probabilities and labels of the held-out part (to fit thresholds on) and of ``data.val`` (to report):
    ``(fit_probs, fit_labels, test_probs, test_labels)``, as :func:`collect_exit_probs` gives them."""
    train, held_out = hold_out(data.train, holdout, settings.seed)
    train_multi_exit(model, replace(data, train=train), settings, exit_weights=exit_weights)
    with runtime_of(settings).autocast():  # on the device the trainer placed the model on
        return (*collect_exit_probs(model, held_out, settings.batch_size, loading=settings),
                *collect_exit_probs(model, data.val, settings.batch_size, loading=settings))


class EarlyExitTask(ClassificationTask):
    """Early-exit classification for multi-exit networks (head 'exits'); ``default`` = budgeted accuracy.

    Same data and model arguments as the classification task; training is :func:`train_multi_exit`.
    """

    name = "early-exit"
    head = "exits"
    metric = "budgeted_accuracy"

    def check_options(self, options: Mapping[str, Any]) -> None:
        EarlyExitOptions.from_mapping(options)

    def fit(self, model: nn.Module, data: ClassificationData, settings: TrainSettings, options: Mapping[str, Any],
            on_epoch: EpochCallback) -> dict[str, Any]:
        opts = EarlyExitOptions.from_mapping(options)
        train, held_out = hold_out(data.train, opts.holdout, settings.seed)
        costs = early_exit_costs(model, data.input_shape)
        anytime_macs = exit_macs(model, data.input_shape)
        budget = opts.budget_macs if opts.budget_macs is not None else opts.budget_fraction * costs[-1]
        final: dict[str, Any] = {}

        def score(epoch: int, metrics: dict[str, Any]) -> None:
            nonlocal final
            with runtime_of(settings).autocast():  # on the device the trainer placed the model on
                fit_probs, fit_labels = collect_exit_probs(model, held_out, settings.batch_size, loading=settings)
                probs, labels = collect_exit_probs(model, data.val, settings.batch_size, loading=settings)
            row: dict[str, Any] = {"accuracy": metrics["accuracy"], "loss": metrics["loss"],
                                   "train_loss": metrics["train_loss"]}
            for k, (accuracy, macs) in enumerate(zip(anytime_accuracy(probs, labels), anytime_macs), start=1):
                row[f"exit{k}_accuracy"], row[f"exit{k}_macs"] = accuracy, macs
            row.update(budget_macs=budget, budget_met=int(budget >= costs[0]), budgeted_accuracy=0.0,
                       budgeted_macs=float(costs[0]))
            if row["budget_met"]:
                fit = fit_thresholds(opts.method, fit_probs, fit_labels, costs, budget, n_trials=opts.optuna_trials,
                                     seed=settings.seed)
                row["budgeted_accuracy"], row["budgeted_macs"] = apply_thresholds(probs, labels, fit.thresholds,
                                                                                  costs)
            final = row
            on_epoch(epoch, dict(row))

        train_multi_exit(model, replace(data, train=train), settings, exit_weights=opts.exit_weights, on_epoch=score)
        return final


TASK = EarlyExitTask()
