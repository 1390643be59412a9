"""Latency: measured for a frozen network on this machine (median over repeated runs) under eager PyTorch or ONNX
Runtime, and predicted for unseen candidates by a lookup table measured once per space, backend, device, threads
and input size.

The table's raw block-sum (each block timed alone) is not the whole network's latency: a block timed alone pays
the per-call overhead of a whole forward (Python dispatch, ONNX Runtime's ``run``) and runs on warm caches, and
with several threads small blocks parallelise worse than the network does. :func:`latency_table` therefore times
a few whole networks right after compiling it and scales the raw table by the median of measured / block-sum on
them, so it stays additive (bounds and marginals exact). ``bench/latency_prediction.py`` publishes the error
before and after on unseen samples.
"""
from __future__ import annotations

import hashlib
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hrnas_automl.cost.backends import BACKENDS, check_backend  # re-exported
from hrnas_automl.runtime.device import Runtime, resolve_device
from hrnas_automl.tasks.training import torch_threads  # re-exported: the one thread-count context

if TYPE_CHECKING:
    from hrnas_automl.arch import Space
    from hrnas_automl.cost.tables import CostTable

__all__ = ["BACKENDS", "check_backend", "measure_latency", "latency_times", "onnx_latency", "torch_threads",
           "latency_table", "raw_latency_table", "predicted_latency"]

CALIBRATION_SAMPLES = 8
"""Whole networks timed to fit a table's correction (seeded draws, so every table sees the same ones)."""
_CALIBRATION_SEED = 20_2011  # distinct from the seeds of bench/latency_prediction.py's unseen samples


def _to_onnx(model: nn.Module, input_shape: tuple[int, ...], path: Path, batch_size: int) -> None:
    """Export ``model`` with the package's one ONNX conversion (:func:`hrnas_automl.export.onnx.to_onnx`; a fixed
    batch when timing batch 1).

    Raises:
        ValueError: the network does not export (one line naming the network and the exporter's reason).
    """
    from hrnas_automl.export.onnx import to_onnx

    try:
        to_onnx(model, input_shape, path, dynamic_batch=batch_size != 1)
    except Exception as exc:  # the exporter raises many types; all mean the same to the caller
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"latency backend onnxruntime: {type(model).__name__} does not export to ONNX ({reason}); "
                         "use backend 'torch' for this network") from None


def onnx_latency(path: str | Path, input_shape: Sequence[int], *, batch_size: int = 1, warmup: int = 3,
                 repeats: int = 10, threads: int | None = None) -> float:
    """Median milliseconds of one ONNX Runtime run of the exported network at ``path`` in a session as deployed
    (:func:`hrnas_automl.export.onnx.ort_session`: ``threads`` intra-op threads, default torch's count; one inter-op
    thread; sequential), timed as :func:`measure_latency` times backend onnxruntime: export once, time several
    thread counts."""
    return statistics.median(_onnx_times(path, input_shape, batch_size=batch_size, warmup=warmup, repeats=repeats,
                                         threads=threads))


def _onnx_times(path: str | Path, input_shape: Sequence[int], *, batch_size: int, warmup: int, repeats: int,
                threads: int | None) -> list[float]:
    """Milliseconds of each timed ONNX Runtime run (:func:`onnx_latency`)."""
    from hrnas_automl.export.onnx import ort_session

    session = ort_session(Path(path), threads or torch.get_num_threads())
    feed = {session.get_inputs()[0].name: torch.randn(batch_size, *input_shape).numpy()}
    return _times(lambda: session.run(None, feed), warmup, repeats)


