"""Early exiting: multi-exit training, per-exit evaluation, threshold fitting under a budget, and the runtime
that really skips the later sub-networks."""
from __future__ import annotations

import math
from collections.abc import Sequence

import optuna
import pytest
import torch
from torch import nn

from hrnas_automl.data import build_classification_data
from hrnas_automl.spaces.ranet import RANet, RANetConfig, exit_macs
from hrnas_automl.config import TrainSettings
from hrnas_automl.tasks.early_exit import (
    EarlyExitRunner,
    _positions,
    _quantile_thresholds,
    anytime_accuracy,
    apply_thresholds,
    collect_exit_probs,
    early_exit_costs,
    exit_assignment,
    fit_geometric,
    fit_optuna,
    geometric_thresholds,
    train_multi_exit,
)

# Two flows at 16x16 and 8x8 (a 16x16 input gives the CIFAR heads their 8x8 maps), 3 exits, ~0.5M parameters.
TINY = RANetConfig(scale_list=(1, 2), n_channels=4, growth_rate=4, gr_factor=(2, 1), bn_factor=(2, 1), step=1,
                   block_step=1, num_classes=4)
INPUT = (3, 16, 16)


def tiny_ranet(seed: int = 0) -> RANet:
    torch.manual_seed(seed)
    return RANet(TINY)


@pytest.fixture(scope="module")
def data():
    return build_classification_data("synthetic", num_classes=4, image_size=16, train_size=256, val_size=128)


@pytest.fixture(scope="module")
def trained(data):
    """One 3-epoch run: (model, final metrics, per-epoch calls)."""
    calls: list[tuple[int, dict]] = []
    model = tiny_ranet()
    final = train_multi_exit(model, data, TrainSettings(epochs=3, batch_size=32, lr=0.05, seed=0),
                             on_epoch=lambda i, m: calls.append((i, m)))
    return model, final, calls


@pytest.fixture(autouse=True, scope="module")
def quiet_optuna():
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(level)


def test_train_multi_exit_reduces_the_loss_and_reports_every_exit(trained):
    _, final, calls = trained
    assert [i for i, _ in calls] == [0, 1, 2]
    assert calls[-1][1]["train_loss"] < calls[0][1]["train_loss"]
    assert final["loss"] < 3 * math.log(4)  # untrained: ~ln(4) per exit, summed over 3 exits
    assert len(final["exit_accuracy"]) == 3
    assert final["accuracy"] == final["exit_accuracy"][-1]
    assert calls[-1][1] == final


def test_exit_weights_are_checked(data):
    with pytest.raises(ValueError, match="exit_weights needs 3"):
        train_multi_exit(tiny_ranet(), data, TrainSettings(epochs=1), exit_weights=[1.0, 1.0])


def test_probs_and_anytime_accuracy_match_the_model(trained, data):
    model, final, _ = trained
    probs, labels = collect_exit_probs(model, data.val, batch_size=50)
    assert probs.shape == (3, len(data.val), 4)
    assert torch.allclose(probs.sum(dim=2), torch.ones(3, len(data.val)))
    accuracy = anytime_accuracy(probs, labels)
    assert len(accuracy) == len(model.exits) == 3
    assert accuracy == pytest.approx(final["exit_accuracy"])
    images = torch.stack([data.val[i][0] for i in range(len(data.val))])
    with torch.no_grad():
        manual = [(y.argmax(dim=1) == labels).float().mean().item() for y in model.eval()(images)]
    assert accuracy == pytest.approx(manual)


COSTS = [10.0, 20.0, 40.0]


