"""The analytic cost: MACs and params of an architecture read from an additive table compiled once per
(space, input size, space arguments) from ptflops itself, so it counts exactly what ptflops counts."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import astuple
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hrnas_automl.arch import Space, resolve_space

if TYPE_CHECKING:
    from hrnas_automl.cost.tables import CostTable, Measure

from hrnas_automl.cost.count import Cost, count_conv_macs, count_cost

__all__ = ["arch_cost", "space_table", "cost_table", "conv_macs_table", "analytic_cost", "cost_bounds", "marginal_cost"]


def arch_cost(space: str | Space, arch: Mapping[str, Any], input_shape: Sequence[int] | None = None,
              **space_args: Any) -> Cost:
    """ptflops cost of an architecture of a registered space (frozen and counted once, then kept by the space):
    the reference :func:`analytic_cost` is checked against."""
    space = resolve_space(space, **space_args)
    shape = space.input_shape(input_shape)

    def count() -> Cost:
        with torch.random.fork_rng():  # as in space_table: a first count must not move the caller's random stream
            return count_cost(space.freeze(arch), shape)

    return space.memo(("ptflops-count", json.dumps(dict(arch), sort_keys=True), shape), count)


def space_table(space: Space, input_shape: tuple[int, ...], measure: Measure, metrics: tuple[str, ...], *, kind: str,
                verify: bool) -> CostTable:
    """Compile (or load from the disk cache) ``space``'s additive table of ``measure`` (module docstring), once per
    ``kind`` and input shape for this space.

    ``kind`` names the measure in the cache key (``ptflops``, ``latency-cpu-1t``...); ``verify`` checks the
    table against two random networks (for exact measures only).

    Raises:
        ValueError: the space has no analytic model (labels that are not LayerChoices, no cost_groups
            and no cost_compiler).
        NotAdditiveError: the space's groups interact, so the table would be wrong.
    """
    from hrnas_automl import __version__
    from hrnas_automl.cost.tables import cached_table, grouped_table, layer_choice_table, verify_additive

    spec, choices = space.spec, space.choices

    def compile_table() -> CostTable:
        compiler = spec.compiler()
        if compiler is not None:
            table = compiler(space.freeze, choices, input_shape, measure, metrics)
        elif spec.cost_groups is not None:
            table = grouped_table(space.freeze, choices, spec.cost_groups(choices), input_shape, measure, metrics)
        else:
            try:
                table = layer_choice_table(space.build(), space.freeze, choices, input_shape, measure, metrics)
            except ValueError as exc:
                raise ValueError(f"space {space.name} has no analytic cost model ({exc}); register it with "
                                 "SpaceSpec(cost_groups=...) or cost_compiler=..., see hrnas_automl/cost/__init__.py"
                                 ) from None
        if verify:
            verify_additive(table, space.freeze, choices, input_shape, measure)
        return table

    key = {"space": space.name, "input": list(input_shape), "space_args": dict(space.args), "kind": kind,
           "version": __version__}

    def load_or_compile() -> CostTable:
        # Compiling builds and runs networks, which draws from torch's RNG: forked, so that a seeded search gives the
        # same result on a cold cache as on a warm one.
        with torch.random.fork_rng():
            return cached_table(key, compile_table)

    return space.memo(("table", kind, tuple(input_shape)), load_or_compile)


def _ptflops_measure(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[float, ...]:
    return astuple(count_cost(module, input_shape))


def cost_table(space: str | Space, input_shape: Sequence[int] | None = None, **space_args: Any) -> CostTable:
    """The compiled (macs, params) table of a space at ``input_shape`` (default: the space's paper input)."""
    space = resolve_space(space, **space_args)
    return space_table(space, space.input_shape(input_shape), _ptflops_measure, ("macs", "params"), kind="ptflops",
                       verify=True)


def conv_macs_table(space: str | Space, input_shape: Sequence[int] | None = None, **space_args: Any) -> CostTable:
    """The compiled table of Conv2d-only MACs (:func:`~hrnas_automl.cost.count.count_conv_macs`, DetNAS's budget
    count, metric ``conv_macs``) of a space at ``input_shape``."""
    space = resolve_space(space, **space_args)
    return space_table(space, space.input_shape(input_shape), lambda module, shape: (count_conv_macs(module, shape),),
                       ("conv_macs",), kind="conv-macs", verify=True)


def analytic_cost(space: str | Space, arch: Mapping[str, Any], input_shape: Sequence[int] | None = None,
                  **space_args: Any) -> Cost:
    """MACs and params of ``arch``, equal to ptflops' count of the frozen network, without building it."""
    macs, params = cost_table(space, input_shape, **space_args).evaluate(arch)
    return Cost(int(macs), int(params))


def cost_bounds(space: str | Space, input_shape: Sequence[int] | None = None, **space_args: Any
                ) -> tuple[Cost, Cost]:
    """Exact smallest and largest MACs and params over the space (each metric on its own)."""
    lo, hi = cost_table(space, input_shape, **space_args).bounds()
    return Cost(int(lo[0]), int(lo[1])), Cost(int(hi[0]), int(hi[1]))


def marginal_cost(space: str | Space, arch: Mapping[str, Any], label: str, value: Any,
                  input_shape: Sequence[int] | None = None, **space_args: Any) -> Cost:
    """How MACs and params change when ``label`` of ``arch`` becomes ``value`` (negative when cheaper).

    This is the per-unit cost a penalty weighs (the fine-grained strategy's Δi): for a channel-count label,
    ``-marginal_cost(..., label, c - 1)`` is the cost of one channel of that path.
    """
    macs, params = cost_table(space, input_shape, **space_args).marginal(arch, label, value)
    return Cost(int(macs), int(params))
