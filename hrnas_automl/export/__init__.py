"""Taking a found network out: ONNX / torch.export files, an inference form, and a loader that needs no NNI.

Names are exported lazily, so ``from hrnas_automl.export import load`` imports neither NNI nor the spaces.
"""
from __future__ import annotations

from hrnas_automl.registry import lazy_exports

__all__ = ["to_onnx", "ort_session", "run_onnx"]

__getattr__ = lazy_exports(__name__, {
    "onnx": ("to_onnx", "ort_session", "run_onnx"),
})


def __dir__() -> list[str]:
    return sorted(__all__)
