"""MACs against measured CPU latency of the Lite-HRNet presets (Lite-HRNet issues #12, #57: fewer MACs, not faster).

Every preset is measured in the same run, interleaved over ``--rounds`` rounds, so the ratios are comparable on a
noisy machine; the absolute milliseconds are not. Prints the JSON; ``--out`` also writes it:

    .venv/bin/python bench/lite_hrnet_latency.py --out    # bench/results/lite_hrnet_latency.json
"""
from __future__ import annotations

import argparse
import sys
import statistics
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.common, run as a script too

from bench.common import add_out_argument, emit  # noqa: E402
from hrnas_automl.arch import freeze  # noqa: E402
from hrnas_automl.cost import count_cost  # noqa: E402
from hrnas_automl.cost.latency import measure_latency  # noqa: E402
from hrnas_automl.registry import get_preset, list_presets  # noqa: E402

INPUT = (3, 256, 192)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_out_argument(parser, "lite_hrnet_latency")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    names = [p.name for p in list_presets("lite-hrnet")]
    nets = {name: freeze("lite-hrnet", get_preset(name).arch).eval() for name in names}
    costs = {name: count_cost(net, INPUT) for name, net in nets.items()}
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name, net in nets.items():
            times[name].append(measure_latency(net, INPUT, warmup=1, repeats=3, threads=args.threads))
    base = "naive-lite-hrnet-18"
    rows = {}
    for name in names:
        ms = statistics.median(times[name])
        rows[name] = {"params": costs[name].params, "macs": costs[name].macs, "latency_ms": round(ms, 2),
                      "macs_ratio_to_naive18": round(costs[name].macs / costs[base].macs, 3),
                      "latency_ratio_to_naive18": round(ms / statistics.median(times[base]), 3)}
    result = {"input": list(INPUT), "threads": args.threads, "rounds": args.rounds, "torch": torch.__version__,
              "presets": rows}
    emit(result, args)


if __name__ == "__main__":
    main()
