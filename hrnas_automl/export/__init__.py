"""Taking a found network out: ONNX / torch.export files, an inference form, and a loader that needs no NNI.

Names are exported lazily, so ``from hrnas_automl.export import load`` imports neither NNI nor the spaces.
"""
from __future__ import annotations

from hrnas_automl.registry import lazy_exports

__all__ = ["load", "read_arch", "to_onnx", "ort_session", "run_onnx", "inference_form", "export_network",
           "read_source"]

__getattr__ = lazy_exports(__name__, {
    "loader": ("load", "read_arch"),
    "onnx": ("to_onnx", "ort_session", "run_onnx"),
    "fold": ("inference_form",),
    "network": ("export_network",),
    "sources": ("read_source",),
})


def __dir__() -> list[str]:
    return sorted(__all__)
