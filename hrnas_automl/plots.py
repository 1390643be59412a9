"""Plots of early-exit results: budgeted accuracy against average MACs, one curve per threshold method, with the
anytime curve (each exit on its own) for reference. Written to PNG with matplotlib's Agg backend (no display)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from hrnas_automl.tasks.early_exit import BudgetPoint

__all__ = ["plot_budget_curves"]

_LABELS = {"geometric": "geometric exit prior (paper)", "optuna": "Optuna thresholds"}


def plot_budget_curves(curves: Mapping[str, Sequence[BudgetPoint]], path: str | Path, *,
                       anytime: tuple[Sequence[float], Sequence[float]] | None = None,
                       title: str = "Budgeted classification on test") -> Path:
    """Write a PNG of test accuracy vs average MACs per image for every method of ``curves`` (e.g.
    :func:`~hrnas_automl.tasks.early_exit.budget_curve`), plus ``anytime = (exit MACs, exit accuracies)`` if
    given; returns the path. The budgets appear as dotted vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    try:
        for method, points in curves.items():
            ax.plot([p.avg_cost / 1e6 for p in points], [100 * p.accuracy for p in points], marker="o",
                    label=_LABELS.get(method, method))
        budgets = sorted({p.budget for points in curves.values() for p in points})
        for budget in budgets:
            ax.axvline(budget / 1e6, color="0.8", linestyle=":", linewidth=1, zorder=0)
        if anytime is not None:
            macs, accuracy = anytime
            ax.plot([m / 1e6 for m in macs], [100 * a for a in accuracy], marker="s", linestyle="--", color="0.4",
                    label="anytime (each exit alone)")
        ax.set_xlabel("average MMACs per image")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path