def _times(run: Callable[[], Any], warmup: int, repeats: int) -> list[float]:
    """Milliseconds of each of ``repeats`` calls of ``run`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1000.0)
    return times


def measure_latency(model: nn.Module, input_shape: Sequence[int], *, batch_size: int = 1, warmup: int = 3,
                    repeats: int = 10, threads: int | None = None, device: str = "cpu",
                    backend: str = "torch") -> float:
    """Median wall time of one forward pass in milliseconds, under eager PyTorch or ONNX Runtime.

    ``threads`` pins torch's intra-op thread count (restored afterwards), or ONNX Runtime's session
    (``intra_op_num_threads``; default torch's count). CUDA runs are timed with CUDA events after a synchronize.

    Raises:
        ValueError: an unknown backend, onnxruntime on a GPU, or a network that does not export to ONNX.
    """
    return statistics.median(latency_times(model, input_shape, batch_size=batch_size, warmup=warmup, repeats=repeats,
                                           threads=threads, device=device, backend=backend))


@torch.no_grad()
def latency_times(model: nn.Module, input_shape: Sequence[int], *, batch_size: int = 1, warmup: int = 3,
                  repeats: int = 10, threads: int | None = None, device: str = "cpu",
                  backend: str = "torch") -> list[float]:
    """Milliseconds of each of the ``repeats`` timed forward passes :func:`measure_latency` takes the median of
    (its spread tells how loaded the machine was while measuring).

    Raises:
        ValueError: an unknown backend, onnxruntime on a GPU, or a network that does not export to ONNX.
    """
    check_backend(backend, device)
    if repeats < 1 or warmup < 0:
        raise ValueError(f"latency needs repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    runtime = Runtime(resolve_device(device, "latency device"))
    device = str(runtime.device)
    shape = tuple(input_shape)
    was_training = model.training
    model.eval().to(device)
    try:
        if backend == "onnxruntime":
            with tempfile.TemporaryDirectory(prefix="hrnas-latency-") as tmp:
                path = Path(tmp) / "model.onnx"
                _to_onnx(model, shape, path, batch_size)
                return _onnx_times(path, shape, batch_size=batch_size, warmup=warmup, repeats=repeats,
                                   threads=threads)
        x = torch.randn(batch_size, *shape, device=device)
        with torch_threads(threads):
            if not runtime.is_cuda:
                return _times(lambda: model(x), warmup, repeats)
            for _ in range(warmup):
                model(x)
            times: list[float] = []
            for _ in range(repeats):
                with runtime.timed(times):  # CUDA events, after a synchronize
                    model(x)
            return times
    finally:
        model.train(was_training)


def _device_name(device: str, threads: int | None, backend: str) -> str:
    """The runtime a latency table belongs to: backend (with ONNX Runtime's version), GPU name or CPU model, and
    thread count."""
    import platform

    if backend == "onnxruntime":
        import onnxruntime

        backend = f"onnxruntime{onnxruntime.__version__}"
    if device.startswith("cuda"):
        return f"{backend}-{device}:{torch.cuda.get_device_name(torch.device(device))}"
    return f"{backend}-cpu:{platform.processor() or platform.machine()}:{threads or torch.get_num_threads()}t"


def raw_latency_table(space: str | Space, input_shape: Sequence[int] | None = None, *, threads: int | None = None,
                      device: str = "cpu", backend: str = "torch", warmup: int = 3, repeats: int = 10,
                      **space_args: Any) -> CostTable:
    """The uncorrected table: base + each chosen block timed alone (DetNAS, HR-NAS), or whole networks per group
    (Lite-HRNet, RANet); cached per backend, device, threads and input size. :func:`latency_table` corrects it."""
    from hrnas_automl.arch import resolve_space
    from hrnas_automl.cost.analytic import space_table

    check_backend(backend, device)
    space = resolve_space(space, **space_args)

    def measure(module: nn.Module, module_shape: tuple[int, ...]) -> tuple[float, ...]:
        return (measure_latency(module, module_shape, warmup=warmup, repeats=repeats, threads=threads, device=device,
                                backend=backend),)

    return space_table(space, space.input_shape(input_shape), measure, ("latency_ms",),
                       kind=f"latency-{_device_name(device, threads, backend)}-w{warmup}r{repeats}", verify=False)


def _ratio(predicted: Sequence[float], measured: Sequence[float]) -> float:
    """The correction factor of a raw table: the median of measured / predicted over the whole networks timed
    (robust to a sample hit by a load burst). A ratio, not a fitted line: on a loaded machine 8 networks gave
    Lite-HRNet a line of slope 0.03, which would have predicted every network alike."""
    return statistics.median(m / p for p, m in zip(predicted, measured))


def calibrated(table: CostTable, factor: float) -> CostTable:
    """``table`` with its base and every delta scaled by ``factor``: still an additive table, so its bounds and
    marginals stay exact."""
    from hrnas_automl.cost.tables import CostTable

    return CostTable(table.metrics, table.groups, (factor * table.base[0],),
                     tuple({key: (factor * value[0],) for key, value in delta.items()} for delta in table.deltas))


def latency_table(space: str | Space, input_shape: Sequence[int] | None = None, *, threads: int | None = None,
                  device: str = "cpu", backend: str = "torch", warmup: int = 3, repeats: int = 10,
                  **space_args: Any) -> CostTable:
    """Per-block latency lookup table of a space, corrected on whole networks (module docstring): the raw table
    (:func:`raw_latency_table`) scaled by the median ratio measured / predicted of :data:`CALIBRATION_SAMPLES` whole
    networks timed the same way. Cached like the raw table (its key names the raw table's digest).

    Raises:
        ValueError: an unknown backend, or a space whose networks do not export to ONNX (backend onnxruntime).
    """
    from hrnas_automl import __version__
    from hrnas_automl.arch import resolve_space
    from hrnas_automl.cost.tables import cache_dir, cached_table

    space = resolve_space(space, **space_args)
    shape = space.input_shape(input_shape)
    raw = raw_latency_table(space, shape, threads=threads, device=device, backend=backend, warmup=warmup,
                            repeats=repeats)
    kind = f"latency-{_device_name(device, threads, backend)}-w{warmup}r{repeats}-ratio{CALIBRATION_SAMPLES}"

    def fit() -> CostTable:
        rng, choices = random.Random(_CALIBRATION_SEED), space.choices
        archs = [{label: rng.choice(values) for label, values in choices.items()} for _ in range(CALIBRATION_SAMPLES)]
        measured = [measure_latency(space.freeze(arch), shape, warmup=warmup, repeats=repeats, threads=threads,
                                    device=device, backend=backend) for arch in archs]
        return calibrated(raw, _ratio([raw.evaluate(arch)[0] for arch in archs], measured))

    digest = hashlib.sha256(json.dumps(raw.to_json(), sort_keys=True).encode()).hexdigest()[:16]
    key = {"space": space.name, "input": list(shape), "space_args": dict(space.args), "kind": kind, "raw": digest,
           "version": __version__}

    def load_or_fit() -> CostTable:
        with torch.random.fork_rng():  # freezing networks draws initial weights: the caller's stream is kept
            table = cached_table(key, fit)
        (fastest,), _ = table.bounds()
        if fastest <= 0:  # per-group differences of whole networks timed while the machine was busy
            raise ValueError(f"the latency table of {space.name} at input {list(shape)} ({kind}) predicts "
                             f"{fastest:.3g} ms for its fastest network: its timings were too noisy (the machine was "
                             f"busy while it compiled); remove the cached tables in {cache_dir()} and compile it again "
                             f"on an idle machine")
        return table

    return space.memo(("latency-calibrated", kind, tuple(shape)), load_or_fit)


def predicted_latency(space: str | Space, arch: Mapping[str, Any], input_shape: Sequence[int] | None = None, *,
                      threads: int | None = None, device: str = "cpu", backend: str = "torch",
                      **space_args: Any) -> float:
    """Latency of ``arch`` in ms predicted by :func:`latency_table` (no network is built)."""
    return latency_table(space, input_shape, threads=threads, device=device, backend=backend,
                         **space_args).evaluate(arch)[0]
