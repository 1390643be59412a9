"""Analytic cost table of the HR-NAS space, compiled per module (issue 7).

Whole networks per label value are far too many (tiny: 108 labels, official: 268, 17 values each), but the
blocks of an HR-NAS network are independent: every :class:`~hrnas_automl.spaces.hrnas.SearchingBlock` has
fixed input and output widths and shapes, whatever the sample. Inside a block a :class:`KernelPath` of width
``h`` and a :class:`TokenTransformer` of ``n`` tokens each cost what they cost alone at the block's input
shape; the kernel paths share one ``pw_bn`` BatchNorm that exists iff any of them is non-zero, so the three
kernel labels of a block form one group (17^3 combinations) and the token label a group of its own. The sums
of the paths use the ``+`` operator, which ptflops does not count (:mod:`hrnas_automl.cost`).

Compiling measures: the network with every unit at 0 (``base``), each distinct kernel path / Transformer /
``pw_bn`` alone (memoised: blocks of the same widths and shapes share them), with the caller's measure, so the
table counts exactly what ptflops counts; :func:`hrnas_automl.cost.space_table` then checks it against direct
counts of random networks.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from hrnas_automl.cost.tables import Build, CostTable, Measure, io_shapes
from hrnas_automl.spaces.hrnas import KERNEL_SIZES, KernelPath, SearchingBlock, TokenTransformer

__all__ = ["hrnas_cost_table"]

_MAX_GROUP = 200_000  # combinations of one block's kernel labels a table may hold


class _SizedTransformer(nn.Module):
    """A TokenTransformer with the block's output size fixed, so a one-input measure can count it."""

    def __init__(self, transformer: TokenTransformer, size: Sequence[int]) -> None:
        super().__init__()
        self.transformer, self.size = transformer, tuple(size)

    def forward(self, x: Any) -> Any:
        return self.transformer(x, self.size)


def _kernel_group(costs3: Sequence[tuple[float, ...]], costs5: Sequence[tuple[float, ...]],
                  costs7: Sequence[tuple[float, ...]], widths3: Sequence[int], widths5: Sequence[int],
                  widths7: Sequence[int], *, pw_bn: tuple[float, ...]) -> dict[tuple[Any, ...], tuple[float, ...]]:
    """A block's ``(k3, k5, k7)`` deltas: the three paths' costs added in that order, then ``pw_bn`` unless every path
    is 0 (the sums of ``sum()`` from 0, one partial sum per (k3, k5) pair instead of per combination)."""
    delta = {}
    for h3, c3 in zip(widths3, costs3):
        for h5, c5 in zip(widths5, costs5):
            partial = tuple(0 + a + b for a, b in zip(c3, c5))
            for h7, c7 in zip(widths7, costs7):
                paths = tuple(a + b for a, b in zip(partial, c7))
                delta[h3, h5, h7] = tuple(a + b for a, b in zip(paths, pw_bn)) if h3 or h5 or h7 else paths
    return delta


def hrnas_cost_table(build: Build, choices: Mapping[str, Sequence[Any]], input_shape: tuple[int, ...],
                     measure: Measure, metrics: tuple[str, ...]) -> CostTable:
    """``base`` (every unit 0) + per block: a ``(k3, k5, k7)`` group (paths + ``pw_bn``) and a ``tokens`` group.

    Raises:
        ValueError: a block's kernel grid is too fine for a table (``channel_steps=None``).
    """
    widest = build({label: max(values) for label, values in choices.items()})
    blocks = [m for m in widest.modules() if isinstance(m, SearchingBlock)]
    shapes = io_shapes(widest, blocks, input_shape)
    zero = tuple(0.0 for _ in metrics)
    memo: dict[tuple[Any, ...], tuple[float, ...]] = {}

    def cost_of(key: tuple[Any, ...], make: Any, shape: tuple[int, ...]) -> tuple[float, ...]:
        if key not in memo:
            memo[key] = measure(make(), shape)
        return memo[key]

    groups: list[tuple[str, ...]] = []
    deltas: list[dict[tuple[Any, ...], tuple[float, ...]]] = []
    for block in blocks:
        (in_shape, out_shape), name = shapes[block], block.name
        widest_path = next(iter(block.paths.values()))
        inp, oup = widest_path.expand[0].in_channels, widest_path.project.out_channels
        bn = {"momentum": block.pw_bn.momentum, "eps": block.pw_bn.eps}
        labels = tuple(f"{name}_k{k}" for k in KERNEL_SIZES)
        size = 1
        for label in labels:
            size *= len(choices[label])
        if size > _MAX_GROUP:
            raise ValueError(f"block {name} has {size} kernel-width combinations, too many for a cost table; "
                             "use channel_steps (e.g. 16) instead of every count")
        path_cost = {(k, h): zero if h == 0 else cost_of(
            ("path", inp, oup, k, block.stride, h, in_shape),
            lambda k=k, h=h: KernelPath(inp, h, oup, k, block.stride, bn), in_shape)
            for k, label in zip(KERNEL_SIZES, labels) for h in choices[label]}
        pw_bn = cost_of(("bn", out_shape), lambda: nn.BatchNorm2d(oup), out_shape)
        groups.append(labels)
        deltas.append(_kernel_group(*([path_cost[k, h] for h in choices[label]]
                                      for k, label in zip(KERNEL_SIZES, labels)),
                                    *(choices[label] for label in labels), pw_bn=pw_bn))
        token_label = f"{name}_tokens"
        if token_label in choices:
            groups.append((token_label,))
            deltas.append({(n,): zero if n == 0 else cost_of(
                ("tokens", inp, oup, n, in_shape, out_shape),
                lambda n=n: _SizedTransformer(TokenTransformer(inp, oup, n, bn), out_shape[-2:]), in_shape)
                for n in choices[token_label]})
    base = measure(build({label: 0 for label in choices}), input_shape)
    return CostTable(metrics, tuple(groups), base, tuple(deltas))
