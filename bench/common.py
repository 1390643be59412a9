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

__all__ = ["add_out_argument", "out_path", "emit", "interleaved", "spread"]

RESULTS = Path(__file__).resolve().parent / "results"


def add_out_argument(parser: argparse.ArgumentParser, name: str) -> None:
    """``--out [PATH]``: write the JSON there (a bare ``--out``: ``bench/results/<name>.json``, where ``name`` may hold
    ``{field}``s of the parsed arguments, e.g. ``ranet_thresholds_seed{seed}``); without it, only print, so a trial
    run never overwrites the committed figures."""
    parser.add_argument("--out", nargs="?", const=str(RESULTS / f"{name}.json"), default=None, metavar="PATH",
                        help=f"write the JSON (bare --out: bench/results/{name}.json); without it, only print")


def out_path(args: argparse.Namespace) -> Path | None:
    """Where ``--out`` asks the JSON to go, its ``{field}``s filled from ``args`` (None: nowhere)."""
    return Path(args.out.format(**vars(args))) if args.out else None


def emit(result: Mapping[str, Any], args: argparse.Namespace) -> None:
    """Print ``result`` as JSON and write it where ``--out`` says (:func:`out_path`)."""
    text = json.dumps(result, indent=2) + "\n"
    print(text, end="")
    out = out_path(args)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
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
