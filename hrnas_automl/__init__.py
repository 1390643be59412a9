"""hrnas-automl: NNI model spaces and search strategies for efficient high-resolution vision networks.

Importing the package is cheap; spaces, tasks and the NNI/Optuna glue load on first use.
"""
from hrnas_automl.registry import get_preset, get_space, list_presets, list_spaces

__all__ = ["get_space", "list_spaces", "get_preset", "list_presets", "__version__"]
__version__ = "0.1.0"
