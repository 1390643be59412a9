"""All Optuna glue, in one package (the only place that imports optuna): studies over λ, the pruning threshold
and the warm-up (``study``), their YAML (``config``), the objectives they run (``objectives``, ``slimming``),
architecture suggestions for your own objective and the early-exit threshold search (``thresholds``).
"""
from __future__ import annotations

from hrnas_automl.registry import lazy_exports

__all__ = ["run_study", "open_study", "load_study", "suggest_architecture", "plot_front", "study_summary",
           "TuneConfig", "load_tune_config", "parse_tune_config", "TuneParams", "TuneResult", "make_objective"]

__getattr__ = lazy_exports(__name__, {
    "study": ("run_study", "open_study", "load_study", "suggest_architecture", "plot_front", "study_summary"),
    "config": ("TuneConfig", "load_tune_config", "parse_tune_config"),
    "objectives": ("TuneParams", "TuneResult", "make_objective"),
})
