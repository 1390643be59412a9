"""The tool's own speed (issue 21): how long the CLI takes to list, describe and sample spaces, and what a trial
process costs to start, against a bare ``python -c "import nni, torch"``.

(a) Wall-clock of ``hrnas-automl spaces`` / ``describe`` / ``sample`` / ``export-space`` in fresh processes,
    the commands alternating (A B C ... A B C ...) for ``--rounds`` rounds; medians, and the median CPU time.
    ``sample --max-macs`` reads its cost table from the disk cache (a first, untimed run fills it); an empty
    ``python -c pass`` among them shows what the machine's load alone costs a process.
(b) CPU time (user + sys of the child, as ``/usr/bin/time`` reports it) of a trial process, ``hrnas-automl trial``
    on a tiny config (one epoch of 32 synthetic 32x32 images, no latency), and of a bare ``import nni, torch``,
    run pairwise (trial, bare, trial, bare, ...) ``--pairs`` times; the ratio of the medians and the median of the
    per-pair ratios. The trial's own training is part of its CPU, so the ratio bounds its start-up from above.
    A third process in each round, ``import nni, torch, torch._dynamo``, is the floor of any process that trains:
    torch 2.13's ``Optimizer.step`` imports ``torch._dynamo`` on its first call (``_use_grad_for_differentiable``).
(c) Cold cost-table compile time: each space's MACs/params table at its default input compiled from nothing (no
    shipped table, no cache) in a fresh process (``bench/cost_model.py``'s ``cold_compile_times``: wall and CPU
    seconds, the supernet built for the choices not counted), and the README's ``hrnas-automl cost lite-hrnet
    --arch preset:lite-hrnet-18`` with an empty cache, as a new user runs it (7 min 16 s before the tables were
    shipped).

The cost tables are kept in a temporary cache folder (``HRNAS_AUTOML_CACHE``), removed at the end with the
trial's config; the JSON is written only with ``--out``.

    .venv/bin/python bench/tool_speed.py [--rounds 5] [--pairs 10] [--out]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.common, run as a script too

from bench.common import add_out_argument, emit, interleaved, spread  # noqa: E402

CLI = str(Path(sys.executable).with_name("hrnas-automl"))  # the console script nnictl's trialCommand runs
COMMANDS = {name: [CLI, *argv] for name, argv in {
    "spaces": ["spaces"],
    "describe detnas-small": ["describe", "detnas-small"],
    "describe hrnas": ["describe", "hrnas"],
    "sample ranet": ["sample", "ranet", "--seed", "0", "--space-arg", "num_classes=4"],
    "sample hrnas": ["sample", "hrnas", "--seed", "0"],
    "export-space detnas-small": ["export-space", "detnas-small", "--space-arg", "num_classes=10"],
    "sample ranet --max-macs (table cached)": ["sample", "ranet", "--seed", "0", "--max-macs", "3e7"],
}.items()} | {"python -c pass (an empty process: the load's share)": [sys.executable, "-c", "pass"]}
TRIAL = {"space": "detnas-small", "task": "classification",
         "data": {"kind": "synthetic", "num_classes": 10, "image_size": 32, "train_size": 32, "val_size": 16,
                  "seed": 0},
         "train": {"epochs": 1, "batch_size": 32, "lr": 0.02, "seed": 0}, "threads": 1,
         "latency": {"enabled": False}, "arch": "preset:detnas-coco-fpn-300m"}
BARE = [sys.executable, "-c", "import nni, torch"]
FLOOR = [sys.executable, "-c", "import nni, torch, torch._dynamo"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the CLI commands (a)")
    parser.add_argument("--pairs", type=int, default=10, help="trial / bare-import pairs (b)")
    add_out_argument(parser, "tool_speed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tool_speed_") as scratch:
        env = {**os.environ, "HRNAS_AUTOML_CACHE": str(Path(scratch) / "cache")}
        result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
                  "load_average_1min_at_start": round(os.getloadavg()[0], 2),
                  "cli_wall_s": cli_times(env, args.rounds),
                  "trial_startup": trial_startup(Path(scratch), env, args.pairs),
                  "cold_tables": cold_tables(env)}
        result["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)  # the machine is shared: how busy it was
    emit(result, args)


def _run(argv: Sequence[str], env: dict[str, str]) -> float:
    """Run ``argv`` to the end (it must succeed); the user + sys CPU seconds it and its children took."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _phase(argv: Sequence[str], env: dict[str, str], cpu: list[float]) -> Callable[[int], None]:
    return lambda _round: cpu.append(_run(argv, env))


