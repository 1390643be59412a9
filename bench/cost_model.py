"""Benchmark of the analytic cost model (issue 7): equality with ptflops on random samples of every space,
speed per candidate (analytic vs freeze + ptflops), and the latency lookup table's prediction error.

    .venv/bin/python bench/cost_model.py --output-dir       # 1,000 samples per space, JSON per space in bench/results/
    .venv/bin/python bench/cost_model.py --samples 50 --spaces detnas-small --latency-archs 5
    .venv/bin/python bench/cost_model.py --spaces hrnas --input 3x64x64 --latency-spaces   # SPACE_ARGS below
    .venv/bin/python bench/cost_model.py --spaces lite-hrnet --input 3x64x48 --latency-spaces
    .venv/bin/python bench/cost_model.py --compile-times        # every space's table at its default input, cold

``cold_compile_times`` (what ``--compile-times`` prints) times one table compiled from nothing: no shipped table,
no cache. Otherwise tables are compiled into a fresh cache directory (removed at the end; the tables shipped in the
package are ignored), so the compile time is measured too. One torch thread. Without ``--output-dir`` the rows are
only printed (stderr), so a trial run never overwrites the committed figures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hrnas_automl.arch import choices_of, freeze, resolve_space
from hrnas_automl.cost import analytic_cost, cost_table, count_cost, parse_input_shape
from hrnas_automl.cost import tables
from hrnas_automl.cost.analytic import MEASURES, compile_space_table
from hrnas_automl.cost.latency import latency_table, measure_latency
from hrnas_automl.registry import list_presets, list_spaces


# HR-NAS as examples/hrnas/*.yml search it (tiny setting, 4-class segmentation; use --input 3x64x64).
SPACE_ARGS: dict[str, dict[str, Any]] = {
    "detnas-small": {"num_classes": 10}, "detnas-large": {"num_classes": 10},
    "hrnas": {"setting": "tiny", "bn_momentum": 0.1, "head": "segmentation", "num_classes": 4}}


def random_archs(choices: dict[str, list[Any]], n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{label: rng.choice(values) for label, values in choices.items()} for _ in range(n)]


def cold_compile_times(space: str, input_shape: tuple[int, ...] | None = None, *, kind: str = "ptflops",
                       **space_args: Any) -> tuple[float, float]:
    """(wall, CPU) seconds to compile ``space``'s ``kind`` table (``ptflops`` or ``conv-macs``) at ``input_shape``
    (default: the space's) from nothing, verification included: no shipped table, no cache read or written. The
    space's choices are read first and not counted (building the supernet for them is the CLI's start-up). The CPU
    seconds of this process are what the wall time would be on an idle machine (the compile is single-threaded
    Python on the meta device), where a loaded one stretches the wall time."""
    resolved = resolve_space(space, **space_args)
    resolved.choices
    measure, metrics = MEASURES[kind]
    wall, cpu = time.perf_counter(), time.process_time()
    compile_space_table(resolved, resolved.input_shape(input_shape), measure, metrics, verify=True)
    return time.perf_counter() - wall, time.process_time() - cpu


def cold_compile_seconds(space: str, input_shape: tuple[int, ...] | None = None, *, kind: str = "ptflops",
                         cpu: bool = False, **space_args: Any) -> float:
    """Wall seconds (CPU seconds with ``cpu``) of :func:`cold_compile_times`."""
    return cold_compile_times(space, input_shape, kind=kind, **space_args)[1 if cpu else 0]


def bench_space(space: str, shape: tuple[int, ...], space_args: dict[str, Any], n: int, repeats: int,
                seed: int, save: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Equality on the presets + ``n`` random archs, and the per-candidate speed of both ways.

    Each arch's analytic cost is timed (``repeats`` evaluations) right after its ptflops count, so both
    medians see the same load on a shared machine. ``save`` gets the row so far after every 50 ptflops
    counts, so an interrupted run leaves a valid JSON (``total`` says how many archs it compared)."""
    choices = choices_of(space, **space_args)
    t0 = time.perf_counter()
    cost_table(space, shape, **space_args)
    compile_s = time.perf_counter() - t0
    presets = [dict(p.arch) for p in list_presets(space)]  # those that are samples of the space as configured
    archs = [a for a in presets if a.keys() == choices.keys()
             and all(v in choices[k] for k, v in a.items())] + random_archs(choices, n, seed)
    n_presets = len(archs) - n
    equal, mismatches, ptflops_s, analytic_s = 0, [], [], []
    references: dict[str, Any] = {}  # small spaces repeat archs among 1,000 samples: count each once

    def row(done: int) -> dict[str, Any]:
        ptflops_median, analytic_median = statistics.median(ptflops_s), statistics.median(analytic_s)
        return {"space": space, "input": list(shape), "space_args": space_args, "samples": max(done - n_presets, 0),
                "presets": n_presets, "unique": len(references), "equal": equal, "total": done,
                "mismatches": mismatches,
                "compile_s": round(compile_s, 3), "ptflops_ms_per_arch_median": round(ptflops_median * 1e3, 3),
                "analytic_us_per_arch_median": round(analytic_median * 1e6, 3),
                "speed_ratio": round(ptflops_median / analytic_median), "analytic_repeats": repeats}

    for done, arch in enumerate(archs, 1):
        key = json.dumps(arch, sort_keys=True)
        if key not in references:
            t0 = time.perf_counter()
            references[key] = count_cost(freeze(space, arch, **space_args), shape)
            ptflops_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for _ in range(repeats):
                analytic_cost(space, arch, shape, **space_args)
            analytic_s.append((time.perf_counter() - t0) / repeats)
            if len(ptflops_s) % 50 == 0:
                save(row(done - 1))
        analytic, reference = analytic_cost(space, arch, shape, **space_args), references[key]
        if analytic == reference:
            equal += 1
        elif len(mismatches) < 5:
            mismatches.append({"arch": arch, "analytic": vars(analytic), "ptflops": vars(reference)})
    return row(len(archs))


