"""Built-in search spaces: one module per family, each with its ``SpaceSpec`` (``SPEC``; DetNAS has two), which
:data:`hrnas_automl.registry.SPACES` lists; shared blocks and the choice/freeze mixin are in ``common``."""
from hrnas_automl.spaces.detnas import DETNAS_CONFIGS, DETNAS_OPS, DetNASConfig, DetNASSpace
from hrnas_automl.spaces.hrnas import HRNAS_SETTINGS, HRNASNet, HRNASSetting, HRNASSpace
from hrnas_automl.spaces.lite_hrnet import LiteHRNetSpace
from hrnas_automl.spaces.ranet import RANet, RANetConfig, RANetSpace

__all__ = ["DETNAS_CONFIGS", "DETNAS_OPS", "DetNASConfig", "DetNASSpace", "HRNAS_SETTINGS", "HRNASNet", "HRNASSetting",
           "HRNASSpace", "LiteHRNetSpace", "RANet", "RANetConfig", "RANetSpace"]
