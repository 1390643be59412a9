"""What every benchmark shares: results written only when asked, scratch files cleaned up, and timings of
compared phases interleaved (A B A B ...) with medians, so a load change on the shared machine hits both phases
alike instead of skewing their ratio."""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["add_out_argument", "emit", "interleaved", "spread"]

RESULTS = Path(__file__).resolve().parent / "results"


def add_out_argument(parser: argparse.ArgumentParser, name: str) -> None:
    """``--out [PATH]``: write the JSON there (bare ``--out``: ``bench/results/<name>.json``); without it, only print,
    so a trial run never overwrites the committed figures."""
    parser.add_argument("--out", nargs="?", const=str(RESULTS / f"{name}.json"), default=None, metavar="PATH",
                        help=f"write the JSON (default path bench/results/{name}.json); without it, only print")


def emit(result: Mapping[str, Any], out: str | None) -> None:
    """Print ``result`` as JSON and write it to ``out`` when given."""
    text = json.dumps(result, indent=2) + "\n"
    print(text, end="")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
        print(f"wrote {out}")


def interleaved(phases: Mapping[str, Callable[[int], None]], rounds: int) -> dict[str, list[float]]:
    """Wall-clock seconds of each phase, called as ``phase(round)`` in the order A B A B ... for ``rounds`` rounds."""
    times: dict[str, list[float]] = {name: [] for name in phases}
    for index in range(rounds):
        for name, phase in phases.items():
            t0 = time.perf_counter()
            phase(index)
            times[name].append(time.perf_counter() - t0)
    return times


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of a series of measurements (rounded for the JSON)."""
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}