def bench_latency(space: str, shape: tuple[int, ...], space_args: dict[str, Any], n: int, seed: int
                  ) -> dict[str, Any]:
    """Latency predicted by the lookup table vs measured (median of 10 after 3 warm-ups) on ``n`` unseen archs."""
    t0 = time.perf_counter()
    table = latency_table(space, shape, threads=1, **space_args)
    compile_s = time.perf_counter() - t0
    rows = []
    for arch in random_archs(choices_of(space, **space_args), n, seed + 1):
        measured = measure_latency(freeze(space, arch, **space_args), shape, threads=1, repeats=20)
        predicted = table.evaluate(arch)[0]
        rows.append({"measured_ms": round(measured, 3), "predicted_ms": round(predicted, 3),
                     "error_pct": round(100 * (predicted - measured) / measured, 2)})
    errors = [abs(r["error_pct"]) for r in rows]
    return {"space": space, "input": list(shape), "archs": n, "compile_s": round(compile_s, 2),
            "mean_abs_error_pct": round(statistics.mean(errors), 2),
            "median_abs_error_pct": round(statistics.median(errors), 2), "max_abs_error_pct": round(max(errors), 2),
            "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", nargs="*", help="default: every registered space")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--input", default="3x32x32", help="CxHxW for the cost comparison (CIFAR size by default)")
    parser.add_argument("--repeats", type=int, default=20,
                        help="analytic evaluations per arch, timed right after its ptflops count")
    parser.add_argument("--latency-spaces", nargs="*", default=["detnas-small"])
    parser.add_argument("--latency-input", default="3x224x224")
    parser.add_argument("--latency-archs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile-times", action="store_true",
                        help="only print each space's cold compile time at its default input (--spaces: which)")
    parser.add_argument("--output-dir", nargs="?", const=str(Path(__file__).parent / "results"), default=None,
                        help="write one JSON per space (cost_model_SPACE.json) and cost_model_latency.json there "
                             "(bare: bench/results); without it, only print")
    args = parser.parse_args()
    if args.compile_times:
        for space in args.spaces if args.spaces is not None else [spec.name for spec in list_spaces()]:
            wall, cpu = cold_compile_times(space)
            print(json.dumps({"space": space, "cold_compile_s": round(wall, 2), "cpu_s": round(cpu, 2)}), flush=True)
        return
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="hrnas-cost-bench-") as cache:
        os.environ["HRNAS_AUTOML_CACHE"] = cache
        tables.SHIPPED_DIR = Path(cache) / "none"  # compile every table, so compile_s is a compile
        run(args, Path(args.output_dir) if args.output_dir else None)


def run(args: argparse.Namespace, out: Path | None) -> None:
    """Every space's cost comparison, then the latency tables; each row printed, and written when ``out`` is set."""
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    machine = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, 1 torch thread",
               "torch": torch.__version__}
    shape = parse_input_shape(args.input)
    for space in args.spaces if args.spaces is not None else [spec.name for spec in list_spaces()]:
        space_args = SPACE_ARGS.get(space, {})

        def save(row: dict[str, Any], space: str = space) -> None:
            if out is not None:
                (out / f"cost_model_{space}.json").write_text(json.dumps({**machine, **row}, indent=2) + "\n")

        row = bench_space(space, shape, space_args, args.samples, args.repeats, args.seed, save)
        print(json.dumps({k: v for k, v in row.items() if k != "mismatches"}), file=sys.stderr, flush=True)
        save(row)
    rows = []
    for space in args.latency_spaces:
        rows.append(bench_latency(space, parse_input_shape(args.latency_input), {}, args.latency_archs, args.seed))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "rows"}), file=sys.stderr, flush=True)
    if rows and out is not None:
        (out / "cost_model_latency.json").write_text(json.dumps({**machine, "latency": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
