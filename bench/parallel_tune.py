"""Parallel `hrnas-automl tune` workers on one study, and a kill -9 + rerun against an uninterrupted run (issue 17).

    .venv/bin/python bench/parallel_tune.py --out               # writes bench/results/parallel_tune.json
    .venv/bin/python bench/parallel_tune.py --workers 8 --n-trials 40 --out /tmp/p.json

For each storage (SQLite, a journal file, PostgreSQL when its binaries are installed: a throwaway server), WORKERS
processes start at once on a fresh storage; the JSON gives the COMPLETE count against the target, the parameter
sets held twice, the workers that did not exit 0, the trials left RUNNING, and the wall time. Then one run of
24 trials, and one killed with SIGKILL in a trial after 10 COMPLETE and run again with the same command (same
seed; for NSGA-II, the default sampler, TPE and random): how many COMPLETE (parameters, values) are equal, and
whether the Pareto fronts are. The objective is network slimming of a small CNN (tests/tuning/workers.py:
CHEAP), one thread each.
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.tuning: the same helpers as the tests

from bench.common import add_out_argument, emit  # noqa: E402
from tests.tuning import postgres  # noqa: E402
from tests.tuning.workers import (complete_sets, front_sets, kill_after, run_workers, start_worker,  # noqa: E402
                                  stats, write_config)


def parallel(folder: Path, storage: Any, workers: int, n_trials: int) -> dict[str, Any]:
    """WORKERS processes on one fresh study: the figures of the issue's table."""
    config = write_config(folder, storage, n_trials=n_trials)
    codes, wall = run_workers(config, workers)
    result = stats(config)
    return {"target": n_trials, "complete": result["complete"], "over_target": result["complete"] - n_trials,
            "duplicate_parameter_sets": result["duplicates"], "failed_workers": sum(c != 0 for c in codes),
            "running_left": result["running"], "fail_trials": result["fail"], "wall_s": round(wall, 2)}


SAMPLERS = {"nsga2": {}, "tpe": {"sampler": "tpe", "sampler_args": {}},
            "random": {"sampler": "random", "sampler_args": {}}}  # nsga2: the default (population 4)


def resume(folder: Path, n_trials: int, kill_at: int, sampler: str) -> dict[str, Any]:
    """An uninterrupted run and a killed-then-rerun one, same config and seed, compared."""
    for name in ("full", "killed"):
        (folder / name).mkdir(parents=True)
    full, killed = (write_config(folder / name, n_trials=n_trials, **SAMPLERS[sampler]) for name in ("full", "killed"))
    uninterrupted = start_worker(full, folder / "full" / "worker.log")
    at_kill = kill_after(killed, kill_at)
    codes, _ = run_workers(killed, 1)
    if uninterrupted.wait() != 0 or codes != [0]:
        raise RuntimeError(f"a tune run failed; see the logs in {folder}")
    a, b = complete_sets(full), complete_sets(killed)
    after = stats(killed)
    return {"n_trials": n_trials, "killed_at": at_kill,
            "complete_after_rerun": after["complete"], "running_after_rerun": after["running"],
            "fail_after_rerun": after["fail"], "equal_parameter_sets": len(set(a) & set(b)), "of": len(a),
            "all_equal": a == b, "front_equal": front_sets(full) == front_sets(killed),
            "front_size": len(front_sets(full))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--n-trials", type=int, default=20)
    parser.add_argument("--samplers", nargs="+", choices=list(SAMPLERS), default=list(SAMPLERS),
                        help="samplers of the kill -9 + rerun comparison")
    add_out_argument(parser, "parallel_tune")
    args = parser.parse_args()
    out: dict[str, Any] = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                           "python": platform.python_version(), "workers": args.workers, "storages": {}}
    with tempfile.TemporaryDirectory(prefix="parallel-tune-") as tmp:
        root = Path(tmp)
        for kind, storage in (("sqlite", None), ("journal", {"journal": "study.log"})):
            (root / kind).mkdir()
            out["storages"][kind] = parallel(root / kind, storage, args.workers, args.n_trials)
            print(kind, out["storages"][kind], flush=True)
        reason = postgres.missing()
        if reason:
            out["storages"]["postgresql"] = {"skipped": reason}
        else:
            start = time.monotonic()
            with postgres.postgres_server() as server:
                started = round(time.monotonic() - start, 2)
                (root / "postgresql").mkdir()
                url = postgres.new_database(server, "bench")
                out["storages"]["postgresql"] = {**parallel(root / "postgresql", url, args.workers, args.n_trials),
                                                 "server": "PostgreSQL " + str(postgres.bin_dir()).split("/")[-2],
                                                 "server_start_s": started}
        print("postgresql", out["storages"]["postgresql"], flush=True)
        out["resume"] = {}
        for sampler in args.samplers:
            out["resume"][sampler] = resume(root / "resume" / sampler, 24, 10, sampler)
            print("resume", sampler, out["resume"][sampler], flush=True)
    emit(out, args)


if __name__ == "__main__":
    main()
