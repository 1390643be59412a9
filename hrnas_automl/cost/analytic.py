"""The analytic cost: MACs and params of an architecture read from an additive table compiled once per
(space, input size, space arguments) from ptflops itself, so it counts exactly what ptflops counts."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import astuple
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from hrnas_automl.cost.tables import CostTable, Measure

from hrnas_automl.cost.count import Cost, count_cost

__all__ = ["default_shape", "arch_cost", "space_table", "cost_table", "analytic_cost", "cost_bounds", "marginal_cost"]


def default_shape(space: str, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    """``input_shape`` as a tuple, or the space's paper input when None."""
    from hrnas_automl.registry import get_space

    return tuple(input_shape) if input_shape is not None else get_space(space).default_input


@lru_cache(maxsize=4096)
def _arch_cost(space: str, arch_json: str, input_shape: tuple[int, ...], args_json: str) -> Cost:
    from hrnas_automl.arch import freeze

    with torch.random.fork_rng():  # as in space_table: a cache miss must not move the caller's random stream
        return count_cost(freeze(space, json.loads(arch_json), **json.loads(args_json)), input_shape)


def arch_cost(space: str, arch: Mapping[str, Any], input_shape: Sequence[int] | None = None,
              **space_args: Any) -> Cost:
    """ptflops cost of an architecture of a registered space (frozen and counted, then cached in memory):
    the reference :func:`analytic_cost` is checked against."""
    return _arch_cost(space, json.dumps(dict(arch), sort_keys=True), default_shape(space, input_shape),
                      json.dumps(space_args, sort_keys=True))


def space_table(space: str, input_shape: tuple[int, ...], space_args: Mapping[str, Any], measure: Measure,
                metrics: tuple[str, ...], *, kind: str, verify: bool) -> CostTable:
    """Compile (or load from the disk cache) ``space``'s additive table of ``measure`` (module docstring).

    ``kind`` names the measure in the cache key (``ptflops``, ``latency-cpu-1t``...); ``verify`` checks the
    table against two random networks (for exact measures only).

    Raises:
        ValueError: the space has no analytic model (labels that are not LayerChoices, no cost_groups
            and no cost_compiler).
        NotAdditiveError: the space's groups interact, so the table would be wrong.
    """
    from hrnas_automl import __version__
    from hrnas_automl.arch import build_space, choices_of, freeze
    from hrnas_automl.cost.tables import cached_table, grouped_table, layer_choice_table, verify_additive
    from hrnas_automl.registry import get_space

    spec, choices = get_space(space), choices_of(space, **space_args)

    def build(arch: Mapping[str, Any]) -> nn.Module:
        return freeze(space, arch, **space_args)

    def compile_table() -> CostTable:
        if spec.cost_compiler is not None:
            table = spec.cost_compiler(build, choices, input_shape, measure, metrics)
        elif spec.cost_groups is not None:
            table = grouped_table(build, choices, spec.cost_groups(choices), input_shape, measure, metrics)
        else:
            try:
                table = layer_choice_table(build_space(space, **space_args), build, choices, input_shape, measure,
                                           metrics)
            except ValueError as exc:
                raise ValueError(f"space {space} has no analytic cost model ({exc}); register it with "
                                 "SpaceSpec(cost_groups=...) or cost_compiler=..., see hrnas_automl/cost.py") from None
        if verify:
            verify_additive(table, build, choices, input_shape, measure)
        return table

    key = {"space": space, "input": list(input_shape), "space_args": dict(space_args), "kind": kind,
           "version": __version__}
    # Compiling builds and runs networks, which draws from torch's RNG: forked, so that a seeded search gives the same
    # result on a cold cache as on a warm one.
    with torch.random.fork_rng():
        return cached_table(key, compile_table)


def _ptflops_measure(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[float, ...]:
    return astuple(count_cost(module, input_shape))


@lru_cache(maxsize=64)
def _cost_table(space: str, input_shape: tuple[int, ...], args_json: str) -> CostTable:
    return space_table(space, input_shape, json.loads(args_json), _ptflops_measure, ("macs", "params"),
                       kind="ptflops", verify=True)


def cost_table(space: str, input_shape: Sequence[int] | None = None, **space_args: Any) -> CostTable:
    """The compiled (macs, params) table of a space at ``input_shape`` (default: the space's paper input)."""
    return _cost_table(space, default_shape(space, input_shape), json.dumps(space_args, sort_keys=True))


def analytic_cost(space: str, arch: Mapping[str, Any], input_shape: Sequence[int] | None = None,
                  **space_args: Any) -> Cost:
    """MACs and params of ``arch``, equal to ptflops' count of the frozen network, without building it."""
    macs, params = cost_table(space, input_shape, **space_args).evaluate(arch)
    return Cost(int(macs), int(params))


def cost_bounds(space: str, input_shape: Sequence[int] | None = None, **space_args: Any) -> tuple[Cost, Cost]:
    """Exact smallest and largest MACs and params over the space (each metric on its own)."""
    lo, hi = cost_table(space, input_shape, **space_args).bounds()
    return Cost(int(lo[0]), int(lo[1])), Cost(int(hi[0]), int(hi[1]))


def marginal_cost(space: str, arch: Mapping[str, Any], label: str, value: Any,
                  input_shape: Sequence[int] | None = None, **space_args: Any) -> Cost:
    """How MACs and params change when ``label`` of ``arch`` becomes ``value`` (negative when cheaper).

    This is the per-unit cost a penalty weighs (the fine-grained strategy's Δi): for a channel-count label,
    ``-marginal_cost(..., label, c - 1)`` is the cost of one channel of that path.
    """
    macs, params = cost_table(space, input_shape, **space_args).marginal(arch, label, value)
    return Cost(int(macs), int(params))


