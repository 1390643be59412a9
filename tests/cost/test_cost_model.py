"""The analytic cost model (hrnas_automl.cost / cost_table): equal to ptflops of the frozen network, exact
bounds with a clear error for an impossible budget, marginal costs, the latency lookup table."""
from __future__ import annotations

import itertools
import json
import math
import random
from dataclasses import astuple
from typing import Any

import nni
import pytest
import torch
from nni.nas.nn.pytorch import ModelSpace, MutableBatchNorm2d, MutableConv2d
from torch import nn

from hrnas_automl import registry
from hrnas_automl.arch import choices_of
from hrnas_automl.cost import (
    analytic_cost,
    arch_cost,
    cost_bounds,
    cost_limit,
    cost_table,
    count_cost,
    marginal_cost,
)
from hrnas_automl.cost.tables import NotAdditiveError, grouped_table, verify_additive
from hrnas_automl.cost.latency import latency_table, predicted_latency
from hrnas_automl.registry import SpaceSpec, list_presets
from hrnas_automl.spaces.lite_hrnet import lite_hrnet_arch
from hrnas_automl.spaces.ranet import RANet, RANetConfig
from hrnas_automl.spaces.ranet_cost import ranet_cost, ranet_exit_costs
from hrnas_automl.strategies import Evolution, InfeasibleConstraintError, RandomSearch

SMALL = (3, 32, 32)
ARGS = {"num_classes": 10}


def random_archs(space: str, n: int, seed: int = 0, **space_args: Any) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    choices = choices_of(space, **space_args)
    return [{label: rng.choice(values) for label, values in choices.items()} for _ in range(n)]


@pytest.mark.parametrize(("space", "n"), [("detnas-small", 20), ("detnas-large", 12)])
def test_detnas_analytic_cost_equals_ptflops_on_random_archs(space: str, n: int) -> None:
    archs = random_archs(space, n, **ARGS)
    assert [analytic_cost(space, a, SMALL, **ARGS) for a in archs] == [arch_cost(space, a, SMALL, **ARGS)
                                                                       for a in archs]


@pytest.mark.parametrize("preset", [p for p in list_presets() if p.space.startswith("detnas")], ids=lambda p: p.name)
def test_detnas_presets_at_paper_input_equal_ptflops(preset: registry.Preset) -> None:
    assert analytic_cost(preset.space, preset.arch) == arch_cost(preset.space, preset.arch)


# HR-NAS as the examples search it (examples/hrnas/*.yml): tiny setting, 4-class segmentation at 64x64.
HRNAS_SEG = {"setting": "tiny", "bn_momentum": 0.1, "head": "segmentation", "num_classes": 4}


@pytest.mark.parametrize(("head", "shape", "n"), [("segmentation", (3, 64, 64), 10), ("classifier", (3, 48, 80), 4),
                                                  ("keypoints", (3, 40, 56), 3)])
def test_hrnas_analytic_cost_equals_ptflops_on_random_archs(head: str, shape: tuple[int, ...], n: int) -> None:
    args = {**HRNAS_SEG, "head": head}
    archs = random_archs("hrnas", n, seed=5, **args)
    assert [analytic_cost("hrnas", a, shape, **args) for a in archs] == [arch_cost("hrnas", a, shape, **args)
                                                                         for a in archs]


@pytest.mark.slow
@pytest.mark.parametrize("preset", [p for p in list_presets() if p.space == "hrnas"], ids=lambda p: p.name)
def test_hrnas_presets_at_paper_input_equal_ptflops(preset: registry.Preset) -> None:
    # The official setting at 224x224: the table compiles in about half a minute, then reads the disk cache.
    head = {"cls": "classifier", "seg": "segmentation", "kpt": "keypoints"}[preset.name.rsplit("-", 1)[1]]
    assert analytic_cost("hrnas", preset.arch, head=head) == arch_cost("hrnas", preset.arch, head=head)


