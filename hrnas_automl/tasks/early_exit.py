"""Multi-exit (anytime) networks such as RANet: training, per-exit evaluation and budgeted early exiting.

A multi-exit network returns one logit tensor per exit, cheapest first. This module

* trains it with the sum of the exits' cross-entropies (RANet ``main.py``; REFERENCE §4.1),
* scores every exit on its own (*anytime* prediction: :func:`anytime_accuracy`),
* fits per-exit confidence thresholds for *budgeted batch classification* (REFERENCE §4.3): a sample leaves at
  the first exit whose softmax confidence reaches that exit's threshold, and the thresholds are chosen to maximise
  accuracy under an average-cost budget. :func:`fit_geometric` is the paper's scan over geometric exit priors;
  :func:`fit_optuna` searches the thresholds directly with Optuna's constrained TPE, started from the geometric
  solution. Unlike the official code, which fits on the *test* set (REFERENCE §5.17), the thresholds are meant to
  be fitted on a held-out validation split and then applied to test data with :func:`apply_thresholds`,
* runs the fitted policy for real with :class:`EarlyExitRunner`, which stops computing once a sample has exited.

The fitting functions work on precomputed probabilities (:func:`collect_exit_probs`), so a whole budget curve
costs one forward pass over the data.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from hrnas_automl.cost import count_cost
from hrnas_automl.data import ClassificationData
from hrnas_automl.spaces.ranet import RANet, exit_macs
from hrnas_automl.config import TrainSettings
from hrnas_automl.data.loading import IN_PROCESS, make_loader
from hrnas_automl.runtime.device import device_of
from hrnas_automl.tasks import training

__all__ = ["ThresholdFit", "BudgetPoint", "THRESHOLD_METHODS", "train_multi_exit", "early_exit_costs",
           "collect_exit_probs", "anytime_accuracy", "exit_assignment", "apply_thresholds", "geometric_thresholds",
           "fit_geometric", "fit_optuna", "fit_thresholds", "budget_curve", "EarlyExitRunner"]

# The paper's scan of exit priors: q = p / 20 for p = 1..39 (adaptive_inference.py:27-31).
_GEOMETRIC_QS = tuple(p / 20 for p in range(1, 40))


@dataclass(frozen=True)
class ThresholdFit:
    """Fitted per-exit thresholds (the last is ``-inf``: every sample left leaves there) and their accuracy and
    average cost on the data they were fitted on; ``true_prob`` is the mean softmax probability of the true class
    at the exit each sample takes there (the tie-break between fits of equal accuracy)."""

    thresholds: tuple[float, ...]
    accuracy: float
    avg_cost: float
    true_prob: float = 0.0


def _as_exit_list(outputs: Any, model: nn.Module) -> list[torch.Tensor]:
    """The model's per-exit logits; a model returning a single tensor is not a multi-exit network."""
    if isinstance(outputs, torch.Tensor) or not outputs:
        raise ValueError(f"{type(model).__name__} must return a non-empty list of per-exit logits")
    return list(outputs)


def _exit_weights(exit_weights: Sequence[float] | None, n_exits: int) -> list[float]:
    """The loss weight of every exit (all 1: the official unweighted sum), checked against the exit count."""
    if exit_weights is None:
        return [1.0] * n_exits
    weights = [float(w) for w in exit_weights]
    if len(weights) != n_exits or any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"exit_weights needs {n_exits} finite non-negative numbers (one per exit), "
                         f"got {list(exit_weights)}")
    return weights


