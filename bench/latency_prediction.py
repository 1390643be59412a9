"""Prediction error of the latency table per space, backend and thread count on unseen samples (issue 20 item 3).

For one space: compiles the latency table of every (backend, threads) in a fresh cache (timed), then measures
``--samples`` random networks never used by the table (seed ``--seed``; the table's correction uses its own seed)
under every (backend, threads), interleaved (network by network, round by round, each setting in turn), so a load
change on the shared machine hits all settings alike. Reports per setting the error of the raw block-sum and of the
corrected table, and the noise floor: how much two rounds of the same network differ. Prints the JSON; ``--out``
also writes it:

    .venv/bin/python bench/latency_prediction.py --space hrnas --out  # bench/results/latency_prediction_hrnas.json
    .venv/bin/python bench/latency_prediction.py --space ranet --backends torch --samples 5
"""
from __future__ import annotations

import argparse
import itertools
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.common, run as a script too

from bench.common import add_out_argument, emit, spread  # noqa: E402
from hrnas_automl.arch import resolve_space  # noqa: E402
from hrnas_automl.cost import parse_input_shape  # noqa: E402
from hrnas_automl.cost.latency import (BACKENDS, _to_onnx, latency_table, measure_latency, onnx_latency,  # noqa: E402
                                       raw_latency_table)

# What each space is timed at: DetNAS at its paper input; the dense spaces as bench/cost_model.py compares them.
SETUPS: dict[str, tuple[str, dict[str, Any]]] = {
    "detnas-small": ("3x224x224", {}), "detnas-large": ("3x224x224", {}),
    "hrnas": ("3x64x64", {"setting": "tiny", "bn_momentum": 0.1, "head": "segmentation", "num_classes": 4}),
    "lite-hrnet": ("3x64x48", {}), "ranet": ("3x32x32", {})}


def errors(predicted: list[float], measured: list[float]) -> dict[str, float]:
    """Median and max absolute relative error (%), and the signed median (bias)."""
    signed = [100 * (p - m) / m for p, m in zip(predicted, measured)]
    absolute = [abs(e) for e in signed]
    return {"median_abs_pct": round(statistics.median(absolute), 2), "max_abs_pct": round(max(absolute), 2),
            "median_signed_pct": round(statistics.median(signed), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", required=True, choices=sorted(SETUPS))
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2, help="measurements of each unseen network per setting")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per measurement (median)")
    parser.add_argument("--seed", type=int, default=0)
    add_out_argument(parser, "latency_prediction_{space}")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hrnas-latency-bench-") as cache:
        os.environ["HRNAS_AUTOML_CACHE"] = cache
        emit(run(args, cache), args)


def run(args: argparse.Namespace, cache: str) -> dict[str, Any]:
    """Compile every setting's tables, then measure the unseen networks interleaved; one JSON-able dict."""
    shape_text, space_args = SETUPS[args.space]
    shape = parse_input_shape(shape_text)
    space = resolve_space(args.space, **space_args)
    settings = list(itertools.product(args.backends, args.threads))
    tables, compile_s = {}, {}
    for backend, threads in settings:
        t0 = time.perf_counter()
        raw = raw_latency_table(space, shape, threads=threads, backend=backend)
        tables[backend, threads] = (raw, latency_table(space, shape, threads=threads, backend=backend))
        compile_s[f"{backend}/{threads}t"] = round(time.perf_counter() - t0, 1)
        print(f"compiled {backend} {threads}t in {compile_s[f'{backend}/{threads}t']} s", file=sys.stderr, flush=True)
    rng = random.Random(args.seed)
    archs = [{label: rng.choice(values) for label, values in space.choices.items()} for _ in range(args.samples)]
    times: dict[tuple[str, int], list[list[float]]] = {s: [] for s in settings}
    for index, arch in enumerate(archs):
        net = space.freeze(arch).eval()
        path = Path(cache) / "unseen.onnx"
        if "onnxruntime" in args.backends:  # exported once per network (slow for large graphs), timed per setting
            _to_onnx(net, shape, path, 1)
        rounds: dict[tuple[str, int], list[float]] = {s: [] for s in settings}
        for _ in range(args.rounds):
            for backend, threads in settings:
                rounds[backend, threads].append(
                    measure_latency(net, shape, threads=threads, repeats=args.repeats) if backend == "torch" else
                    onnx_latency(path, shape, threads=threads, repeats=args.repeats))
        for s in settings:
            times[s].append(rounds[s])
        print(f"sample {index}: " + ", ".join(f"{b}/{t}t {statistics.median(rounds[b, t]):.2f} ms"
                                               for b, t in settings), file=sys.stderr, flush=True)
    results = {}
    for backend, threads in settings:
        raw, table = tables[backend, threads]
        measured = [statistics.median(r) for r in times[backend, threads]]
        noise = [100 * (max(r) - min(r)) / statistics.median(r) for r in times[backend, threads]]
        raw_pred = [raw.evaluate(a)[0] for a in archs]
        pred = [table.evaluate(a)[0] for a in archs]
        results[f"{backend}/{threads}t"] = {
            "measured_ms": spread(measured), "raw_block_sum": errors(raw_pred, measured),
            "corrected": errors(pred, measured), "correction_factor": round(pred[0] / raw_pred[0], 4),
            "noise_between_rounds_pct": spread(noise),
            "rows": [{"measured_ms": [round(x, 3) for x in r], "raw_ms": round(p0, 3), "predicted_ms": round(p, 3)}
                     for r, p0, p in zip(times[backend, threads], raw_pred, pred)]}
    return {"space": args.space, "input": list(shape), "space_args": space_args, "samples": args.samples,
            "rounds": args.rounds, "repeats": args.repeats, "seed": args.seed, "compile_s": compile_s,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared and loaded "
                       f"(load average {os.getloadavg()[0]:.1f} at the end)",
            "torch": torch.__version__, "settings": results}


if __name__ == "__main__":
    main()
