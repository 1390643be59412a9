"""Analytic cost table of the Lite-HRNet space, compiled per (width, reduce ratio) (issue 7).

``width`` and ``reduce_ratio`` shape every layer, so nothing is independent of them; but for one pair the
modules of a stage are identical (same branches, widths and input shapes), so a module's cost depends only on
(width, reduce ratio, stage, block type), not on its position. With ``d_s`` modules in stage ``s``::

    cost = B(w, r) + Σ_s Σ_{i < d_s} c(w, r, s, type of s{s}_m{i})

A count read from shapes (:func:`~hrnas_automl.cost.tables.shape_count`: ptflops, Conv2d MACs) is compiled from one
network per (w, r), at every stage's smallest depth with its first two modules of the two block types: the network
is counted once (its forward records each module's branch shapes), each of its modules alone at those shapes (the
``c`` terms), and ``B`` is the rest: 9 networks and 54 small modules. Other measures (latency) are not additive
over modules run alone: for them the network with one more module of each type in each stage is measured and
the difference taken, 9 x 7 = 63 networks. The table has one group per stage, ``(width, reduce_ratio,
s{s}_modules, s{s}_m0...)`` (the shared labels make :meth:`CostTable.bounds` enumerate the 9 pairs), ``B`` folded
into stage 1.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from hrnas_automl.cost.tables import Build, CostTable, Measure, is_shape_count
from hrnas_automl.spaces.lite_hrnet import LiteHRModule

__all__ = ["lite_hrnet_cost_table"]


def _sub(a: Sequence[float], b: Sequence[float]) -> tuple[float, ...]:
    return tuple(x - y for x, y in zip(a, b))


class _Branches(nn.Module):
    """A module of several branches fed zeros of its recorded branch shapes, so a one-input measure counts it alone
    (the input it is given only carries the batch and the device; ``new_zeros`` is counted by nothing)."""

    def __init__(self, module: nn.Module, shapes: Sequence[tuple[int, ...]]) -> None:
        super().__init__()
        self.module, self.shapes = module, list(shapes)

    def forward(self, x: torch.Tensor) -> Any:
        return self.module([x.new_zeros(len(x), *shape) for shape in self.shapes])


def _module_costs(net: nn.Module, input_shape: tuple[int, ...], measure: Measure, stages: Sequence[int],
                  kinds: Sequence[Sequence[Any]]) -> tuple[tuple[float, ...], list[list[tuple[float, ...]]]]:
    """The cost of ``net`` and of each of its stages' modules alone, ``kinds[s][i]`` the type of module ``i`` of
    stage ``s``: the count's own forward records every module's branch shapes."""
    modules = [[m for m in stage.modules() if isinstance(m, LiteHRModule)] for stage in net.stages]
    if [len(m) for m in modules] != [len(k) for k in kinds] or len(modules) != len(stages):
        raise ValueError(f"the Lite-HRNet network has {[len(m) for m in modules]} modules per stage, the table "
                         f"expects {[len(k) for k in kinds]}")
    shapes: dict[nn.Module, list[tuple[int, ...]]] = {}

    def record(module: nn.Module, args: tuple[Any, ...]) -> None:
        shapes[module] = [tuple(x.shape[1:]) for x in args[0]]

    hooks = [m.register_forward_pre_hook(record) for stage in modules for m in stage]
    try:
        total = measure(net, input_shape)
    finally:
        for hook in hooks:
            hook.remove()
    return total, [[measure(_Branches(m, shapes[m]), (1,)) for m in stage] for stage in modules]


def lite_hrnet_cost_table(build: Build, choices: Mapping[str, Sequence[Any]], input_shape: tuple[int, ...],
                          measure: Measure, metrics: tuple[str, ...]) -> CostTable:
    """The per-stage table of the module docstring: per (width, reduce ratio), one network and its modules counted
    alone for a shape count, else 7 whole networks."""
    stages = sorted(int(m.group(1)) for label in choices if (m := re.fullmatch(r"s(\d+)_modules", label)))
    blocks = {s: sorted((label for label in choices if re.fullmatch(rf"s{s}_m\d+", label)),
                        key=lambda label: int(label.rsplit("m", 1)[1])) for s in stages}
    types = list(choices[blocks[stages[0]][0]])
    shallow = {s: min(choices[f"s{s}_modules"]) for s in stages}
    base: dict[tuple[Any, Any], tuple[float, ...]] = {}
    module: dict[tuple[Any, Any, int, Any], tuple[float, ...]] = {}
    # With a shape count, each stage's first modules take every type (the rest the first type), counted alone.
    kinds = {s: [types[i] if i < len(types) else types[0] for i in range(shallow[s])] for s in stages}
    if is_shape_count(measure) and any(len(set(k)) < len(types) for k in kinds.values()):
        raise ValueError(f"a stage of {shallow} modules cannot hold all block types {types}")
    for w, r in itertools.product(choices["width"], choices["reduce_ratio"]):
        ref = {"width": w, "reduce_ratio": r, **{f"s{s}_modules": shallow[s] for s in stages},
               **{label: types[0] for s in stages for label in blocks[s]}}
        if is_shape_count(measure):
            ref.update({label: t for s in stages for label, t in zip(blocks[s], kinds[s])})
            ref_cost, alone = _module_costs(build(ref), input_shape, measure, stages, [kinds[s] for s in stages])
            rest = ref_cost
            for s, costs in zip(stages, alone):
                for t, cost in zip(kinds[s], costs):
                    module[w, r, s, t] = cost
                    rest = _sub(rest, cost)
            base[w, r] = rest
            continue
        ref_cost = measure(build(ref), input_shape)
        for s, t in itertools.product(stages, types):
            deeper = {**ref, f"s{s}_modules": shallow[s] + 1, blocks[s][shallow[s]]: t}
            module[w, r, s, t] = _sub(measure(build(deeper), input_shape), ref_cost)
        base[w, r] = ref_cost
        for s in stages:
            base[w, r] = _sub(base[w, r], tuple(shallow[s] * x for x in module[w, r, s, types[0]]))
    groups, deltas = [], []
    for s in stages:
        group = ("width", "reduce_ratio", f"s{s}_modules", *blocks[s])
        delta = {}
        for w, r, d, *kinds_of in itertools.product(*(choices[label] for label in group)):
            terms = [module[w, r, s, t] for t in kinds_of[:d]] + ([base[w, r]] if s == stages[0] else [])
            delta[(w, r, d, *kinds_of)] = tuple(sum(t[i] for t in terms) for i in range(len(metrics)))
        groups.append(group)
        deltas.append(delta)
    return CostTable(metrics, tuple(groups), tuple(0.0 for _ in metrics), tuple(deltas))