def random_probs(n: int = 400, n_exits: int = 3, classes: int = 5,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Later exits are more accurate and more confident on the samples they get right, as in a real network."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    logits = torch.randn(n_exits, n, classes, generator=g) * 1.5
    signal = torch.rand(n, generator=g) * 4  # per-sample easiness
    for k in range(n_exits):
        logits[k, torch.arange(n), labels] += signal * (k + 1) / n_exits + 0.5 * k
    return logits.softmax(dim=2), labels


def test_all_zero_thresholds_exit_everything_first_and_above_one_everything_last():
    probs, labels = random_probs()
    accuracy = anytime_accuracy(probs, labels)
    assert apply_thresholds(probs, labels, [0.0, 0.0, 0.0], COSTS) == (pytest.approx(accuracy[0]), COSTS[0])
    assert exit_assignment(probs, [0.0, 0.0, 0.0]).eq(0).all()
    assert apply_thresholds(probs, labels, [1.01, 1.01, 1.01], COSTS) == (pytest.approx(accuracy[-1]), COSTS[-1])
    assert exit_assignment(probs, [1.01, 1.01, 0.0]).eq(2).all()


def test_hand_made_probs_exit_where_expected():
    # 3 exits, 4 samples, 2 classes; p[k][i] = probability of class 1.
    p = torch.tensor([[0.9, 0.4, 0.55, 0.2],
                      [0.1, 0.3, 0.75, 0.1],
                      [0.5, 0.9, 0.2, 0.6]])
    probs = torch.stack([1 - p, p], dim=2)
    labels = torch.tensor([1, 1, 0, 0])
    # Confidences: exit 0 = [.9, .6, .55, .8], exit 1 = [.9, .7, .75, .9]. With thresholds (.85, .8):
    # sample 0 exits at 0 (pred 1, right), sample 1 at 2 (pred 1, right), sample 2 at 2 (pred 0, right),
    # sample 3 at 1 (conf .9, pred 0, right).
    thresholds = [0.85, 0.8, 0.99]  # the last one is ignored
    assert exit_assignment(probs, thresholds).tolist() == [0, 2, 2, 1]
    accuracy, cost = apply_thresholds(probs, labels, thresholds, COSTS)
    assert accuracy == pytest.approx(4 / 4)
    assert cost == pytest.approx((10 + 40 + 40 + 20) / 4)
    # Threshold .5 at exit 0: everyone exits there; predictions [1, 0, 1, 0] against [1, 1, 0, 0].
    assert apply_thresholds(probs, labels, [0.5, 0.5, 0.5], COSTS) == (pytest.approx(0.5), 10.0)


def test_geometric_thresholds_follow_the_official_rule():
    # q = 1: uniform prior over 2 exits, so floor(10 * 0.5) = 5 samples leave at exit 0 (the 5 most confident).
    confidence = torch.tensor([0.95, 0.5, 0.9, 0.6, 0.85, 0.55, 0.8, 0.7, 0.52, 0.65])
    probs = torch.stack([torch.stack([confidence, 1 - confidence], dim=1)] * 2)
    thresholds = geometric_thresholds(probs, 1.0)
    assert thresholds[0] == pytest.approx(0.7)
    assert thresholds[1] == -math.inf
    assert exit_assignment(probs, thresholds).eq(0).sum() == 5
    # 3 exits, q = 1, N = 10: floor(10/3) = 3 at exit 0, then the 3 most confident of the 7 left at exit 1.
    probs3 = torch.stack([torch.stack([confidence, 1 - confidence], dim=1)] * 3)
    assert exit_assignment(probs3, geometric_thresholds(probs3, 1.0)).bincount().tolist() == [3, 3, 4]


def test_fits_respect_the_budget_and_optuna_is_never_worse():
    probs, labels = random_probs()
    budget = 22.0
    geometric = fit_geometric(probs, labels, COSTS, budget)
    optimised = fit_optuna(probs, labels, COSTS, budget, n_trials=80, seed=0)
    for fit in (geometric, optimised):
        assert fit.avg_cost <= budget
        assert apply_thresholds(probs, labels, fit.thresholds, COSTS) == (pytest.approx(fit.accuracy),
                                                                           pytest.approx(fit.avg_cost))
    assert optimised.accuracy >= geometric.accuracy
    # The budget matters: more of it buys accuracy (the last exit is clearly the best one here).
    generous, tight = (fit_geometric(probs, labels, COSTS, b) for b in (COSTS[-1], 12.0))
    assert generous.accuracy > tight.accuracy
    assert fit_optuna(probs, labels, COSTS, budget, n_trials=80, seed=0) == optimised  # seeded


def test_budget_below_the_first_exit_is_rejected():
    probs, labels = random_probs(n=20)
    for fit in (fit_geometric, fit_optuna):
        with pytest.raises(ValueError, match="smallest reachable average cost 10"):
            fit(probs, labels, COSTS, 9.5)
    with pytest.raises(ValueError, match="non-decreasing"):
        apply_thresholds(probs, labels, [0.0, 0.0, 0.0], [10.0, 30.0, 20.0])


def test_early_exit_costs_add_the_skipped_heads():
    net = tiny_ranet().eval()
    anytime = exit_macs(net, INPUT)
    costs = early_exit_costs(net, INPUT)
    assert costs[0] == anytime[0]
    assert all(c > a for c, a in zip(costs[1:], anytime[1:]))
    assert costs == sorted(costs)


def count_calls(modules: list[nn.Module]) -> list[int]:
    counter = [0]
    for module in modules:
        module.register_forward_hook(lambda *_: counter.__setitem__(0, counter[0] + 1))
    return counter


def test_runner_stops_at_the_first_exit_without_running_later_blocks():
    net = tiny_ranet().eval()
    x = torch.randn(3, *INPUT)
    with torch.no_grad():
        expected = net(x)[0]
    later = count_calls([net.flows[0][1], *net.flows[1:], *net.exits[1:]])
    first = count_calls([net.flows[0][0]])
    logits, exits = EarlyExitRunner(net, [0.0, 1.01, 1.01]).run(x)
    assert exits.tolist() == [0, 0, 0]
    assert later[0] == 0
    assert first[0] == 3  # one sample at a time
    assert torch.allclose(logits, expected, atol=1e-5)
    single, index = EarlyExitRunner(net, [0.0, 1.01, 1.01]).run(x[1])
    assert index == 0 and torch.allclose(single, expected[1], atol=1e-5)


def test_runner_with_unreachable_thresholds_uses_the_last_exit():
    net = tiny_ranet().eval()
    x = torch.randn(2, *INPUT)
    with torch.no_grad():
        expected = net(x)[-1]
    logits, exits = EarlyExitRunner(net, [1.01, 1.01, 1.01]).run(x)
    assert exits.tolist() == [2, 2]
    assert torch.allclose(logits, expected, atol=1e-5)


def test_runner_agrees_with_the_offline_policy(trained, data):
    model, _, _ = trained
    probs, _ = collect_exit_probs(model, data.val)
    probs = probs[:, :32]
    # Thresholds halfway between two neighbouring confidences (the median ones), so that the per-sample
    # recomputation's rounding cannot flip a decision: about half the samples leave at each of exits 0 and 1.
    thresholds = []
    for confidence in probs.amax(dim=2)[:2]:
        ordered = confidence.sort().values
        thresholds.append(((ordered[15] + ordered[16]) / 2).item())
    images = torch.stack([data.val[i][0] for i in range(32)])
    _, exits = EarlyExitRunner(model, [*thresholds, 0.0]).run(images)
    expected = exit_assignment(probs, [*thresholds, 0.0])
    assert exits.tolist() == expected.tolist()
    assert set(expected.tolist()) == {0, 1, 2}


def test_equal_accuracy_ties_go_to_the_surer_policy_not_the_cheapest():
    # Both exits are always right, exit 0 barely (true class 0.55..0.62), exit 1 surely (0.95): every policy has
    # accuracy 1, the cheapest sends everyone to exit 0 (cost 10), the surest everyone to exit 1 (cost 20).
    n = 8
    labels = torch.zeros(n, dtype=torch.long)
    first = 0.55 + 0.01 * torch.arange(n, dtype=torch.float32)
    probs = torch.stack([torch.stack([first, 1 - first], dim=1), torch.tensor([[0.95, 0.05]] * n)])
    optimised = fit_optuna(probs, labels, [10, 20], 20, n_trials=20)
    assert (optimised.accuracy, optimised.avg_cost) == (1.0, 20) and optimised.true_prob == pytest.approx(0.95)
    # The geometric scan sends at least floor(8 / (1 + 1.95)) = 2 samples to exit 0 (q = 1.95, the largest prior);
    # that is its surest policy: the 2 most confident at exit 0, the other 6 at exit 1.
    geometric = fit_geometric(probs, labels, [10, 20], 20)
    assert geometric.avg_cost == pytest.approx((2 * 10 + 6 * 20) / 8)
    assert geometric.true_prob == pytest.approx((0.62 + 0.61 + 6 * 0.95) / 8)
    # Under a budget that only cheaper policies meet, the budget wins.
    assert fit_geometric(probs, labels, [10, 20], 12).avg_cost <= 12


def right_answers(probs: torch.Tensor, labels: torch.Tensor, thresholds: Sequence[float]) -> torch.Tensor:
    """Which samples the exit each one takes under ``thresholds`` classifies right (counted here, not by the fit)."""
    exits = exit_assignment(probs, thresholds)
    return probs.argmax(dim=2)[exits, torch.arange(labels.numel())] == labels


def test_optuna_replaces_the_geometric_fit_only_for_a_significant_gain():
    probs, labels = random_probs()
    geometric = fit_geometric(probs, labels, COSTS, 22.0)
    free = fit_optuna(probs, labels, COSTS, 22.0, n_trials=80, min_gain_se=0)
    assert free.accuracy > geometric.accuracy
    assert fit_optuna(probs, labels, COSTS, 22.0, n_trials=80, min_gain_se=1e6) == geometric

    ours, theirs = right_answers(probs, labels, free.thresholds), right_answers(probs, labels, geometric.thresholds)
    b, c = int((ours & ~theirs).sum()), int((~ours & theirs).sum())
    expected = free if b - c > 2 * math.sqrt(b + c) else geometric
    assert fit_optuna(probs, labels, COSTS, 22.0, n_trials=80) == expected
    with pytest.raises(ValueError, match="min_gain_se must be a number >= 0"):
        fit_optuna(probs, labels, COSTS, 22.0, min_gain_se=-1)


@pytest.mark.parametrize("q", [0.3, 1.0, 1.9])
def test_optuna_warm_start_reproduces_the_geometric_decisions(q):
    # The first Optuna trial is the geometric fit, searched as positions among the fitting confidences: mapped
    # back, they must send every sample to the same exit (inf thresholds included: nobody exits there).
    probs, _ = random_probs(n=300, n_exits=4)
    confidence = probs.amax(dim=2)
    for thresholds in (geometric_thresholds(probs, q), (0.0, math.inf, 0.5, -math.inf)):
        back = _quantile_thresholds(confidence)(_positions(confidence, thresholds))
        assert exit_assignment(probs, back).tolist() == exit_assignment(probs, thresholds).tolist()
    # Positions 0 and 1 are the extremes: every sample passes the first exit / none passes any exit.
    to_thresholds = _quantile_thresholds(confidence)
    assert exit_assignment(probs, to_thresholds([0.0, 0.0, 0.0])).eq(0).all()
    assert exit_assignment(probs, to_thresholds([1.0, 1.0, 1.0])).eq(3).all()


def test_optuna_beats_the_geometric_prior_on_the_fitting_data_across_budgets():
    # Four exits whose accuracy rises: at every budget between the first exit's cost and the last's, the searched
    # thresholds are at least as accurate as the geometric prior on the data they are fitted on, within budget,
    # and strictly better at most budgets (a prior with one free number cannot fit every exit's share).
    probs, labels = random_probs(n=600, n_exits=4, seed=1)
    costs = [10.0, 20.0, 30.0, 40.0]
    gains = []
    for budget in (14.0, 19.0, 24.0, 29.0, 34.0):
        geometric = fit_geometric(probs, labels, costs, budget)
        optimised = fit_optuna(probs, labels, costs, budget, n_trials=120, seed=0, min_gain_se=0)
        assert optimised.avg_cost <= budget
        ours, theirs = right_answers(probs, labels, optimised.thresholds), right_answers(probs, labels,
                                                                                        geometric.thresholds)
        # each fit's accuracy is what its thresholds really give, counted sample by sample
        assert (optimised.accuracy, geometric.accuracy) == (pytest.approx(ours.float().mean().item()),
                                                            pytest.approx(theirs.float().mean().item()))
        # with min_gain_se=0 the search replaces the prior only when it gets more samples right that the prior gets
        # wrong than the other way round (b > c), or when no sample's correctness changes (b = c = 0)
        b, c = int((ours & ~theirs).sum()), int((~ours & theirs).sum())
        assert optimised == geometric or b > c or b == c == 0
        gains.append(b - c)
    assert sum(g > 0 for g in gains) >= 4