def test_hrnas_marginal_cost_of_a_path_includes_the_shared_batchnorm() -> None:
    shape = (3, 64, 64)
    arch = {**random_archs("hrnas", 1, seed=2, **HRNAS_SEG)[0], "e3_b1_0_k3": 8, "e3_b1_0_k5": 0, "e3_b1_0_k7": 0}
    for label, value in (("e3_b1_0_k3", 0), ("e3_b1_0_k7", 16), ("e3_b1_0_tokens", 8)):  # last path off: pw_bn goes
        changed = {**arch, label: value}
        before, after = arch_cost("hrnas", arch, shape, **HRNAS_SEG), arch_cost("hrnas", changed, shape, **HRNAS_SEG)
        delta = marginal_cost("hrnas", arch, label, value, shape, **HRNAS_SEG)
        assert (delta.macs, delta.params) == (after.macs - before.macs, after.params - before.params)


def test_hrnas_macs_budget_of_the_examples_is_feasible_and_a_tiny_one_is_not() -> None:
    lo, hi = cost_bounds("hrnas", (3, 64, 64), **HRNAS_SEG)
    assert lo.macs < 1e8 < hi.macs
    feasible = cost_limit("hrnas", max_macs=1e8, input_shape=(3, 64, 64), space_args=HRNAS_SEG)
    choices = choices_of("hrnas", **HRNAS_SEG)
    narrowest, widest = ({label: pick(values) for label, values in choices.items()} for pick in (min, max))
    for arch in (narrowest, widest):  # the limit agrees with ptflops of the frozen network, on both sides of it
        assert feasible(arch) == (arch_cost("hrnas", arch, (3, 64, 64), **HRNAS_SEG).macs <= 1e8)
    assert feasible(narrowest) and not feasible(widest)
    with pytest.raises(InfeasibleConstraintError, match="smallest macs of hrnas") as err:
        cost_limit("hrnas", max_macs=lo.macs - 1, input_shape=(3, 64, 64), space_args=HRNAS_SEG)
    assert f"({lo.macs:.6g}; the largest is {hi.macs:.6g})" in str(err.value)


def test_hrnas_table_refuses_every_channel_count() -> None:
    with pytest.raises(ValueError, match="too many for a cost table; use channel_steps"):
        cost_table("hrnas", (3, 32, 32), **HRNAS_SEG, channel_steps=None)


def test_lite_hrnet_analytic_cost_and_bounds_equal_ptflops() -> None:
    shape, head = (3, 64, 48), "keypoints"  # compiling counts 63 networks: a small input keeps it to seconds
    archs = random_archs("lite-hrnet", 6, seed=4, head=head)
    assert [analytic_cost("lite-hrnet", a, shape, head=head) for a in archs] == [
        arch_cost("lite-hrnet", a, shape, head=head) for a in archs]
    # The cheapest network is the narrowest and shallowest with one block type per stage (3 ratios x 2^3 types).
    choices = choices_of("lite-hrnet", head=head)
    candidates = [{**lite_hrnet_arch(width=20, modules=(2, 4, 2), block="naive", reduce_ratio=r),
                   **{label: kinds[int(label[1]) - 1] for label in choices if "_m" in label and label[-1].isdigit()}}
                  for r in choices["reduce_ratio"] for kinds in itertools.product(choices["s1_m0"], repeat=3)]
    costs = [arch_cost("lite-hrnet", a, shape, head=head) for a in candidates]
    lo, _ = cost_bounds("lite-hrnet", shape, head=head)
    assert (lo.macs, lo.params) == (min(c.macs for c in costs), min(c.params for c in costs))


@pytest.mark.slow
@pytest.mark.parametrize("preset", [p for p in list_presets() if p.space == "lite-hrnet"], ids=lambda p: p.name)
def test_lite_hrnet_presets_at_paper_input_equal_ptflops(preset: registry.Preset) -> None:
    assert analytic_cost("lite-hrnet", preset.arch) == arch_cost("lite-hrnet", preset.arch)


def test_ranet_exhaustive_table_equals_ptflops() -> None:
    # The table holds all 576 networks, each in closed form (spaces/ranet_cost.py); ptflops counts the samples.
    archs = random_archs("ranet", 20) + [dict(p.arch) for p in list_presets("ranet")]
    assert [analytic_cost("ranet", a) for a in archs] == [arch_cost("ranet", a) for a in archs]


