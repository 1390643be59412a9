"""What a network costs: parameters and MACs, counted by ptflops or read from an analytic table.

MACs are multiply-accumulates as ptflops' PyTorch backend (0.7.x) reports them. It counts modules: Conv1/2/3d
and ConvTranspose (``out elements x in/groups x kernel`` + bias), Linear (+ bias), BatchNorm/InstanceNorm/
GroupNorm/LayerNorm (2 per element when affine), ReLU/ReLU6/PReLU/ELU/LeakyReLU/GELU (1 per element),
max/avg/adaptive pooling (1 per input element), Upsample (1 per output element), RNN/LSTM/GRU and
MultiheadAttention; and functionals: F.relu & co., pooling, softmax, F.interpolate (1 per output element),
matmul/mm/bmm/addmm, torch.add/mul. A module that calls a counted functional is counted twice (``nn.ReLU``:
2 per element, ``nn.AvgPool2d``: 2 per input element). Not counted: Identity, Dropout, cat,
view/transpose/slicing (channel shuffle), sigmoid/tanh modules, the ``+`` operator. Parameters are counted
directly from the module.

The analytic cost (:func:`analytic_cost`) never builds a network: it reads a
:class:`~hrnas_automl.cost_table.CostTable` compiled once per (space, input size, space arguments) *from
ptflops itself*, so it counts exactly the op kinds above. How a space is compiled (:func:`space_table`):

* every label a ``LayerChoice`` (DetNAS): each candidate block counted alone at its input shape, plus the rest
  of the network (one network and one small count per candidate);
* ``SpaceSpec.cost_groups`` given: whole networks per group value (one group: every network of a small space);
* ``SpaceSpec.cost_compiler`` given: the space's own compiler (HR-NAS, :mod:`hrnas_automl.spaces.hrnas_cost`:
  the network with every unit at 0, plus each kernel path, Transformer and shared BatchNorm counted alone;
  Lite-HRNet, :mod:`hrnas_automl.spaces.lite_hrnet_cost`: module costs per (width, reduce ratio) from 63 networks;
  RANet, :mod:`hrnas_automl.spaces.ranet_cost`: all 576 networks, each counted in closed form with ptflops' rules).

Each table is checked against direct counts of random networks when compiled, and stored on disk
(:func:`hrnas_automl.cost_table.cached_table`) keyed by space, input, space arguments and package version.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import astuple, dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from hrnas_automl.cost_table import CostTable, Measure

__all__ = ["Cost", "count_cost", "arch_cost", "cost_limit", "parse_input_shape", "space_table", "cost_table",
           "analytic_cost", "cost_bounds", "marginal_cost"]


@dataclass(frozen=True)
class Cost:
    """MACs for one image of the given input shape, and the parameter count."""

    macs: int
    params: int


def parse_input_shape(text: str) -> tuple[int, int, int]:
    """Parse ``3x224x224`` into ``(3, 224, 224)``."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"input shape {text!r} must look like CxHxW, e.g. 3x224x224")
    c, h, w = (int(p) for p in parts)
    return c, h, w


def count_cost(model: nn.Module, input_shape: tuple[int, ...]) -> Cost:
    """Count a network's MACs (ptflops, PyTorch backend) at ``input_shape`` and its parameters."""
    from ptflops import get_model_complexity_info

    logging.getLogger("ptflops").setLevel(logging.ERROR)
    was_training = model.training
    model.eval()
    try:
        macs, _ = get_model_complexity_info(model, tuple(input_shape), as_strings=False, print_per_layer_stat=False,
                                            verbose=False, backend="pytorch")
    finally:
        model.train(was_training)
    return Cost(macs=int(macs), params=sum(p.numel() for p in model.parameters()))


def _default_shape(space: str, input_shape: Sequence[int] | None) -> tuple[int, ...]:
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
    return _arch_cost(space, json.dumps(dict(arch), sort_keys=True), _default_shape(space, input_shape),
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
    from hrnas_automl.cost_table import cached_table, grouped_table, layer_choice_table, verify_additive
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
    return _cost_table(space, _default_shape(space, input_shape), json.dumps(space_args, sort_keys=True))


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


def _check_limit(space: str, metric: str, limit: float, lo: float, hi: float, where: str) -> None:
    if limit < lo:
        from hrnas_automl.strategies.base import InfeasibleConstraintError

        raise InfeasibleConstraintError(f"max_{metric} {limit:.6g} is below the smallest {metric} of {space} {where} "
                                        f"({lo:.6g}; the largest is {hi:.6g}); raise the limit to at least {lo:.6g}")


def cost_limit(space: str, *, max_macs: float | None = None, max_params: float | None = None,
               max_latency_ms: float | None = None, input_shape: Sequence[int] | None = None,
               space_args: Mapping[str, Any] | None = None, threads: int | None = None, device: str = "cpu"
               ) -> Callable[[dict[str, Any]], bool] | None:
    """A feasibility test for strategies: the analytic MACs/params and the latency predicted by the table
    measured on this machine (``threads``, ``device``) are within every limit given. None without limits.

    Raises:
        InfeasibleConstraintError: a limit is below the smallest value the space can reach (the message
            names the smallest and the largest), so no search spins on an impossible budget.
    """
    if max_macs is None and max_params is None and max_latency_ms is None:
        return None
    shape = _default_shape(space, input_shape)
    args = dict(space_args or {})
    where = f"at {'x'.join(map(str, shape))}"
    checks: list[tuple[CostTable, int, float]] = []  # (table, metric index, limit)
    if max_macs is not None or max_params is not None:
        table = cost_table(space, shape, **args)
        lo, hi = table.bounds()
        for i, (metric, limit) in enumerate((("macs", max_macs), ("params", max_params))):
            if limit is not None:
                _check_limit(space, metric, limit, lo[i], hi[i], where)
                checks.append((table, i, limit))
    if max_latency_ms is not None:
        from hrnas_automl.latency import latency_table

        table = latency_table(space, shape, threads=threads, device=device, **args)
        lo, hi = table.bounds()
        _check_limit(space, "latency_ms", max_latency_ms, lo[0], hi[0], f"{where} on {device} (predicted)")
        checks.append((table, 0, max_latency_ms))

    def feasible(arch: dict[str, Any]) -> bool:
        return all(table.evaluate(arch)[i] <= limit for table, i, limit in checks)

    return feasible
