"""Latency: measured for a frozen network on this machine (median over repeated runs), and predicted for
unseen candidates by a lookup table measured once per space, device and input size."""
from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hrnas_automl.tasks.training import torch_threads  # re-exported: the one thread-count context

if TYPE_CHECKING:
    from hrnas_automl.arch import Space
    from hrnas_automl.cost.tables import CostTable

__all__ = ["measure_latency", "torch_threads", "latency_table", "predicted_latency"]


@torch.no_grad()
def measure_latency(model: nn.Module, input_shape: tuple[int, int, int], *, batch_size: int = 1, warmup: int = 3,
                    repeats: int = 10, threads: int | None = None, device: str = "cpu") -> float:
    """Median wall time of one forward pass in milliseconds.

    CUDA runs are timed with CUDA events after a synchronize; CPU runs with ``perf_counter``.
    ``threads`` pins torch's intra-op thread count for the measurement (restored afterwards).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"latency needs repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    was_training = model.training
    model.eval().to(device)
    x = torch.randn(batch_size, *input_shape, device=device)
    times = []
    with torch_threads(threads):
        for _ in range(warmup):
            model(x)
        for _ in range(repeats):
            if device.startswith("cuda"):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                model(x)
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - t0) * 1000.0)
    model.train(was_training)
    return statistics.median(times)


def _device_name(device: str, threads: int | None) -> str:
    """The machine a latency table belongs to: GPU name, or CPU model and thread count."""
    import platform

    if device.startswith("cuda"):
        return f"{device}:{torch.cuda.get_device_name(torch.device(device))}"
    return f"cpu:{platform.processor() or platform.machine()}:{threads or torch.get_num_threads()}t"


def latency_table(space: str | Space, input_shape: Sequence[int] | None = None, *, threads: int | None = None,
                  device: str = "cpu", warmup: int = 3, repeats: int = 10, **space_args: Any) -> CostTable:
    """Per-op latency lookup table of a space, measured once on this machine and cached per device and
    input size: ``latency_ms`` of a candidate = base + the latency of each chosen block measured alone
    (DetNAS), or whole networks per group (RANet). It predicts candidates never measured; ``bench/
    cost_model.py`` reports its error against :func:`measure_latency`.
    """
    from hrnas_automl.arch import resolve_space
    from hrnas_automl.cost.analytic import space_table

    space = resolve_space(space, **space_args)

    def measure(module: nn.Module, module_shape: tuple[int, ...]) -> tuple[float, ...]:
        return (measure_latency(module, module_shape, warmup=warmup, repeats=repeats, threads=threads,
                                device=device),)

    return space_table(space, space.input_shape(input_shape), measure, ("latency_ms",),
                       kind=f"latency-{_device_name(device, threads)}-w{warmup}r{repeats}", verify=False)


def predicted_latency(space: str | Space, arch: Mapping[str, Any], input_shape: Sequence[int] | None = None, *,
                      threads: int | None = None, device: str = "cpu", **space_args: Any) -> float:
    """Latency of ``arch`` in ms predicted by :func:`latency_table` (no network is built)."""
    return latency_table(space, input_shape, threads=threads, device=device, **space_args).evaluate(arch)[0]