def test_ranet_closed_form_covers_the_imagenet_layout() -> None:
    # ImageNet stem (7x7/2 conv with bias, max-pool) and full-width exits; 1 input channel, 100 classes.
    config = RANetConfig(scale_list=(1, 2, 3, 4), n_channels=8, growth_rate=4, gr_factor=(4, 2, 1, 1),
                         bn_factor=(4, 2, 2, 1), block_step=1, step=2, data="imagenet", num_classes=100, in_channels=1)
    assert ranet_cost(config, (1, 224, 224)) == astuple(count_cost(RANet(config), (1, 224, 224)))
    # train_imagenet.sh (spaces/ranet.py docstring): the official model has 87,972,617 parameters.
    official = RANetConfig(scale_list=(1, 2, 3, 4), growth_rate=16, step=8, gr_factor=(4, 2, 1, 1),
                           bn_factor=(4, 2, 1, 1), data="imagenet", num_classes=1000)
    assert ranet_cost(official, (3, 224, 224))[1] == 87_972_617


def test_ranet_first_exit_table_equals_the_built_networks_early_exit_costs() -> None:
    # what a sample leaving at each exit costs, in closed form, against ptflops on the built network
    # (early_exit_costs); the first exit's table (max_first_exit_macs) holds the first of them
    from hrnas_automl.arch import resolve_space
    from hrnas_automl.cost.analytic import first_exit_macs_table
    from hrnas_automl.tasks.early_exit import early_exit_costs

    space, shape = resolve_space("ranet", num_classes=4), (3, 32, 32)
    table = first_exit_macs_table(space, shape)
    for arch in random_archs("ranet", 4, seed=1, num_classes=4):
        net = space.freeze(arch)
        counted = early_exit_costs(net, shape)
        assert ranet_exit_costs(next(m for m in net.modules() if isinstance(m, RANet)).config, shape) == counted
        assert table.evaluate(arch) == (float(counted[0]),)
    with pytest.raises(InfeasibleConstraintError, match=r"max_first_exit_macs 1e\+06 is below the smallest "
                       r"first_exit_macs of ranet at 3x32x32 \(3\.62855e\+06; the largest is 5\.50948e\+07\)"):
        cost_limit(space, max_first_exit_macs=1e6, input_shape=shape)


def detnas_extremes() -> tuple[dict[str, Any], dict[str, Any]]:
    """The fewest- and most-MACs DetNAS-small archs, read off its one-label-per-group cost table."""
    table = cost_table("detnas-small", SMALL, **ARGS)
    pick = {label: [v for (v,) in d] for (label,), d in zip(table.groups, table.deltas)}
    cheapest = {label: min(values, key=lambda v: table.deltas[i][(v,)][0]) for i, (label, values)
                in enumerate(pick.items())}
    dearest = {label: max(values, key=lambda v: table.deltas[i][(v,)][0]) for i, (label, values)
               in enumerate(pick.items())}
    return cheapest, dearest


def test_bounds_are_reached_by_the_cheapest_and_dearest_archs() -> None:
    lo, hi = cost_bounds("detnas-small", SMALL, **ARGS)
    cheapest, dearest = detnas_extremes()
    assert arch_cost("detnas-small", cheapest, SMALL, **ARGS).macs == lo.macs
    assert arch_cost("detnas-small", dearest, SMALL, **ARGS).macs == hi.macs
    assert lo.macs < hi.macs and lo.params < hi.params


def test_infeasible_budget_names_smallest_and_largest_cost() -> None:
    lo, hi = cost_bounds("detnas-small", SMALL, **ARGS)
    with pytest.raises(InfeasibleConstraintError) as err:
        cost_limit("detnas-small", max_macs=lo.macs - 1, input_shape=SMALL, space_args=ARGS)
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert f"{lo.macs:.6g}" in message and f"{hi.macs:.6g}" in message and "max_macs" in message
    with pytest.raises(InfeasibleConstraintError, match="max_params"):
        cost_limit("detnas-small", max_params=lo.params - 1, input_shape=SMALL, space_args=ARGS)
    at_the_smallest = cost_limit("detnas-small", max_macs=lo.macs, input_shape=SMALL, space_args=ARGS)
    cheapest, dearest = detnas_extremes()
    assert at_the_smallest(cheapest) and not at_the_smallest(dearest)  # the limit is inclusive: lo.macs is feasible


