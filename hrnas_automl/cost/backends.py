"""The latency backends: where a latency is measured. Torch-free, so a tuner or a config check refuses an unknown
backend before any network is built."""
from __future__ import annotations

__all__ = ["BACKENDS", "check_backend"]

BACKENDS = ("torch", "onnxruntime")
"""Where latency is measured: eager PyTorch, or ONNX Runtime (CPU) on the network exported to ONNX."""


def check_backend(backend: str, device: str = "cpu") -> str:
    """``backend`` if it is one of :data:`BACKENDS` and runs on ``device``, else a one-line ``ValueError`` (checked
    here, without torch, so a tuner refuses a typo when nnictl creates it)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown latency backend {backend!r}; use one of: {', '.join(BACKENDS)}")
    if backend == "onnxruntime" and device != "cpu":
        raise ValueError(f"latency backend onnxruntime runs on the CPU, got device {device!r}; use device 'cpu' "
                         "or backend 'torch'")
    return backend
