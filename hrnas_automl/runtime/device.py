"""THE device helper: which device a run uses, mixed precision and memory format. Every training and evaluation path
of the package (the tasks, the fine-grained search, the supernet, the one-shot search, BN recalibration,
early-exit thresholds, latency) gets its device here; nothing else in the package names CUDA (a test greps for it).

``device: auto`` (the default) is CUDA when this machine has it, else the CPU; ``cpu``, ``cuda``, ``cuda:N`` and
``mps`` name one. ``amp: bf16 | fp16`` runs forward passes under :func:`torch.autocast` (fp16 with a gradient
scaler, bf16 without: its exponent range is fp32's); ``off`` changes nothing. ``channels_last`` stores the
network's 4-D weights NHWC (faster convolutions on tensor cores).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from hrnas_automl.config import DeviceSettings

__all__ = ["resolve_device", "device_of", "Runtime", "runtime_of"]

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto", key: str = "train.device") -> torch.device:
    """The device ``name`` means on this machine (``auto``: CUDA when available, else the CPU); a device this
    machine or this torch build lacks is refused in one line naming the setting ``key`` and the fix."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"{key} is {name!r} but this machine has {torch.cuda.device_count()} CUDA device(s) for this "
                         f"torch build ({torch.__version__}); set {key}: auto (or cpu) or install a CUDA torch")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{key} is {name!r} but MPS is not available here; set {key}: auto (or cpu)")
    return device


def device_of(module: nn.Module) -> torch.device:
    """The device ``module``'s weights are on (the CPU for a module without parameters): where evaluation runs
    its batches, so an evaluator follows the network the trainer placed."""
    return next((p.device for p in module.parameters()), torch.device("cpu"))


@dataclass(frozen=True)
class Runtime:
    """A resolved device with the precision and memory format to run on it."""

    device: torch.device
    amp: str = "off"
    channels_last: bool = False

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> Any:
        """The context forward passes run in: :func:`torch.autocast` in the AMP dtype, or nothing with ``amp: off``."""
        if self.amp == "off":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=_AMP_DTYPES[self.amp])

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A loss scaler for fp16 (its gradients underflow without one); None for bf16 and fp32."""
        return torch.amp.GradScaler(self.device.type) if self.amp == "fp16" else None

    def place(self, module: nn.Module) -> nn.Module:
        """``module`` moved to the device (in place) and, with ``channels_last``, its 4-D weights stored NHWC."""
        module.to(self.device)
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return module

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """A batch of images on the device (NHWC with ``channels_last``)."""
        images = images.to(self.device, non_blocking=True)
        if self.channels_last and images.ndim == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def synchronize(self) -> None:
        """Wait for the device's queued work (CUDA runs asynchronously; the CPU has nothing to wait for)."""
        if self.is_cuda:
            torch.cuda.synchronize(self.device)

    @contextmanager
    def timed(self, times: list[float]) -> Iterator[None]:
        """Time a block in milliseconds into ``times``: CUDA events around it on a GPU (after a synchronize, so
        earlier queued work is not counted), the wall clock on the CPU."""
        if not self.is_cuda:
            import time

            t0 = time.perf_counter()
            yield
            times.append((time.perf_counter() - t0) * 1000.0)
            return
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(self.device)
        start.record()
        yield
        end.record()
        torch.cuda.synchronize(self.device)
        times.append(start.elapsed_time(end))


def runtime_of(settings: DeviceSettings, key: str = "train.device") -> Runtime:
    """The :class:`Runtime` of a config's device settings (``device`` resolved, see :func:`resolve_device`). Under
    ``torchrun`` a CUDA device without an index is this process's GPU (``cuda:LOCAL_RANK``) and the process joins
    the process group (:func:`hrnas_automl.runtime.distributed.init_from_env`)."""
    from hrnas_automl.runtime import distributed

    device = resolve_device(settings.device, key)
    if distributed.launched() and device.type == "cuda" and device.index is None:
        device = resolve_device(f"cuda:{distributed.local_rank()}", key)
    distributed.init_from_env(device)
    return Runtime(device, settings.amp, settings.channels_last)
