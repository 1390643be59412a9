"""Measured latency of a frozen network on the current machine (median over repeated runs)."""
from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["measure_latency", "torch_threads"]


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with torch's intra-op thread count set to ``n`` (None: unchanged), then restore it."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


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
