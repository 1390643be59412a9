"""The one ONNX conversion of the package (export and the ONNX Runtime latency backend share it) and the ONNX Runtime
session that runs the result.

The exporter is torch's TorchScript-based one (``dynamo=False``): in torch 2.13 ``torch.onnx.export`` defaults to
the dynamo exporter, which needs the ``onnxscript`` package (not a dependency here) and gives no better graphs for
these convolutional networks; the TorchScript exporter handles every op the spaces use (MultiheadAttention,
interpolation, channel shuffle, adaptive pooling) up to opset 20, its newest (:data:`OPSET`).
"""
from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:
    import onnxruntime

__all__ = ["OPSET", "flat_outputs", "output_names", "to_onnx", "ort_session", "run_onnx"]

OPSET = 20  # the newest opset of torch's TorchScript ONNX exporter (torch.onnx._constants)


def flat_outputs(out: Any) -> list[torch.Tensor]:
    """A network's output as a flat list of tensors: a tensor, a list/tuple (C2-C5, RANet's exits) or a dict of
    tensors (the detector), in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        return [t for value in out.values() for t in flat_outputs(value)]
    if isinstance(out, (list, tuple)):
        return [t for value in out for t in flat_outputs(value)]
    raise TypeError(f"a network output must be tensors (a tensor, list, tuple or dict of them), got {type(out)}")


def output_names(out: Any, prefix: str = "output") -> list[str]:
    """Names of :func:`flat_outputs` ``(out)``: ``output`` for one tensor, ``output0``... for a list, the keys of a
    dict."""
    if isinstance(out, torch.Tensor):
        return [prefix]
    if isinstance(out, Mapping):
        return [name for key, value in out.items() for name in output_names(value, str(key))]
    return [name for i, value in enumerate(out) for name in output_names(value, f"{prefix}{i}")]


@contextlib.contextmanager
def _static_pooling() -> Iterator[None]:
    """While tracing, ``F.adaptive_avg_pool2d`` to a size that divides the input becomes the ``F.avg_pool2d`` it equals
    (kernel = stride = input / output size). Lite-HRNet pools every branch to ``xs[-1].shape[-2:]``: the tracer
    records that size as shape ops, which the exporter cannot turn into the constant size ONNX pooling needs
    (mmpose #1400). Only the batch axis is dynamic in an export, so the spatial sizes are constants here."""
    original = F.adaptive_avg_pool2d

    def pool(x: torch.Tensor, output_size: Any) -> torch.Tensor:
        sizes = [output_size] * 2 if isinstance(output_size, (int, torch.Tensor)) else list(output_size)
        size_in = [int(s) for s in x.shape[-2:]]
        size_out = [size_in[i] if s is None else int(s) for i, s in enumerate(sizes)]
        if all(i % o == 0 for i, o in zip(size_in, size_out)):
            kernel = tuple(i // o for i, o in zip(size_in, size_out))
            return F.avg_pool2d(x, kernel, kernel)
        return original(x, tuple(size_out))

    F.adaptive_avg_pool2d = pool
    try:
        yield
    finally:
        F.adaptive_avg_pool2d = original


class _Flat(nn.Module):
    """``model`` with its outputs flattened to a tuple (ONNX outputs are a flat list of named tensors)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(flat_outputs(self.model(x)))


@torch.no_grad()
def to_onnx(model: nn.Module, input_shape: Sequence[int], path: str | Path, *, names: Sequence[str] | None = None,
            dynamic_batch: bool = True, opset: int = OPSET) -> list[str]:
    """Write ``model`` (eval mode) as ONNX to ``path`` for inputs of ``(batch, *input_shape)``; returns the output
    names (``names``, or :func:`output_names` of one forward pass).

    The input is called ``input``; with ``dynamic_batch`` its first axis (and that of every output that follows the
    batch: not the detector's locations) is named ``batch`` and may take any size; the spatial sizes are fixed.
    ``path`` is written whole or not at all (a temporary file, then a rename).
    """
    from hrnas_automl.files import atomic_write

    was_training = model.training
    model.eval()
    try:
        x = torch.randn(2 if dynamic_batch else 1, *input_shape)  # batch 2: a size the tracer cannot mistake for 1
        out = model(x)
        names = list(names) if names is not None else output_names(out)
        axes = None
        if dynamic_batch:
            one = flat_outputs(model(x[:1]))
            axes = {name: {0: "batch"} for name, a, b in zip(names, flat_outputs(out), one) if a.shape[0] != b.shape[0]}
            axes["input"] = {0: "batch"}
        buffer = io.BytesIO()
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _static_pooling():
            warnings.simplefilter("ignore")  # tracer warnings on shape arithmetic (the shapes are fixed but the batch)
            torch.onnx.export(_Flat(model), (x,), buffer, dynamo=False, opset_version=opset, input_names=["input"],
                              output_names=names, dynamic_axes=axes, do_constant_folding=True)
        atomic_write(path, lambda handle: handle.write(buffer.getvalue()))
    finally:
        model.train(was_training)
    return names


def ort_session(path: str | Path, threads: int | None = None) -> onnxruntime.InferenceSession:
    """An ONNX Runtime CPU session of the model at ``path``, all graph optimisations on, ``threads`` intra-op threads
    (None: ONNX Runtime's default, one per core) and one inter-op thread (batch 1 runs the graph sequentially)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def run_onnx(session: onnxruntime.InferenceSession, x: torch.Tensor) -> list[torch.Tensor]:
    """The outputs of ``session`` for the input ``x``, as tensors in the model's output order."""
    return [torch.from_numpy(out) for out in session.run(None, {"input": x.detach().cpu().numpy()})]