def cli_times(env: dict[str, str], rounds: int) -> dict[str, dict[str, float]]:
    """(a): wall-clock seconds of each command in :data:`COMMANDS`, interleaved; after one untimed run of each (it
    fills the disk cache of the cost table ``--max-macs`` reads)."""
    for argv in COMMANDS.values():
        _run(argv, env)
    cpu: dict[str, list[float]] = {name: [] for name in COMMANDS}
    wall = interleaved({name: _phase(argv, env, cpu[name]) for name, argv in COMMANDS.items()}, rounds)
    return {name: {**spread(wall[name]), "cpu_median": round(statistics.median(cpu[name]), 3)} for name in COMMANDS}


def trial_startup(work: Path, env: dict[str, str], pairs: int) -> dict[str, object]:
    """(b): CPU seconds of a tiny trial process, of a bare ``import nni, torch`` and of the training floor, in
    rounds (trial, bare, floor)."""
    config = work / "trial.yml"
    config.write_text(yaml.safe_dump(TRIAL, sort_keys=False))
    trial_argv = [CLI, "trial", "--config", str(config)]
    _run(trial_argv, env)  # untimed: the first run of a process reads files the later ones find in the page cache
    cpu: dict[str, list[float]] = {"trial": [], "bare": [], "floor": []}
    interleaved({"trial": _phase(trial_argv, env, cpu["trial"]), "bare": _phase(BARE, env, cpu["bare"]),
                 "floor": _phase(FLOOR, env, cpu["floor"])}, pairs)

    def ratio(of: str, to: str) -> dict[str, float]:
        return {"ratio_of_medians": round(statistics.median(cpu[of]) / statistics.median(cpu[to]), 3),
                "median_pair_ratio": round(statistics.median(a / b for a, b in zip(cpu[of], cpu[to])), 3)}

    return {"trial_cmd": "hrnas-automl trial --config <tiny trial.yml>", "trial_config": TRIAL,
            "bare_cmd": "python " + " ".join(BARE[1:]), "floor_cmd": "python " + " ".join(FLOOR[1:]), "pairs": pairs,
            "trial_cpu_s": spread(cpu["trial"]), "bare_cpu_s": spread(cpu["bare"]), "floor_cpu_s": spread(cpu["floor"]),
            "trial_vs_bare": ratio("trial", "bare"), "trial_vs_floor": ratio("trial", "floor"),
            "floor_vs_bare": ratio("floor", "bare")}


COLD_SPACES = ("detnas-small", "detnas-large", "ranet", "lite-hrnet", "hrnas")
FIRST_USE = [CLI, "cost", "lite-hrnet", "--arch", "preset:lite-hrnet-18"]


def cold_tables(env: dict[str, str]) -> dict[str, object]:
    """(c): (wall, CPU) seconds of each space's table compiled cold in a fresh process, and the wall seconds of the
    README's first ``cost`` command with an empty cache."""
    root = str(Path(__file__).resolve().parents[1])
    compiles = {}
    for space in COLD_SPACES:
        code = (f"import sys, json; sys.path.insert(0, {root!r}); from bench.cost_model import cold_compile_times; "
                f"print(json.dumps(cold_compile_times({space!r})))")
        out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
        wall, cpu = json.loads(out.stdout.strip().splitlines()[-1])
        compiles[space] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}
    first_use = interleaved({"cost": lambda _round: _run(FIRST_USE, env)}, 1)["cost"][0]
    return {"compile_default_input": compiles, "first_use_cmd": " ".join(["hrnas-automl", *FIRST_USE[1:]]),
            "first_use_wall_s": round(first_use, 2)}


if __name__ == "__main__":
    main()
