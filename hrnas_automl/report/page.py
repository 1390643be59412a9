"""``hrnas-automl report``: one self-contained HTML page (PNG figures inlined, no script, no network) plus the
PNGs, a JSON and a Markdown table, comparing strategies across runs and seeds.

Figures: the best-so-far metric against the trial index (the order results arrived) and against wall time, the
median over a strategy's seeds with a band from the worst to the best seed (min-max); the metric against MACs,
params and latency_ms, every trial of a strategy (all seeds pooled) with its Pareto front.
"""
from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hrnas_automl.report.analysis import (ALPHA, best_so_far, default_target, group_by_strategy, pareto_front,
                                          significance, strategy_table)
from hrnas_automl.report.runs import COSTS, Run, read_runs

__all__ = ["Report", "build_report", "write_report"]

BAND = "min-max over seeds"
_COST_LABELS = {"macs": "MACs", "params": "parameters", "latency_ms": "latency (ms)"}


@dataclass
class Report:
    """The numbers of a report (what the page shows), JSON-ready through :meth:`as_dict`."""

    runs: list[Run]
    target: float
    table: list[dict[str, Any]]
    comparisons: list[dict[str, Any]]
    fronts: dict[str, dict[str, list[dict[str, Any]]]]

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "band": BAND, "maximize": self.runs[0].maximize, "strategies": self.table,
                "significance": self.comparisons, "pareto": self.fronts,
                "inputs": [{"source": r.source, "strategy": r.strategy, "seed": r.seed, "trials": len(r.trials),
                            "unscored": r.unscored} for r in self.runs]}


def build_report(inputs: Sequence[str], target: float | None = None) -> Report:
    """Read the inputs (:func:`~hrnas_automl.report.runs.read_runs`) and compute the table, the rank tests and the
    Pareto fronts; ``target`` defaults to the median of the runs' bests."""
    runs = read_runs(list(inputs))
    target = default_target(runs) if target is None else float(target)
    maximize = runs[0].maximize
    fronts = {name: {cost: [{"trial": t.name, "source": r.source, "metric": t.metric, cost: t.costs[cost]}
                            for t, r in _front_with_runs(group, cost, maximize)]
                     for cost in COSTS}
              for name, group in group_by_strategy(runs).items()}
    return Report(runs, target, strategy_table(runs, target), [c.as_dict() for c in significance(runs)], fronts)


def _front_with_runs(group: list[Run], cost: str, maximize: bool) -> list[tuple[Any, Run]]:
    owner = {id(t): r for r in group for t in r.trials}
    return [(t, owner[id(t)]) for t in pareto_front([t for r in group for t in r.trials], cost, maximize)]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _band(curves: list[list[float]]) -> tuple[list[int], list[float], list[float], list[float]]:
    """Index (1-based), median, min and max over the curves still running at each index."""
    import numpy as np

    xs, med, lo, hi = [], [], [], []
    for k in range(max(len(c) for c in curves)):
        values = [c[k] for c in curves if len(c) > k]
        xs.append(k + 1)
        med.append(float(np.median(values)))
        lo.append(min(values))
        hi.append(max(values))
    return xs, med, lo, hi


def _time_band(group: list[Run]) -> tuple[list[float], list[float], list[float], list[float]] | None:
    """Best-so-far on a common time grid: median, min and max over the seeds with a result by then."""
    import numpy as np

    timed = [r for r in group if r.trials and all(t.time_s is not None for t in r.trials)]
    if not timed:
        return None
    end = max(r.trials[-1].time_s for r in timed)
    grid = np.linspace(0.0, end, 200)
    rows = []
    for r in timed:
        times = [t.time_s for t in r.trials]
        best = best_so_far(r.trials, r.maximize)
        index = np.searchsorted(times, grid, side="right") - 1
        rows.append([best[i] if i >= 0 else math.nan for i in index])
    values = np.array(rows, dtype=float)
    keep = ~np.all(np.isnan(values), axis=0)
    values, grid = values[:, keep], grid[keep]
    return (list(grid), list(np.nanmedian(values, axis=0)), list(np.nanmin(values, axis=0)),
            list(np.nanmax(values, axis=0)))


def plot_progress(runs: list[Run], path: Path, target: float) -> Path:
    """Best-so-far against trial index and wall time, one colour per strategy (median line, min-max band)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), dpi=110)
    try:
        for i, (name, group) in enumerate(group_by_strategy(runs).items()):
            color = f"C{i % 10}"
            xs, med, lo, hi = _band([best_so_far(r.trials, r.maximize) for r in group])
            seeds = f"{len(group)} seed{'s' * (len(group) != 1)}"
            axes[0].step(xs, med, where="post", color=color, marker=".", label=f"{name} ({seeds})")
            axes[0].fill_between(xs, lo, hi, step="post", color=color, alpha=0.2)
            timed = _time_band(group)
            if timed is not None:
                grid, med_t, lo_t, hi_t = timed
                axes[1].step(grid, med_t, where="post", color=color, label=name)
                axes[1].fill_between(grid, lo_t, hi_t, step="post", color=color, alpha=0.2)
        for ax, xlabel in zip(axes, ("trial (in the order results arrived)", "wall time (s)")):
            ax.axhline(target, color="0.5", linestyle=":", linewidth=1, label=f"target {target:.4g}")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("best-so-far metric")
            ax.grid(alpha=0.3)
        axes[0].set_title(f"best so far vs trials (line: median, band: {BAND})")
        axes[1].set_title(f"best so far vs wall time (band: {BAND})")
        if not axes[1].lines[:-1]:
            axes[1].text(0.5, 0.5, "no input records wall times", ha="center", transform=axes[1].transAxes)
        axes[0].legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def plot_fronts(runs: list[Run], path: Path) -> Path:
    """The metric against each cost, every trial (all seeds of a strategy pooled) and each strategy's front."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(COSTS), figsize=(15, 4.5), dpi=110)
    try:
        for ax, cost in zip(axes, COSTS):
            shown = False
            for i, (name, group) in enumerate(group_by_strategy(runs).items()):
                trials = [t for r in group for t in r.trials if cost in t.costs]
                if not trials:
                    continue
                shown = True
                color = f"C{i % 10}"
                ax.scatter([t.costs[cost] for t in trials], [t.metric for t in trials], s=14, alpha=0.35, color=color)
                front = pareto_front(trials, cost, group[0].maximize)
                ax.step([t.costs[cost] for t in front], [t.metric for t in front], where="post", color=color,
                        marker="o", markersize=4, label=f"{name} front")
            if shown:
                ax.legend(loc="lower right", fontsize=8)
            else:
                ax.text(0.5, 0.5, f"no trial reports {cost}", ha="center", transform=ax.transAxes)
            ax.set_xlabel(_COST_LABELS[cost])
            ax.set_ylabel("metric")
            ax.grid(alpha=0.3)
            ax.set_title(f"metric vs {_COST_LABELS[cost]}")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