def train_multi_exit(model: nn.Module, data: ClassificationData, settings: TrainSettings, *,
                     exit_weights: Sequence[float] | None = None,
                     on_epoch: Callable[[int, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train a multi-exit ``model`` on ``data.train`` with the (optionally weighted) sum of the exits'
    cross-entropies, evaluating every exit on ``data.val`` after each epoch.

    The recipe is the package's trainer (:func:`hrnas_automl.tasks.training.fit`), as for classification: SGD with
    momentum and weight decay, cosine LR over all steps, label smoothing, ``settings.seed`` seeding torch's global
    RNG and the shuffling, so the same seed and initial weights give identical metrics; only the loss and the
    validation metrics differ.

    ``on_epoch(index, metrics)`` gets ``{"accuracy"`` (last exit), ``"exit_accuracy"`` (list, one per exit),
    ``"loss"`` (validation loss, weighted sum over exits), ``"train_loss"}`` after each epoch; the last epoch's
    dict is returned.
    """
    criterion = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)

    def summed_loss(outputs: Any, labels: torch.Tensor) -> torch.Tensor:
        logits = _as_exit_list(outputs, model)
        return sum(w * criterion(y, labels) for w, y in zip(_exit_weights(exit_weights, len(logits)), logits))

    def evaluate(net: nn.Module) -> dict[str, Any]:
        if len(data.val) == 0:
            raise ValueError("cannot evaluate on an empty dataset; give the validation split at least one image")
        probs, labels = collect_exit_probs(net, data.val, batch_size=settings.batch_size, loading=settings)
        exit_accuracy = anytime_accuracy(probs, labels)
        # Cross-entropy from the softmax (clamped: a probability that underflowed to 0 would give inf).
        true_probs = probs.gather(2, labels.view(1, -1, 1).expand(probs.shape[0], -1, 1)).squeeze(2)
        nll = -true_probs.clamp_min(1e-12).log()
        weights = _exit_weights(exit_weights, probs.shape[0])
        val_loss = sum(w * nll[k].mean().item() for k, w in enumerate(weights))
        return {"accuracy": exit_accuracy[-1], "exit_accuracy": exit_accuracy, "loss": float(val_loss)}

    return training.fit(model, training.train_loader(data.train, settings), settings, on_epoch, loss=summed_loss,
                        evaluate=evaluate)


def _find_ranet(model: nn.Module, user: str) -> RANet:
    net = next((m for m in model.modules() if isinstance(m, RANet)), None)
    if net is None:
        raise ValueError(f"{user} needs a RANet (or a module holding one), got {type(model).__name__}")
    return net


@torch.no_grad()
def early_exit_costs(model: nn.Module, input_shape: tuple[int, int, int]) -> list[int]:
    """MACs per image of a sample leaving at each exit of a RANet under early exiting: the sub-networks up to
    that exit plus the heads of that exit *and every earlier one*, which were evaluated and passed over.

    :func:`hrnas_automl.spaces.ranet.exit_macs` counts only the leaving exit's head (the anytime convention), so
    its values need not grow from exit to exit (the 128-wide CIFAR heads are costly); these always do.
    """
    net = _find_ranet(model, "early_exit_costs")
    was_training = net.training
    net.eval()
    try:
        features = list(net.exit_features(torch.zeros(1, *input_shape)))
    finally:
        net.train(was_training)
    head_macs = [count_cost(head, tuple(f.shape[1:])).macs for head, f in zip(net.exits, features)]
    return [macs + sum(head_macs[:k]) for k, macs in enumerate(exit_macs(net, input_shape))]


@torch.no_grad()
def collect_exit_probs(model: nn.Module, dataset: Dataset, batch_size: int = 256, *,
                       device: str | torch.device | None = None, loading: TrainSettings = IN_PROCESS
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities of every exit on ``dataset`` (eval mode, loaded as ``loading`` says): ``probs``
    ``(E, N, K)`` and ``labels`` ``(N,)``, both on the CPU, in dataset order."""
    if len(dataset) == 0:
        raise ValueError("cannot evaluate on an empty dataset; give the split at least one image")
    device = device_of(model) if device is None else device
    model.eval().to(device)
    chunks, targets = [], []
    for images, labels in make_loader(dataset, loading, batch_size=batch_size):
        logits = _as_exit_list(model(images.to(device)), model)
        chunks.append(torch.stack([y.float().softmax(dim=1) for y in logits]).cpu())
        targets.append(labels)
    return torch.cat(chunks, dim=1), torch.cat(targets)


def _check_probs(probs: torch.Tensor, labels: torch.Tensor) -> None:
    if probs.ndim != 3 or labels.ndim != 1 or probs.shape[1] != labels.shape[0] or probs.shape[1] == 0:
        raise ValueError(f"need probs (exits, N, classes) and labels (N,) with N >= 1, "
                         f"got {tuple(probs.shape)} and {tuple(labels.shape)}")


def anytime_accuracy(probs: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Top-1 accuracy of every exit on its own (anytime prediction, RANet ``main.py:185-252``)."""
    _check_probs(probs, labels)
    return (probs.argmax(dim=2) == labels).float().mean(dim=1).tolist()


def _check_costs(exit_costs: Sequence[float], n_exits: int) -> torch.Tensor:
    """Per-exit cumulative costs as a float64 tensor; they must be one per exit and non-decreasing."""
    costs = torch.tensor([float(c) for c in exit_costs], dtype=torch.float64)
    if costs.numel() != n_exits or not torch.isfinite(costs).all() or (costs.diff() < 0).any():
        raise ValueError(f"exit_costs needs {n_exits} finite, non-decreasing (cumulative) costs, "
                         f"got {list(exit_costs)} (early_exit_costs gives them for a RANet)")
    return costs


def _decide(confidence: torch.Tensor, thresholds: Sequence[float]) -> torch.Tensor:
    """Exit index of every sample: the first exit ``k`` with ``confidence[k] >= thresholds[k]``; the last exit
    takes everything left whatever its threshold."""
    n_exits = confidence.shape[0]
    if len(thresholds) != n_exits:
        raise ValueError(f"need {n_exits} thresholds (one per exit; the last is ignored), got {len(thresholds)}")
    limits = torch.tensor([float(t) for t in thresholds[:-1]] + [-math.inf], dtype=confidence.dtype)
    passes = confidence >= limits.view(-1, 1)
    return passes.int().argmax(dim=0)  # argmax returns the first maximum: the first exit passed


def exit_assignment(probs: torch.Tensor, thresholds: Sequence[float]) -> torch.Tensor:
    """The exit every sample leaves at (``(N,)`` int64) under ``thresholds`` (one per exit, last ignored)."""
    if probs.ndim != 3:
        raise ValueError(f"need probs (exits, N, classes), got {tuple(probs.shape)}")
    return _decide(probs.amax(dim=2), thresholds)


@dataclass(frozen=True)
class _Scored:
    """Per-exit confidence, correctness and true-class probability ``(E, N)`` of fitting data, and the exit costs."""

    confidence: torch.Tensor
    correct: torch.Tensor
    true_prob: torch.Tensor
    costs: torch.Tensor

    def fit(self, thresholds: Sequence[float]) -> ThresholdFit:
        """The policy ``thresholds`` scored on this data."""
        exits = _decide(self.confidence, thresholds).view(1, -1)
        return ThresholdFit(tuple(thresholds), self.correct.gather(0, exits).float().mean().item(),
                            self.costs[exits].mean().item(), self.true_prob.gather(0, exits).mean().item())


def _prepare(probs: torch.Tensor, labels: torch.Tensor, exit_costs: Sequence[float]) -> _Scored:
    """The checked inputs as a :class:`_Scored`."""
    _check_probs(probs, labels)
    costs = _check_costs(exit_costs, probs.shape[0])
    confidence, predicted = probs.max(dim=2)
    true_prob = probs.gather(2, labels.view(1, -1, 1).expand(probs.shape[0], -1, 1)).squeeze(2)
    return _Scored(confidence, predicted == labels, true_prob, costs)


def apply_thresholds(probs: torch.Tensor, labels: torch.Tensor, thresholds: Sequence[float],
                     exit_costs: Sequence[float]) -> tuple[float, float]:
    """Accuracy and average cost per sample when every sample leaves at the first exit whose max probability
    is ``>=`` its threshold (the last exit takes the rest; its threshold is ignored, i.e. ``-inf``).

    ``exit_costs[k]`` is the cumulative cost of a sample leaving at exit ``k`` (e.g.
    :func:`hrnas_automl.spaces.ranet.exit_macs`); the average is the official expected cost
    ``sum_k fraction_k * cost_k`` (adaptive_inference.py:134-162).
    """
    fit = _prepare(probs, labels, exit_costs).fit(thresholds)
    return fit.accuracy, fit.avg_cost


def _geometric(confidence: torch.Tensor, q: float) -> tuple[float, ...]:
    """Thresholds for exit prior ``P_k ∝ q^k`` on confidences ``(E, N)`` (adaptive_inference.py:85-132)."""
    if not (isinstance(q, (int, float)) and not isinstance(q, bool) and q > 0 and math.isfinite(q)):
        raise ValueError(f"q must be a positive number, got {q!r}")
    n_exits, n = confidence.shape
    prior = [q ** k for k in range(1, n_exits + 1)]
    total = sum(prior)
    exited = torch.zeros(n, dtype=torch.bool)
    thresholds = []
    for k in range(n_exits - 1):
        out_n = math.floor(n * prior[k] / total)
        remaining = confidence[k][~exited].sort(descending=True).values
        # The official code leaves T_k at 1e8 (nobody exits) when fewer than out_n samples remain or out_n is 0.
        threshold = remaining[out_n - 1].item() if 1 <= out_n <= remaining.numel() else math.inf
        thresholds.append(threshold)
        exited |= confidence[k] >= threshold
    return (*thresholds, -math.inf)


def geometric_thresholds(val_probs: torch.Tensor, q: float) -> tuple[float, ...]:
    """The paper's thresholds for the geometric exit prior ``P_k ∝ q^k`` (k = 1..E, normalised).

    Exit by exit, among the samples that have not exited yet, the threshold is the confidence of the
    ``floor(N * P_k)``-th most confident one (``inf`` when there is no such sample: nobody exits there); the
    last threshold is ``-inf``. ``q < 1`` sends most samples to the early exits, ``q > 1`` to the late ones.
    """
    if val_probs.ndim != 3 or val_probs.shape[1] == 0:
        raise ValueError(f"need val_probs (exits, N, classes) with N >= 1, got {tuple(val_probs.shape)}")
    return _geometric(val_probs.amax(dim=2), q)


def _check_budget(budget: float, costs: torch.Tensor) -> None:
    smallest = costs[0].item()
    if not budget >= smallest:
        raise ValueError(f"budget {budget!r} is below the smallest reachable average cost {smallest:g} "
                         "(every sample leaving at the first exit)")


def _better(candidate: ThresholdFit, best: ThresholdFit) -> bool:
    """Higher accuracy wins; at equal accuracy the higher mean true-class probability, then the cheaper policy.

    The probability tie-break matters when the fitting data is nearly solved: many policies then tie on accuracy,
    and the cheapest of them sits exactly at the edge where fitting samples are still right by a hair, which
    does not carry over to new data (cheapest-first lost 1 test image at 4 of 5 budgets in
    the digits version of bench/ranet_thresholds.py).
    """
    return ((candidate.accuracy, candidate.true_prob, -candidate.avg_cost)
            > (best.accuracy, best.true_prob, -best.avg_cost))


def _fit_geometric(scored: _Scored, budget: float) -> ThresholdFit:
    _check_budget(budget, scored.costs)
    # Every sample at the first exit is always feasible: the fallback when no geometric prior fits the budget.
    best = scored.fit((*(0.0,) * (scored.confidence.shape[0] - 1), -math.inf))
    for q in _GEOMETRIC_QS:
        candidate = scored.fit(_geometric(scored.confidence, q))
        if candidate.avg_cost <= budget and _better(candidate, best):
            best = candidate
    return best


def fit_geometric(val_probs: torch.Tensor, val_labels: torch.Tensor, exit_costs: Sequence[float],
                  budget: float) -> ThresholdFit:
    """The paper's threshold search: scan ``q = p/20``, ``p = 1..39`` (:func:`geometric_thresholds`) and keep the
    thresholds with the best validation accuracy whose average cost is ``<= budget`` (ties: the higher mean
    true-class probability at the exits taken, then the cheaper).

    The trivial policy "every sample at the first exit" is scanned too, so every budget from ``exit_costs[0]`` up
    has an answer; a smaller budget raises ``ValueError`` naming the smallest reachable cost.
    """
    return _fit_geometric(_prepare(val_probs, val_labels, exit_costs), budget)


def _significant_gain(scored: _Scored, candidate: ThresholdFit, reference: ThresholdFit, min_gain_se: float) -> bool:
    """Whether ``candidate`` gets more fitting samples right than ``reference`` by more than ``min_gain_se`` standard
    errors of the paired difference (McNemar: samples only it gets right ``b``, only the reference ``c``; gain
    ``b - c`` against ``sqrt(b + c)``). Identical correctness (``b = c = 0``) counts, so the tie-break decides."""
    def right(fit: ThresholdFit) -> torch.Tensor:
        return scored.correct.gather(0, _decide(scored.confidence, fit.thresholds).view(1, -1))[0]

    ours, theirs = right(candidate), right(reference)
    b, c = int((ours & ~theirs).sum()), int((~ours & theirs).sum())
    return b + c == 0 or b - c > min_gain_se * math.sqrt(b + c)


def _quantile_thresholds(confidence: torch.Tensor) -> Callable[[Sequence[float]], tuple[float, ...]]:
    """Map positions ``u_k`` in [0, 1] to thresholds for all but the last exit: ``u_k`` picks the
    ``floor(u_k * (N + 1))``-th smallest fitting confidence of exit ``k`` (``N`` picks ``inf``: nobody exits).

    Searching positions instead of raw thresholds spreads the trials evenly over the policies the fitting data can
    tell apart; the confidences of well-trained exits bunch just below 1, where raw thresholds in [0, 1] would
    leave most trials on a handful of policies."""
    n = confidence.shape[1]
    ladders = [torch.cat([row.sort().values.double(), torch.tensor([math.inf], dtype=torch.float64)])
               for row in confidence[:-1]]

    def thresholds(positions: Sequence[float]) -> tuple[float, ...]:
        return (*(ladder[min(math.floor(u * (n + 1)), n)].item() for ladder, u in zip(ladders, positions)),
                -math.inf)

    return thresholds


def _positions(confidence: torch.Tensor, thresholds: Sequence[float]) -> list[float]:
    """Positions that :func:`_quantile_thresholds` maps to the same exit decisions as ``thresholds``: the smallest
    fitting confidence ``>=`` each threshold (or ``inf``), at the middle of its interval of positions."""
    n = confidence.shape[1]
    return [(torch.searchsorted(row.sort().values.double(), torch.tensor([float(t)], dtype=torch.float64)).item()
             + 0.5) / (n + 1) for row, t in zip(confidence[:-1], thresholds)]


def fit_optuna(val_probs: torch.Tensor, val_labels: torch.Tensor, exit_costs: Sequence[float], budget: float, *,
               n_trials: int = 300, seed: int = 0, min_gain_se: float = 2.0) -> ThresholdFit:
    """Search the per-exit thresholds (all but the last) with a seeded multivariate Optuna TPE study maximising
    validation accuracy under the constraint ``average cost <= budget``.

    Each threshold is searched as a position among its exit's fitting confidences (:func:`_quantile_thresholds`),
    jointly (multivariate TPE: the budget couples the exits). Every trial records the constraint
    ``avg_cost - budget`` (feasible when ``<= 0``) with ``Trial.set_constraint``, which the TPE sampler uses to
    rank infeasible trials below feasible ones (Optuna 5's replacement of ``constraints_func``); the best trial is
    picked among the feasible ones only (ties: as in :func:`fit_geometric`). The first trial is
    :func:`fit_geometric`'s solution (``study.enqueue_trial``, exactly the same exit decisions), so the study
    starts feasible and the result is never worse on validation. Same inputs and seed, same result.

    Free thresholds overfit the fitting split: the best of hundreds of trials can win there by a few samples that
    do not carry over. So the best trial replaces the geometric solution only when its gain in correctly
    classified fitting samples exceeds ``min_gain_se`` standard errors of the paired difference
    (:func:`_significant_gain`; ``0`` keeps any gain).
    """
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"n_trials must be a positive integer, got {n_trials!r}")
    if not (isinstance(min_gain_se, (int, float)) and min_gain_se >= 0):
        raise ValueError(f"min_gain_se must be a number >= 0, got {min_gain_se!r}")
    from hrnas_automl.tuning.thresholds import constrained_tpe

    scored = _prepare(val_probs, val_labels, exit_costs)
    geometric = _fit_geometric(scored, budget)
    to_thresholds = _quantile_thresholds(scored.confidence)
    fits: list[ThresholdFit] = []

    def objective(positions: list[float]) -> tuple[float, float]:
        fits.append(scored.fit(to_thresholds(positions)))
        return fits[-1].accuracy, fits[-1].avg_cost - budget

    names = [f"position_{k}" for k in range(scored.confidence.shape[0] - 1)]
    feasible = constrained_tpe(objective, names, n_trials=n_trials, seed=seed,
                               start=_positions(scored.confidence, geometric.thresholds))
    best = geometric
    for number in feasible:
        if _better(fits[number], best):
            best = fits[number]
    return best if _significant_gain(scored, best, geometric, min_gain_se) else geometric


THRESHOLD_METHODS = ("geometric", "optuna")


def fit_thresholds(method: str, val_probs: torch.Tensor, val_labels: torch.Tensor, exit_costs: Sequence[float],
                   budget: float, *, n_trials: int = 300, seed: int = 0) -> ThresholdFit:
    """:func:`fit_geometric` (``method="geometric"``) or :func:`fit_optuna` (``"optuna"``, with ``n_trials`` and
    ``seed``) by name, as trial configs and command lines give it."""
    if method == "geometric":
        return fit_geometric(val_probs, val_labels, exit_costs, budget)
    if method == "optuna":
        return fit_optuna(val_probs, val_labels, exit_costs, budget, n_trials=n_trials, seed=seed)
    raise ValueError(f"unknown threshold method {method!r}; use one of: {', '.join(THRESHOLD_METHODS)}")


@dataclass(frozen=True)
class BudgetPoint:
    """One point of a budgeted-classification curve: thresholds fitted for ``budget`` on validation data
    (``fit``), and the ``accuracy`` and average cost they give on test data."""

    method: str
    budget: float
    fit: ThresholdFit
    accuracy: float
    avg_cost: float


def budget_curve(val_probs: torch.Tensor, val_labels: torch.Tensor, test_probs: torch.Tensor,
                 test_labels: torch.Tensor, exit_costs: Sequence[float], budgets: Sequence[float], *,
                 methods: Sequence[str] = THRESHOLD_METHODS, n_trials: int = 300,
                 seed: int = 0) -> dict[str, list[BudgetPoint]]:
    """Budgeted batch classification, honestly: for every method and budget, fit the thresholds on the
    validation probabilities only, then measure accuracy and average cost on the test probabilities.

    Returns ``{method: [BudgetPoint per budget, in the given order]}``.
    """
    if test_probs.shape[0] != val_probs.shape[0]:
        raise ValueError(f"validation and test probabilities need the same number of exits, "
                         f"got {val_probs.shape[0]} and {test_probs.shape[0]}")
    curves: dict[str, list[BudgetPoint]] = {}
    for method in methods:
        points = []
        for budget in budgets:
            fit = fit_thresholds(method, val_probs, val_labels, exit_costs, budget, n_trials=n_trials, seed=seed)
            accuracy, avg_cost = apply_thresholds(test_probs, test_labels, fit.thresholds, exit_costs)
            points.append(BudgetPoint(method, float(budget), fit, accuracy, avg_cost))
        curves[method] = points
    return curves


class EarlyExitRunner:
    """Runs a fitted early-exit policy for real: per sample, the sub-networks run in order through
    :meth:`RANet.exit_features` and stop at the first exit whose softmax confidence reaches its threshold, so
    a sample that exits early never computes the later blocks (nor the later exits' heads).

    Args:
        model: a :class:`~hrnas_automl.spaces.ranet.RANet` or a module holding one (a frozen ``RANetSpace``).
        thresholds: one per exit (e.g. :attr:`ThresholdFit.thresholds`); the last is ignored (``-inf``).
    """

    def __init__(self, model: nn.Module, thresholds: Sequence[float]) -> None:
        net = _find_ranet(model, "EarlyExitRunner")
        if len(thresholds) != len(net.exits):
            raise ValueError(f"need {len(net.exits)} thresholds (one per exit; the last is ignored), "
                             f"got {len(thresholds)}")
        self.net = net
        self.thresholds = (*(float(t) for t in thresholds[:-1]), -math.inf)

    def _run_one(self, image: torch.Tensor) -> tuple[torch.Tensor, int]:
        for k, (head, features) in enumerate(zip(self.net.exits, self.net.exit_features(image))):
            logits = head(features)
            if logits.softmax(dim=1).amax().item() >= self.thresholds[k]:
                return logits[0], k
        raise ValueError(f"the network yielded fewer exit features than its {len(self.net.exits)} exits")

    @torch.no_grad()
    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, int | torch.Tensor]:
        """Logits and exit index of one image ``(C, H, W)`` -> ``((K,), int)``, or of every image of a batch
        ``(B, C, H, W)`` -> ``((B, K), (B,) int64)``. Puts the network in eval mode; a batch runs one sample at
        a time, so each sample pays only for its own exit."""
        self.net.eval()
        if x.ndim == 3:
            return self._run_one(x.unsqueeze(0))
        if x.ndim != 4 or x.shape[0] == 0:
            raise ValueError(f"need one image (C, H, W) or a non-empty batch (B, C, H, W), got {tuple(x.shape)}")
        results = [self._run_one(image.unsqueeze(0)) for image in x]
        return torch.stack([logits for logits, _ in results]), torch.tensor([k for _, k in results])
