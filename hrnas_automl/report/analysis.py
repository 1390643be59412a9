"""The numbers of a strategy comparison: best-so-far curves, Pareto fronts, a table per strategy and a rank test
over seeds (Mann-Whitney U on the seeds' best metrics, scipy)."""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from hrnas_automl.report.runs import Run, TrialPoint

__all__ = ["best_so_far", "pareto_front", "group_by_strategy", "strategy_table", "significance", "default_target",
           "ALPHA"]

ALPHA = 0.05  # the significance level of the sentences


def _better(a: float, b: float, maximize: bool) -> bool:
    return a > b if maximize else a < b


def best_so_far(trials: Sequence[TrialPoint], maximize: bool) -> list[float]:
    """The best metric among the first k trials, for k = 1..len(trials)."""
    out: list[float] = []
    for t in trials:
        out.append(t.metric if not out or _better(t.metric, out[-1], maximize) else out[-1])
    return out


def pareto_front(trials: Sequence[TrialPoint], cost: str, maximize: bool) -> list[TrialPoint]:
    """The trials no other trial beats on both the metric and ``cost`` (lower cost, better metric), by cost; trials
    without that cost are left out, and of equal points the first."""
    known = sorted((t for t in trials if cost in t.costs),
                   key=lambda t: (t.costs[cost], -t.metric if maximize else t.metric))
    front: list[TrialPoint] = []
    for t in known:  # by rising cost: on the front iff better than every cheaper point
        if not front or _better(t.metric, front[-1].metric, maximize):
            front.append(t)
    return front


def group_by_strategy(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs by strategy name (in the order strategies first appear), each group sorted by seed."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.strategy, []).append(run)
    return {name: sorted(group, key=lambda r: (r.seed is None, r.seed or 0, r.source)) for name, group in
            groups.items()}


def _run_best(run: Run) -> float:
    return best_so_far(run.trials, run.maximize)[-1]


def default_target(runs: Sequence[Run]) -> float:
    """The median of the runs' best metrics: the level half the runs reach."""
    return statistics.median(_run_best(run) for run in runs)


def _reach(run: Run, target: float) -> tuple[int | None, float | None]:
    """Trials (1-based) and seconds until the best-so-far first reaches ``target`` (None: never)."""
    for index, (t, best) in enumerate(zip(run.trials, best_so_far(run.trials, run.maximize)), start=1):
        if best == target or _better(best, target, run.maximize):
            return index, t.time_s
    return None, None


def _median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def strategy_table(runs: Sequence[Run], target: float) -> list[dict[str, Any]]:
    """One row per strategy: seeds, trials, the best metric, the median (and min, max) of the seeds' bests, trials
    and seconds to reach ``target`` (medians over the seeds that reached it, and how many did), and the median
    wall time of a run (its last result), plus one row per run under ``runs``."""
    rows = []
    for name, group in group_by_strategy(runs).items():
        maximize = group[0].maximize
        bests = [_run_best(run) for run in group]
        reached = [_reach(run, target) for run in group]
        per_run = [{"source": run.source, "seed": run.seed, "trials": len(run.trials), "unscored": run.unscored,
                    "best": best, "trials_to_target": r[0], "time_to_target_s": r[1],
                    "time_s": run.trials[-1].time_s if run.trials else None}
                   for run, best, r in zip(group, bests, reached)]
        rows.append({
            "strategy": name, "seeds": len(group), "trials": sum(len(run.trials) for run in group),
            "best": max(bests) if maximize else min(bests), "median_best": statistics.median(bests),
            "min_best": min(bests), "max_best": max(bests),
            "reached_target": sum(r[0] is not None for r in reached),
            "median_trials_to_target": _median([r[0] for r in reached]),
            "median_time_to_target_s": _median([r[1] for r in reached]),
            "median_time_s": _median([row["time_s"] for row in per_run]),
            "runs": per_run})
    return rows


def _smallest_p(n: int, m: int) -> float:
    """The smallest two-sided p-value the exact Mann-Whitney test can give with n and m seeds (no ties)."""
    return min(1.0, 2 / math.comb(n + m, n))


@dataclass(frozen=True)
class Comparison:
    """A rank test between two strategies' seed bests: two-sided p, and one-sided p of each being better."""

    first: str
    second: str
    n_first: int
    n_second: int
    p_two_sided: float | None
    p_first_better: float | None
    p_second_better: float | None
    sentence: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def significance(runs: Sequence[Run]) -> list[Comparison]:
    """Mann-Whitney U between every two strategies on their seeds' best metrics (scipy's exact test where there are
    no ties), with one plain sentence each, saying so when the seeds are too few for any p-value under
    :data:`ALPHA`."""
    from scipy.stats import mannwhitneyu

    groups = group_by_strategy(runs)
    out = []
    for (a, runs_a), (b, runs_b) in combinations(groups.items(), 2):
        maximize = runs_a[0].maximize
        xa, xb = [_run_best(r) for r in runs_a], [_run_best(r) for r in runs_b]
        n, m = len(xa), len(xb)
        if min(n, m) < 2 or _smallest_p(n, m) >= ALPHA:
            out.append(Comparison(a, b, n, m, None, None, None,
                                  f"{a} ({n} seed{'s' * (n != 1)}) vs {b} ({m} seed{'s' * (m != 1)}): too few seeds "
                                  f"for a rank test to show anything (the smallest possible two-sided p-value is "
                                  f"{_smallest_p(n, m):.2g} >= {ALPHA}); run more seeds (5 each give 0.0079)."))
            continue
        two = float(mannwhitneyu(xa, xb, alternative="two-sided").pvalue)
        a_up = float(mannwhitneyu(xa, xb, alternative="greater" if maximize else "less").pvalue)
        b_up = float(mannwhitneyu(xb, xa, alternative="greater" if maximize else "less").pvalue)
        if two < ALPHA:
            winner = a if a_up < b_up else b
            sentence = f"{winner} is better than {b if winner == a else a} over seeds (p = {two:.3g} < {ALPHA})."
        else:
            sentence = f"no significant difference between {a} and {b} over {n} and {m} seeds (p = {two:.3g})."
        out.append(Comparison(a, b, n, m, two, a_up, b_up, sentence))
    return out
