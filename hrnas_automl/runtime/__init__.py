"""Where and how networks run: the device helper (``device``: ``auto``/``cpu``/``cuda:N``, AMP, channels_last) and
distributed data-parallel training under ``torchrun`` (``distributed``)."""
from __future__ import annotations

from hrnas_automl.registry import lazy_exports

__all__ = ["resolve_device", "Runtime", "runtime_of"]

__getattr__ = lazy_exports(__name__, {"device": ("resolve_device", "Runtime", "runtime_of")})
