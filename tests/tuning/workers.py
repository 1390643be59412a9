"""Real `hrnas-automl tune` processes on one study, for the tests and bench/parallel_tune.py: N workers at once,
and a run killed with SIGKILL then re-run. The objective is the cheapest real one (network slimming of a small
CNN, :data:`CHEAP`)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from hrnas_automl.tuning.config import load_tune_config
from hrnas_automl.tuning.storage import creation_guard
from hrnas_automl.tuning.study import front_trials, load_study

__all__ = ["write_config", "start_worker", "run_workers", "stats", "complete_sets", "front_sets", "kill_after",
           "TIMEOUT"]

TIMEOUT = 240  # seconds a worker may take before the test gives up on it
CHEAP = {"train": {"epochs": 4, "seed": 0, "lr": 0.2, "batch_size": 16}, "train_size": 192, "val_size": 64,
         "widths": [8, 16]}  # ~0.15 s per trial on one thread, metrics 0.25..0.75: a front of several trials
_CLI = [sys.executable, "-c", "import sys; from hrnas_automl.cli import main; sys.exit(main())"]


def write_config(folder: Path, storage: Any = None, **overrides: Any) -> Path:
    """A tune YAML in ``folder`` (NSGA-II, the default sampler; population 4); returns its path."""
    data = {"study_name": "workers", "n_trials": 20, "seed": 0, "sampler_args": {"population_size": 4},
            "ranges": {"lam": {"low": 1e-3, "high": 2e-1, "log": True},
                       "threshold": {"low": 1e-3, "high": 5e-2, "log": True}, "warmup": {"low": 0, "high": 2}},
            "objective": "network-slimming", "objective_args": CHEAP,
            **({"storage": storage} if storage else {}), **overrides}
    path = folder / "tune.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def start_worker(config: Path, log: Path) -> subprocess.Popen:
    """One `hrnas-automl tune --config` process (one torch thread), its output in ``log``; Ctrl-C (SIGINT) reaches
    it as KeyboardInterrupt even when the tests run where SIGINT is ignored (a background job: Python keeps an
    ignored SIGINT ignored)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        return subprocess.Popen([*_CLI, "tune", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=config.parent,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def run_workers(config: Path, workers: int) -> tuple[list[int], float]:
    """Start ``workers`` processes at once on one study and wait for all: their exit codes and the wall time."""
    start = time.monotonic()
    procs = [start_worker(config, config.parent / f"worker{i}.log") for i in range(workers)]
    codes = [p.wait(timeout=TIMEOUT) for p in procs]
    return codes, time.monotonic() - start


def _study(config: Path) -> optuna.Study:
    return load_study(load_tune_config(config))


def stats(config: Path) -> dict[str, int]:
    """Trials per state and the number of trials whose parameter set another trial already has."""
    trials = _study(config).get_trials(deepcopy=False)
    params = [tuple(sorted(t.params.items())) for t in trials if t.state != TrialState.FAIL]
    counts = Counter(t.state.name for t in trials)
    return {"complete": counts["COMPLETE"], "running": counts["RUNNING"], "fail": counts["FAIL"],
            "waiting": counts["WAITING"], "pruned": counts["PRUNED"], "duplicates": len(params) - len(set(params))}


def complete_sets(config: Path) -> list[tuple]:
    """The COMPLETE trials' (parameters, values), sorted (trial numbers differ after a resume)."""
    return sorted((tuple(sorted(t.params.items())), tuple(t.values))
                  for t in _study(config).get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def front_sets(config: Path) -> list[tuple]:
    """The Pareto front as sorted (parameters, values)."""
    return sorted((tuple(sorted(t.params.items())), tuple(t.values)) for t in front_trials(_study(config)))


def kill_after(config: Path, complete: int) -> dict[str, int]:
    """Run one worker (on an RDB study named ``workers``) and SIGKILL it while a trial is RUNNING once
    ``complete`` trials are COMPLETE (stopped with SIGSTOP first, so the state it dies in is the state checked);
    returns the study's :func:`stats` after it."""
    from optuna.exceptions import StorageInternalError

    storage_config = load_tune_config(config).storage
    log = config.parent / "killed.log"
    proc = start_worker(config, log)
    # opened once, as a worker opens it (polling must not compete with the worker for the CPU or race it to create
    # the tables); a read gives up at once instead of waiting on the stopped worker
    storage = creation_guard(storage_config)(lambda: optuna.storages.RDBStorage(
        storage_config.url, engine_kwargs={"connect_args": {"timeout": 0.2}}))

    def count(state: TrialState) -> int:
        try:
            study_id = storage.get_study_id_from_name("workers")
            return len(storage.get_all_trials(study_id, deepcopy=False, states=(state,)))
        except (KeyError, StorageInternalError):  # no study yet, or the worker is writing (a locked SQLite file)
            return 0

    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"the worker ended (exit {proc.returncode}) before it could be killed: "
                                     f"{log.read_text()[-2000:]}")
            if count(TrialState.COMPLETE) >= complete:
                os.kill(proc.pid, signal.SIGSTOP)
                if count(TrialState.RUNNING):
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)
                    return stats(config)
                os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.01)
        raise AssertionError(f"no RUNNING trial after {complete} COMPLETE within {TIMEOUT} s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
