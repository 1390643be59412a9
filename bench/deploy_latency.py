"""Deployment latency of the presets: eager PyTorch vs the folded inference form (BatchNorm folded, dropout removed)
vs ONNX Runtime (``model.onnx`` of the export) vs ``torch.compile`` vs TorchScript trace + freeze +
``optimize_for_inference``; batch 1, 1 and 2 threads, every mode of a preset interleaved in one run (medians and
spreads), each mode's one-off preparation time, and each mode's max abs difference to eager.

The forms are the export's (:mod:`hrnas_automl.export`); ``--modes`` picks a subset (``torch.compile`` takes
minutes per network on 2 cores). Prints the JSON; ``--out`` also writes it:

    .venv/bin/python bench/deploy_latency.py --modes eager folded onnxruntime --out
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.common, run as a script too

from bench.common import add_out_argument, emit, spread  # noqa: E402
from hrnas_automl.arch import resolve_space  # noqa: E402
from hrnas_automl.export.fold import inference_form  # noqa: E402
from hrnas_automl.export.network import max_difference  # noqa: E402
from hrnas_automl.export.onnx import flat_outputs, ort_session, run_onnx, to_onnx  # noqa: E402
from hrnas_automl.registry import get_preset, list_presets  # noqa: E402
from hrnas_automl.tasks.training import torch_threads  # noqa: E402

MODES = ("eager", "folded", "onnxruntime", "compile", "torchscript")
HEADS = {"hrnas-supernet-seg": "segmentation", "hrnas-supernet-kpt": "keypoints"}  # the head a preset is for


def _forms(net: torch.nn.Module, shape: tuple[int, ...], modes: list[str], threads: int,
           scratch: Path) -> tuple[dict[str, Callable[[torch.Tensor], Any]], dict[str, float]]:
    """A forward function per mode (batch 1, ``threads``) and its one-off preparation seconds (folding included for
    every mode but eager; ONNX Runtime's: conversion + session)."""
    x = torch.randn(1, *shape)
    t0 = time.perf_counter()
    folded, _ = inference_form(net)  # every mode but eager runs the folded form
    fold_s = time.perf_counter() - t0
    forms: dict[str, Callable[[torch.Tensor], Any]] = {}
    prepare: dict[str, float] = {}
    for mode in modes:
        t0 = time.perf_counter()
        with torch_threads(threads), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if mode == "eager":
                forms[mode] = net
            elif mode == "folded":
                forms[mode] = folded
            elif mode == "onnxruntime":
                path = scratch / "model.onnx"
                if not path.exists():
                    to_onnx(folded, shape, path)
                session = ort_session(path, threads)
                forms[mode] = lambda t, s=session: run_onnx(s, t)
            elif mode == "compile":
                compiled = torch.compile(folded)
                compiled(x)  # compiles here: the one-off time
                forms[mode] = compiled
            elif mode == "torchscript":
                traced = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(folded, (x,),
                                                                                           strict=False)))
                traced(x)
                forms[mode] = traced
        prepare[mode] = round(time.perf_counter() - t0 + (fold_s if mode != "eager" else 0.0), 2)
    return forms, prepare


def _measure(forms: dict[str, Callable[[torch.Tensor], Any]], shape: tuple[int, ...], threads: int, rounds: int,
             repeats: int) -> dict[str, list[float]]:
    """Milliseconds per forward of each mode, interleaved: every round runs each mode ``repeats`` times in turn."""
    x = torch.randn(1, *shape)
    times: dict[str, list[float]] = {mode: [] for mode in forms}
    with torch_threads(threads), torch.no_grad():
        for form in forms.values():
            form(x)
        for _ in range(rounds):
            for mode, form in forms.items():
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    form(x)
                    times[mode].append((time.perf_counter() - t0) * 1000.0)
    return times


def bench_preset(name: str, modes: list[str], threads_list: list[int], rounds: int, repeats: int) -> dict[str, Any]:
    preset = get_preset(name)
    args = {"head": HEADS[name]} if name in HEADS else {}
    space = resolve_space(preset.space, **args)
    shape = space.default_input
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = space.freeze(dict(preset.arch)).eval()
    row: dict[str, Any] = {"space": preset.space, "space_args": args, "input": list(shape)}
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory(prefix="deploy-latency-") as scratch:
        for threads in threads_list:
            forms, prepare = _forms(net, shape, modes, threads, Path(scratch))
            with torch.no_grad():
                expected = net(x)
                diffs = {mode: max_difference(expected, flat_outputs(form(x)))[0] for mode, form in forms.items()}
            times = _measure(forms, shape, threads, rounds, repeats)
            eager = spread(times["eager"])["median"] if "eager" in times else None
            stats = {mode: {"ms": spread(t), **({"ratio_to_eager": round(spread(t)["median"] / eager, 3)}
                                                if eager else {}),
                            "prepare_s": prepare[mode], "max_abs_diff": diffs[mode]} for mode, t in times.items()}
            fastest = min(stats, key=lambda m: stats[m]["ms"]["median"])
            row[f"threads{threads}"] = {"modes": stats, "fastest": fastest}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_out_argument(parser, "deploy_latency")
    parser.add_argument("--presets", nargs="+", default=None, help="default: every preset")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    names = args.presets or [p.name for p in list_presets()]
    result = {"torch": torch.__version__, "batch": 1, "rounds": args.rounds, "repeats": args.repeats,
              "modes": args.modes, "note": "interleaved per preset and thread count; the machine was shared (2 cores, "
              "other jobs running): compare ratios, not milliseconds",
              "presets": {}}
    for name in names:
        result["presets"][name] = bench_preset(name, args.modes, args.threads, args.rounds, args.repeats)
        print(name, {k: v["modes"] for k, v in result["presets"][name].items() if k.startswith("threads")},
              file=sys.stderr, flush=True)
    emit(result, args)


if __name__ == "__main__":
    main()
