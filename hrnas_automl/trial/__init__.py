"""The trial path: one architecture trained and scored on a task (``run``), its YAML (``config``), one
fine-grained search as a trial (``prune``), and where results go, NNI or stdout (``report``)."""
from __future__ import annotations

from hrnas_automl.registry import lazy_exports

__all__ = ["TrialResult", "run_trial", "resolve_arch", "TrialConfig", "load_trial_config", "parse_trial_config",
           "Reporter", "reporter"]

__getattr__ = lazy_exports(__name__, {
    "run": ("TrialResult", "run_trial", "resolve_arch"),
    "config": ("TrialConfig", "load_trial_config", "parse_trial_config"),
    "report": ("Reporter", "reporter"),
})