def test_strategies_under_a_macs_limit_propose_only_feasible_archs() -> None:
    lo, hi = cost_bounds("detnas-small", SMALL, **ARGS)
    limit = (lo.macs + hi.macs) / 2
    feasible = cost_limit("detnas-small", max_macs=limit, input_shape=SMALL, space_args=ARGS)
    choices = choices_of("detnas-small", **ARGS)
    evo = Evolution(choices, population_size=6, select_num=2, mutation_num=2, crossover_num=2, seed=0,
                    constraint=feasible)
    proposals = []
    for _ in range(18):  # three generations: random, then mutants and crossovers
        arch = evo.ask()
        proposals.append(arch)
        evo.tell(arch, float(sum(v == "k7" for v in arch.values())))
    proposals += [RandomSearch(choices, seed=s, constraint=feasible).ask() for s in range(3)]
    assert all(arch_cost("detnas-small", a, SMALL, **ARGS).macs <= limit for a in proposals[::4])
    assert all(analytic_cost("detnas-small", a, SMALL, **ARGS).macs <= limit for a in proposals)


def test_marginal_cost_is_the_difference_of_two_networks() -> None:
    arch = random_archs("detnas-small", 1, seed=3, **ARGS)[0]
    label = "s2_b1"
    value = next(v for v in ("k3", "xception") if v != arch[label])
    changed = {**arch, label: value}
    before, after = arch_cost("detnas-small", arch, SMALL, **ARGS), arch_cost("detnas-small", changed, SMALL, **ARGS)
    delta = marginal_cost("detnas-small", arch, label, value, SMALL, **ARGS)
    assert (delta.macs, delta.params) == (after.macs - before.macs, after.params - before.params)


class WidthSpace(ModelSpace):
    """Two convs whose shared width is a top-level choice: the labels interact and are not LayerChoices."""

    def __init__(self) -> None:
        super().__init__()
        w1, w2 = nni.choice("w1", [2, 4]), nni.choice("w2", [3, 6])
        self.net = nn.Sequential(MutableConv2d(3, w1, 3), nn.ReLU(), MutableConv2d(w1, w2, 3),
                                 MutableBatchNorm2d(w2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _conv_net(arch: dict[str, Any]) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, arch["w1"], 3), nn.ReLU(), nn.Conv2d(arch["w1"], arch["w2"], 3),
                         nn.BatchNorm2d(arch["w2"]))


def _measure(module: nn.Module, shape: tuple[int, ...]) -> tuple[float, ...]:
    cost = count_cost(module, shape)
    return cost.macs, cost.params


def test_grouped_table_is_exact_when_interacting_labels_share_a_group() -> None:
    choices = {"w1": [2, 4], "w2": [3, 6]}
    archs = [{"w1": a, "w2": b} for a in choices["w1"] for b in choices["w2"]]
    joint = grouped_table(_conv_net, choices, [["w1", "w2"]], (3, 8, 8), _measure, ("macs", "params"))
    assert [joint.evaluate(a) for a in archs] == [_measure(_conv_net(a), (3, 8, 8)) for a in archs]
    apart = grouped_table(_conv_net, choices, [["w1"], ["w2"]], (3, 8, 8), _measure, ("macs", "params"))
    assert apart.evaluate({"w1": 4, "w2": 6}) != _measure(_conv_net({"w1": 4, "w2": 6}), (3, 8, 8))
    with pytest.raises(NotAdditiveError, match="group the interacting labels in cost_groups"):
        verify_additive(apart, _conv_net, choices, (3, 8, 8), _measure, samples=8)


def test_space_without_cost_model_gets_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.SPACES._objects, "width-toy", SpaceSpec("width-toy", WidthSpace, "toy", (3, 8, 8)))
    with pytest.raises(ValueError, match=r"space width-toy has no analytic cost model .*SpaceSpec\(cost_groups="):
        cost_table("width-toy")
    monkeypatch.setitem(registry.SPACES._objects, "width-toy", SpaceSpec("width-toy", WidthSpace, "toy", (3, 8, 8),
                                                                 cost_groups=lambda c: [list(c)]))
    archs = [{"w1": a, "w2": b} for a in (2, 4) for b in (3, 6)]
    assert [analytic_cost("width-toy", a) for a in archs] == [arch_cost("width-toy", a) for a in archs]


