"""What a network costs: parameters and MACs of a frozen network, counted by ptflops.

MACs are multiply-accumulates as ptflops' PyTorch backend reports them: conv and linear MACs plus
one per element for BatchNorm, ReLU, pooling and upsampling (shared/docs/REFERENCE.md, unit notes).
Parameters are counted directly from the module, so they are exact.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from torch import nn

__all__ = ["Cost", "count_cost", "arch_cost", "cost_limit", "parse_input_shape"]


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


def count_cost(model: nn.Module, input_shape: tuple[int, int, int]) -> Cost:
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


@lru_cache(maxsize=4096)
def _arch_cost(space: str, arch_json: str, input_shape: tuple[int, int, int], args_json: str) -> Cost:
    from hrnas_automl.arch import freeze

    return count_cost(freeze(space, json.loads(arch_json), **json.loads(args_json)), input_shape)


def arch_cost(space: str, arch: Mapping[str, Any], input_shape: tuple[int, int, int] | None = None,
              **space_args: Any) -> Cost:
    """Cost of an architecture of a registered space (frozen and counted once, then cached)."""
    from hrnas_automl.registry import get_space

    shape = tuple(input_shape) if input_shape is not None else get_space(space).default_input
    return _arch_cost(space, json.dumps(dict(arch), sort_keys=True), shape, json.dumps(space_args, sort_keys=True))


def cost_limit(space: str, *, max_macs: float | None = None, max_params: float | None = None,
               input_shape: Sequence[int] | None = None, space_args: Mapping[str, Any] | None = None
               ) -> Callable[[dict[str, Any]], bool] | None:
    """A feasibility test for strategies: the frozen network's MACs/params at ``input_shape`` are within
    the limits. None when no limit is given (every architecture is feasible)."""
    if max_macs is None and max_params is None:
        return None
    shape = tuple(input_shape) if input_shape is not None else None
    args = dict(space_args or {})

    def feasible(arch: dict[str, Any]) -> bool:
        cost = arch_cost(space, arch, shape, **args)
        return (max_macs is None or cost.macs <= max_macs) and (max_params is None or cost.params <= max_params)

    return feasible
