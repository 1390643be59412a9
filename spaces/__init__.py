"""Built-in search spaces: one module per family, each with its ``SpaceSpec`` (``SPEC``; DetNAS has two), which
:data:`hrnas_automl.registry.SPACES` lists; shared blocks and the choice/freeze mixin are in ``common``.

Importing a space module first imports NNI's model-space API without pytorch-lightning
(:func:`hrnas_automl.nni.compat.import_nas`); the names below are exported lazily, so a trial imports the one
family it builds.
"""
from hrnas_automl.nni.compat import import_nas
from hrnas_automl.registry import lazy_exports

import_nas()

__all__ = ["DETNAS_CONFIGS", "DETNAS_OPS", "DetNASConfig", "DetNASSpace", "HRNAS_SETTINGS", "HRNASNet", "HRNASSetting",
           "HRNASSpace", "LiteHRNetSpace", "RANet", "RANetConfig", "RANetSpace"]

__getattr__ = lazy_exports(__name__, {
    "detnas": ("DETNAS_CONFIGS", "DETNAS_OPS", "DetNASConfig", "DetNASSpace"),
    "hrnas": ("HRNAS_SETTINGS", "HRNASNet", "HRNASSetting", "HRNASSpace"),
    "lite_hrnet": ("LiteHRNetSpace",),
    "ranet": ("RANet", "RANetConfig", "RANetSpace"),
})


def __dir__() -> list[str]:
    return sorted(__all__)