def test_latency_table_predicts_unseen_archs_and_is_cached(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HRNAS_AUTOML_CACHE", str(tmp_path))
    table = latency_table("detnas-small", SMALL, threads=1, **ARGS)
    assert table.metrics == ("latency_ms",) and len(table.groups) == len(choices_of("detnas-small", **ARGS))
    assert all(v[0] > 0 for d in table.deltas for v in d.values())
    stored = list(tmp_path.rglob("*.json"))
    assert len(stored) == 2  # the raw block table and the one corrected on whole networks
    again = latency_table("detnas-small", SMALL, threads=1, **ARGS)
    assert again == table  # read back from disk, not measured again (measurements would differ)
    lo, hi = table.bounds()
    arch = random_archs("detnas-small", 1, seed=5, **ARGS)[0]
    assert lo[0] <= table.evaluate(arch)[0] <= hi[0]
    limit = (lo[0] + hi[0]) / 2
    macs_lo, macs_hi = cost_bounds("detnas-small", SMALL, **ARGS)
    max_macs = (macs_lo.macs + macs_hi.macs) / 2
    both = cost_limit("detnas-small", max_macs=max_macs, max_latency_ms=limit, input_shape=SMALL, space_args=ARGS,
                      threads=1)
    evo = Evolution(choices_of("detnas-small", **ARGS), population_size=4, select_num=2, mutation_num=1,
                    crossover_num=1, seed=0, constraint=both)
    for _ in range(8):
        proposal = evo.ask()
        assert table.evaluate(proposal)[0] <= limit
        assert analytic_cost("detnas-small", proposal, SMALL, **ARGS).macs <= max_macs
        evo.tell(proposal, 1.0)


def test_building_choices_and_costs_leaves_the_callers_rng_alone(tmp_path: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HRNAS_AUTOML_CACHE", str(tmp_path))
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    args = {"num_classes": 7}  # no other test uses them: every cache below misses and builds networks
    arch = random_archs("detnas-small", 1, seed=0, **args)[0]  # builds the space for its choices
    cost_table("detnas-small", SMALL, **args)
    arch_cost("detnas-small", arch, SMALL, **args)
    assert len(list(tmp_path.rglob("*.json"))) == 1  # the table was compiled, not read back
    assert torch.equal(torch.random.get_rng_state(), state)  # else a seeded search differs on a cold cache


def test_latency_limit_below_the_fastest_arch_is_rejected(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HRNAS_AUTOML_CACHE", str(tmp_path))
    lo = latency_table("detnas-small", SMALL, threads=1, **ARGS).bounds()[0][0]
    with pytest.raises(InfeasibleConstraintError, match="max_latency_ms .* below the smallest latency_ms"):
        cost_limit("detnas-small", max_latency_ms=lo - 0.5, input_shape=SMALL, space_args=ARGS, threads=1)
    assert predicted_latency("detnas-small", random_archs("detnas-small", 1, **ARGS)[0], SMALL, threads=1,
                             **ARGS) >= lo


def test_cli_cost_prints_analytic_and_ptflops_and_latency(capsys: pytest.CaptureFixture[str], tmp_path: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from hrnas_automl.cli import main

    monkeypatch.setenv("HRNAS_AUTOML_CACHE", str(tmp_path))
    argv = ["cost", "detnas-small", "--arch", "preset:detnas-coco-fpn-300m", "--input", "3x32x32",
            "--space-arg", "num_classes=10"]
    assert main([*argv, "--json", "--latency", "--threads", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["analytic"] == {"macs": data["macs"], "params": data["params"]}
    assert data["latency_ms"] > 0 and math.isfinite(data["predicted_latency_ms"])  # a noisy CPU may skew it
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "analytic" in text and "ptflops" in text and f"{data['macs']:,}" in text
