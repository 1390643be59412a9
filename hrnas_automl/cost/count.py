"""Counting a built network: MACs by ptflops (the op kinds are listed in :mod:`hrnas_automl.cost`) and parameters,
and DetNAS's own budget count, the MACs of the Conv2d layers alone.

Both counts read shapes only, never values, so they can run on PyTorch's ``meta`` device, where a forward pass
computes nothing (:func:`count_cost` with ``meta=True``): the cost tables count thousands of modules that way.
"""
from __future__ import annotations

import contextlib
import io
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where a count runs: reading a kept table (a Cost) needs none
    import torch
    from torch import nn

__all__ = ["Cost", "count_cost", "count_conv_macs", "meta_counting", "parse_input_shape"]


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


# Where PyTorch implements operators in Python (decompositions, references, meta kernels): on the meta device some
# operators (addmm, bilinear upsampling) run through these, which call torch.mm / torch.mul; ptflops has patched those
# for the whole process while it counts, so these inner calls would be counted on top of the operator itself.
_TORCH_INTERNALS = ("torch._decomp", "torch._refs", "torch._prims", "torch._meta_registrations")


@contextlib.contextmanager
def meta_counting() -> Iterator[None]:
    """While a network runs on the meta device for a count: ptflops' patched functions count only the calls of the
    network's own code, and batch and layer norms and resizing (to a size, or by an integer factor) make an empty tensor
    of their output's shape at once.

    On the meta device some operators (addmm, resizing, batch norm) run Python decompositions that call torch.mm /
    torch.mul, which ptflops patches while it counts (on a real device operators run in C++ and never reach them);
    and those of the norms and of bilinear resizing take tens of milliseconds a call, most of a count's time. No
    count depends on it: ptflops counts a norm by its module's input shape and F.interpolate by its arguments (it
    patches the shortcut below with F.interpolate's count, so the call is still counted).
    """
    import torch
    import torch._dynamo  # noqa: F401 - see below
    import torch.nn.functional as F
    from ptflops import pytorch_engine

    # The meta kernels of some operators (RANet's) import torch._dynamo on first use, and that import (torch._numpy)
    # reads the __name__ of torch functions, which ptflops replaces by wrappers without one while it counts: a first
    # compile in a process that never imported it (the CLI) failed. Imported here, before ptflops patches anything.
    count_call, interpolate = pytorch_engine.torch_function_wrapper.__call__, F.interpolate
    batch_norm, layer_norm = F.batch_norm, F.layer_norm

    def call(wrapper: Any, *args: Any, **kwargs: Any) -> Any:
        if sys._getframe(1).f_globals.get("__name__", "").startswith(_TORCH_INTERNALS):
            return wrapper.op(*args, **kwargs)
        return count_call(wrapper, *args, **kwargs)

    def batch_norm_shape(input: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.empty_like(input) if input.device.type == "meta" else batch_norm(input, *args, **kwargs)

    def layer_norm_shape(input: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.empty_like(input) if input.device.type == "meta" else layer_norm(input, *args, **kwargs)

    def interpolate_shape(input: torch.Tensor, size: Any = None, scale_factor: Any = None, *args: Any,
                          **kwargs: Any) -> torch.Tensor:
        spatial = input.dim() - 2
        if input.device.type == "meta" and size is not None:
            out = [size] * spatial if isinstance(size, int) else list(size)
        elif input.device.type == "meta" and isinstance(scale_factor, int) and not args and \
                kwargs.get("recompute_scale_factor") is None:
            out = [n * scale_factor for n in input.shape[2:]]
        else:
            return interpolate(input, size, scale_factor, *args, **kwargs)
        return input.new_empty((*input.shape[:2], *out))

    pytorch_engine.torch_function_wrapper.__call__ = call
    F.batch_norm, F.layer_norm, F.interpolate = batch_norm_shape, layer_norm_shape, interpolate_shape
    pytorch_engine.FUNCTIONAL_MAPPING[interpolate_shape] = pytorch_engine.FUNCTIONAL_MAPPING[interpolate]  # its count
    try:
        yield
    finally:
        pytorch_engine.torch_function_wrapper.__call__ = count_call
        F.batch_norm, F.layer_norm, F.interpolate = batch_norm, layer_norm, interpolate
        del pytorch_engine.FUNCTIONAL_MAPPING[interpolate_shape]


def count_cost(model: nn.Module, input_shape: tuple[int, ...], *, meta: bool = False) -> Cost:
    """Count a network's MACs (ptflops, PyTorch backend) at ``input_shape`` and its parameters.

    ``meta``: move ``model`` to the meta device first (in place: for a network built to be counted) and count there,
    the same figures without computing anything.
    """
    import torch
    from ptflops import get_model_complexity_info

    logger = logging.getLogger("ptflops")
    if logger.level != logging.ERROR:  # setting it clears every logger's cache: once, not per count
        logger.setLevel(logging.ERROR)
    if meta:
        model.to("meta")
    was_training = model.training
    model.eval()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                meta_counting() if meta else contextlib.nullcontext():
            # ptflops prints the traceback of a network that fails, then returns None: reported below in one line
            macs, _ = get_model_complexity_info(model, tuple(input_shape), as_strings=False,
                                                print_per_layer_stat=False, verbose=False, backend="pytorch")
    finally:
        model.train(was_training)
    if macs is None:  # ptflops catches the network's own error and returns None: run it to name that error
        try:
            with torch.no_grad():
                model.eval()(torch.zeros(1, *input_shape, device=_device(model)))
            reason = "ptflops could not count it"
        except Exception as exc:  # noqa: BLE001 - any failure of the forward pass is the reason
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        finally:
            model.train(was_training)
        raise ValueError(f"the network does not run at input {'x'.join(map(str, input_shape))} ({reason}); give a "
                         "larger input (--input CxHxW)")
    return Cost(macs=int(macs), params=sum(p.numel() for p in model.parameters()))


def _device(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters are (the CPU for a model without any)."""
    import torch

    return next((p.device for p in model.parameters()), torch.device("cpu"))


def count_conv_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of the ``nn.Conv2d`` layers alone (``out elements x in/groups x kernel``, no bias), as DetNAS's
    ``Complexity`` counter constrains a backbone (REFERENCE §3.3 and §5.11: the COCO-FPN-300M backbone is 288.1 M at
    224x224); one forward of a zero image in eval mode, on the device of ``model`` (the meta device counts the same)."""
    import torch
    from torch import nn

    total = 0

    def hook(module: nn.Conv2d, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        total += output[0].numel() * (module.in_channels // module.groups) * module.kernel_size[0] * \
            module.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    model.eval()
    try:
        device = _device(model)
        with torch.no_grad(), meta_counting() if device.type == "meta" else contextlib.nullcontext():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total
