"""Analytic cost table of the Lite-HRNet space, compiled from whole networks per (width, reduce ratio) (issue 7).

``width`` and ``reduce_ratio`` shape every layer, so nothing is independent of them; but for one pair the
modules of a stage are identical (same branches, widths and input shapes), so a module's cost depends only on
(width, reduce ratio, stage, block type), not on its position. With ``d_s`` modules in stage ``s``::

    cost = B(w, r) + Σ_s Σ_{i < d_s} c(w, r, s, type of s{s}_m{i})

Compiling counts, per (w, r): the network at every stage's smallest depth with the first block type everywhere,
and that network with one more module of each type in each stage (their differences are the ``c`` terms):
9 x 7 = 63 networks. The table has one group per stage, ``(width, reduce_ratio, s{s}_modules, s{s}_m0...)``
(the shared labels make :meth:`CostTable.bounds` enumerate the 9 pairs), ``B`` folded into stage 1.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from hrnas_automl.cost.tables import Build, CostTable, Measure

__all__ = ["lite_hrnet_cost_table"]


def _sub(a: Sequence[float], b: Sequence[float]) -> tuple[float, ...]:
    return tuple(x - y for x, y in zip(a, b))


def lite_hrnet_cost_table(build: Build, choices: Mapping[str, Sequence[Any]], input_shape: tuple[int, ...],
                          measure: Measure, metrics: tuple[str, ...]) -> CostTable:
    """The per-stage table of the module docstring, from 63 ptflops counts of whole networks."""
    stages = sorted(int(m.group(1)) for label in choices if (m := re.fullmatch(r"s(\d+)_modules", label)))
    blocks = {s: sorted((label for label in choices if re.fullmatch(rf"s{s}_m\d+", label)),
                        key=lambda label: int(label.rsplit("m", 1)[1])) for s in stages}
    types = list(choices[blocks[stages[0]][0]])
    shallow = {s: min(choices[f"s{s}_modules"]) for s in stages}
    base: dict[tuple[Any, Any], tuple[float, ...]] = {}
    module: dict[tuple[Any, Any, int, Any], tuple[float, ...]] = {}
    for w, r in itertools.product(choices["width"], choices["reduce_ratio"]):
        ref = {"width": w, "reduce_ratio": r, **{f"s{s}_modules": shallow[s] for s in stages},
               **{label: types[0] for s in stages for label in blocks[s]}}
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
        for w, r, d, *kinds in itertools.product(*(choices[label] for label in group)):
            terms = [module[w, r, s, t] for t in kinds[:d]] + ([base[w, r]] if s == stages[0] else [])
            delta[(w, r, d, *kinds)] = tuple(sum(t[i] for t in terms) for i in range(len(metrics)))
        groups.append(group)
        deltas.append(delta)
    return CostTable(metrics, tuple(groups), tuple(0.0 for _ in metrics), tuple(deltas))
