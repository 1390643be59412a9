"""Built-in search spaces; importing this package registers them (see :mod:`hrnas_automl.registry`)."""
from hrnas_automl.spaces.detnas import DETNAS_CONFIGS, DETNAS_OPS, DetNASConfig, DetNASSpace

__all__ = ["DETNAS_CONFIGS", "DETNAS_OPS", "DetNASConfig", "DetNASSpace"]
