"""Counting a built network: MACs by ptflops (the op kinds are listed in :mod:`hrnas_automl.cost`) and parameters,
and DetNAS's own budget count, the MACs of the Conv2d layers alone."""
from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["Cost", "count_cost", "count_conv_macs", "parse_input_shape"]


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
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            # ptflops prints the traceback of a network that fails, then returns None: reported below in one line
            macs, _ = get_model_complexity_info(model, tuple(input_shape), as_strings=False,
                                                print_per_layer_stat=False, verbose=False, backend="pytorch")
    finally:
        model.train(was_training)
    if macs is None:  # ptflops catches the network's own error and returns None: run it to name that error
        try:
            with torch.no_grad():
                model.eval()(torch.zeros(1, *input_shape))
            reason = "ptflops could not count it"
        except Exception as exc:  # noqa: BLE001 - any failure of the forward pass is the reason
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        finally:
            model.train(was_training)
        raise ValueError(f"the network does not run at input {'x'.join(map(str, input_shape))} ({reason}); give a "
                         "larger input (--input CxHxW)")
    return Cost(macs=int(macs), params=sum(p.numel() for p in model.parameters()))


@torch.no_grad()
def count_conv_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of the ``nn.Conv2d`` layers alone (``out elements x in/groups x kernel``, no bias), as DetNAS's
    ``Complexity`` counter constrains a backbone (REFERENCE §3.3 and §5.11: the COCO-FPN-300M backbone is 288.1 M at
    224x224); one forward of a zero image in eval mode."""
    total = 0

    def hook(module: nn.Conv2d, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        total += output[0].numel() * (module.in_channels // module.groups) * module.kernel_size[0] * \
            module.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total
