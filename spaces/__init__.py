"""Built-in search spaces; importing this package registers them (see :mod:`hrnas_automl.registry`)."""
from hrnas_automl.spaces.detnas import DETNAS_CONFIGS, DETNAS_OPS, DetNASConfig, DetNASSpace
from hrnas_automl.spaces.hrnas import HRNAS_SETTINGS, HRNASNet, HRNASSetting, HRNASSpace
from hrnas_automl.spaces.lite_hrnet import LiteHRNetSpace
from hrnas_automl.spaces.ranet import RANet, RANetConfig, RANetSpace

__all__ = ["DETNAS_CONFIGS", "DETNAS_OPS", "DetNASConfig", "DetNASSpace", "HRNAS_SETTINGS", "HRNASNet", "HRNASSetting",
           "HRNASSpace", "LiteHRNetSpace", "RANet", "RANetConfig", "RANetSpace"]
