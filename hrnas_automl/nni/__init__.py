"""All NNI glue outside the spaces, in one package: NNI is archived upstream, so what touches its internals
(import-time noise, pins, the search-space JSON, trial reporting, tuners, nnictl experiments) lives here.

``compat``: quiet imports, dependency pins, search-space JSON, trial-side calls; ``tuners``: the strategies as
nnictl tuners; ``optuna_tuner``: an Optuna study as an nnictl tuner; ``experiment``: run and read an nnictl
experiment. Names are exported lazily, so a trial that needs one pays for nothing else.
"""
from __future__ import annotations

from hrnas_automl.registry import lazy_exports

__all__ = ["StrategyTuner", "MultiStrategyTuner", "OptunaTuner", "NniExperiment", "TrialRecord"]

__getattr__ = lazy_exports(__name__, {
    "tuners": ("StrategyTuner", "MultiStrategyTuner"),
    "optuna_tuner": ("OptunaTuner",),
    "experiment": ("NniExperiment", "TrialRecord"),
})
