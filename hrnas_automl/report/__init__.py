"""``hrnas-automl report``: search strategies compared across NNI experiments, Optuna studies and one-shot /
fine-grained results, over seeds: one offline HTML page, PNGs, a JSON and a Markdown table.

``runs``: the inputs read as runs (a strategy at a seed); ``analysis``: best-so-far, Pareto fronts, the table and
the rank tests; ``page``: the figures and the page. Names are exported lazily.
"""
from __future__ import annotations

from hrnas_automl.registry import lazy_exports

__all__ = ["read_runs", "build_report", "write_report"]

__getattr__ = lazy_exports(__name__, {
    "runs": ("read_runs",),
    "page": ("build_report", "write_report"),
})


def __dir__() -> list[str]:
    return sorted(__all__)
