"""Resume of `hrnas-automl prune` (issue 17): an uninterrupted run against one killed with SIGKILL after its 3rd of
5 prune steps and re-run with the same command; every weight tensor, the arch and the metrics must be equal.

    .venv/bin/python bench/prune_resume.py --out      # writes bench/results/prune_resume.json

Real processes (``python -m hrnas_automl.cli prune``), the tiny HR-NAS on 16 generated 32x32 images, one thread;
the kill comes as soon as the checkpoint in the output folder holds 3 steps (polled every 20 ms).
"""
from __future__ import annotations

import argparse
import json
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.common, run as a script too

from bench.common import add_out_argument, emit  # noqa: E402
from hrnas_automl.trial.prune import CHECKPOINT  # noqa: E402

CONFIG = {"space": "hrnas", "space_args": {"setting": "tiny", "transformer": False}, "task": "segmentation",
          "data": {"kind": "shapes", "image_size": 32, "train_size": 16, "val_size": 8},
          "train": {"epochs": 5, "batch_size": 8, "seed": 1}, "threads": 1, "latency": {"enabled": False},
          "prune": {"lam": 3.0, "warmup": 1, "max_macs": "1.5e6"}}  # 5 prune steps, budget-driven
TIMINGS = ("trial_s", "latency_ms")  # measured, never equal between runs


def _start(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "hrnas_automl.cli", "prune", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(run: subprocess.Popen[str]) -> None:
    _, err = run.communicate()
    if run.returncode != 0:
        raise SystemExit(f"prune failed ({run.returncode}): {err.strip().splitlines()[-1:]}")


def _steps(checkpoint: Path) -> int:
    return len(torch.load(checkpoint, weights_only=True)["steps"]) if checkpoint.exists() else 0


def _run(folder: Path, kill_after: int | None) -> dict[str, Any]:
    """One prune (killed after ``kill_after`` steps and re-run, when given) into ``folder``; its wall times."""
    config = folder.with_suffix(".yml")
    config.write_text(yaml.safe_dump({**CONFIG, "output_dir": str(folder)}))
    t0 = time.perf_counter()
    run = _start(config)
    if kill_after is None:
        _finish(run)
        return {"wall_s": time.perf_counter() - t0}
    while run.poll() is None and _steps(folder / CHECKPOINT) < kill_after:
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    run.communicate()
    killed_s, done = time.perf_counter() - t0, _steps(folder / CHECKPOINT)
    left = sorted(p.name for p in folder.iterdir())
    t1 = time.perf_counter()
    _finish(_start(config))
    return {"steps_before_kill": done, "exit_of_killed": run.returncode, "killed_run_wall_s": killed_s,
            "resumed_run_wall_s": time.perf_counter() - t1, "files_after_kill": left}


def _outputs(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    record = json.loads((folder / "result.json").read_text())
    for key in TIMINGS:
        record["metrics"].pop(key, None)
    return record, torch.load(folder / "weights.pt", weights_only=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kill-after", type=int, default=3, help="prune steps done before the SIGKILL")
    add_out_argument(parser, "prune_resume")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="prune-resume-") as tmp:
        plain, resumed = Path(tmp) / "uninterrupted", Path(tmp) / "resumed"
        plain_times = _run(plain, None)
        resumed_times = _run(resumed, args.kill_after)
        (ra, wa), (rb, wb) = _outputs(plain), _outputs(resumed)
    equal_tensors = sum(wa[k].dtype == wb[k].dtype and torch.equal(wa[k], wb[k]) for k in wa if k in wb)
    report = {
        "config": CONFIG, "prune_steps": len(ra["steps"]), "kill_after_steps": args.kill_after,
        "steps_before_kill": resumed_times["steps_before_kill"], "killed_exit_status": resumed_times["exit_of_killed"],
        "files_after_kill": resumed_times["files_after_kill"],
        "equal": {"metrics": ra["metrics"] == rb["metrics"], "arch": ra["arch"] == rb["arch"],
                  "steps": ra["steps"] == rb["steps"], "supernet_macs": ra["supernet_macs"] == rb["supernet_macs"],
                  "weight_tensors": f"{equal_tensors} of {len(wa)} (resumed has {len(wb)})"},
        "all_equal": ra == rb and wa.keys() == wb.keys() and equal_tensors == len(wa),
        "metrics": ra["metrics"], "macs": ra["metrics"]["macs"],
        "wall_s": {"uninterrupted": round(plain_times["wall_s"], 2),
                   "killed_run": round(resumed_times["killed_run_wall_s"], 2),
                   "resumed_run": round(resumed_times["resumed_run_wall_s"], 2)},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor()
                    or platform.machine()},
    }
    emit(report, args)
    if not report["all_equal"]:
        raise SystemExit("the resumed run differs from the uninterrupted one")


if __name__ == "__main__":
    main()