_COLUMNS = [("strategy", "strategy"), ("seeds", "seeds"), ("trials", "trials"), ("best", "best"),
            ("median_best", "median of seeds' bests"), ("min_best", "worst seed's best"),
            ("reached_target", "seeds reaching target"), ("median_trials_to_target", "median trials to target"),
            ("median_time_to_target_s", "median s to target"), ("median_time_s", "median run time (s)")]


def markdown_table(report: Report) -> str:
    """The strategy table and the rank tests as Markdown (what bench/results keeps)."""
    lines = [f"Target: {report.target:.4g} ({'higher' if report.runs[0].maximize else 'lower'} is better). "
             f"Bands: {BAND}.", "", "| " + " | ".join(h for _, h in _COLUMNS) + " |",
             "|" + "---|" * len(_COLUMNS)]
    lines += ["| " + " | ".join(_fmt(row[k]) for k, _ in _COLUMNS) + " |" for row in report.table]
    lines += ["", "Rank tests (Mann-Whitney U on the seeds' best metrics):", ""]
    lines += [f"- {c['sentence']}" for c in report.comparisons] or ["- one strategy: nothing to compare."]
    return "\n".join(lines) + "\n"


def _html_table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    def cell(value: Any) -> str:  # numbers right-aligned, text left
        return f"<td{'' if isinstance(value, (int, float)) else ' class=t'}>{html.escape(_fmt(value))}</td>"

    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _page(report: Report, progress: Path, fronts: Path, title: str) -> str:
    summary = _html_table([h for _, h in _COLUMNS], [[row[k] for k, _ in _COLUMNS] for row in report.table])
    per_strategy = "".join(
        f"<h3>{html.escape(row['strategy'])}</h3>" + _html_table(
            ["source", "seed", "scored trials", "unscored", "best", "trials to target", "s to target", "run time (s)"],
            [[r["source"], r["seed"], r["trials"], r["unscored"], r["best"], r["trials_to_target"],
              r["time_to_target_s"], r["time_s"]] for r in row["runs"]])
        for row in report.table)
    tests = _html_table(["strategies", "seeds", "p (two-sided)", "p (first better)", "p (second better)", "reading"],
                        [[f"{c['first']} vs {c['second']}", f"{c['n_first']} vs {c['n_second']}", c["p_two_sided"],
                          c["p_first_better"], c["p_second_better"], c["sentence"]] for c in report.comparisons]) \
        if report.comparisons else "<p>One strategy: nothing to compare.</p>"
    direction = "higher" if report.runs[0].maximize else "lower"
    style = ("body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0 16px}"
             "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}th{background:#eee}"
             "td.t{text-align:left}img{max-width:100%}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{style}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>{len(report.runs)} runs of {len(report.table)} strategies; the metric: {direction} is better. Target for "trials to
target": {report.target:.4g}. Trial index: the order in which results arrived. Bands: {BAND}.</p>
<h2>Strategies</h2>
{summary}
<h2>Significance (Mann-Whitney U over seeds' bests, level {ALPHA})</h2>
{tests}
<h2>Best so far</h2>
{_img(progress, "best so far against trials and wall time")}
<h2>Metric against cost, with each strategy's Pareto front</h2>
{_img(fronts, "metric against MACs, params and latency")}
<h2>Runs</h2>
{per_strategy}
</body></html>
"""


def write_report(inputs: Sequence[str], out: str | Path, *, target: float | None = None,
                 title: str = "Search strategies compared") -> dict[str, Path]:
    """Write ``report.html`` (self-contained), ``progress.png``, ``pareto.png``, ``report.json`` and ``report.md``
    into the folder ``out``; returns their paths by kind."""
    report = build_report(inputs, target)
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the report folder {folder} ({exc.strerror}); choose another -o") from None
    paths = {"progress": plot_progress(report.runs, folder / "progress.png", report.target),
             "pareto": plot_fronts(report.runs, folder / "pareto.png")}
    paths["json"] = folder / "report.json"
    paths["json"].write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    paths["markdown"] = folder / "report.md"
    paths["markdown"].write_text(markdown_table(report))
    paths["html"] = folder / "report.html"
    paths["html"].write_text(_page(report, paths["progress"], paths["pareto"], title))
    return paths
