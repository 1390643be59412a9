"""Several workers on one study, dead workers, resume after kill -9, failed trials (issue 17): in-process checks of
each rule, then real `hrnas-automl tune` processes on SQLite, a journal file and PostgreSQL (slow)."""
from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from hrnas_automl.tasks.training import DivergedError
from hrnas_automl.tuning.config import StorageConfig, TuneConfig, parse_tune_config
from hrnas_automl.tuning.objectives import TuneParams, TuneResult
from hrnas_automl.tuning.sampling import SEED_KEY_ATTR
from hrnas_automl.tuning.storage import FAIL_REASON, WORKER_ATTR, fail_dead_trials, open_storage, worker_identity
from hrnas_automl.tuning.study import FAILS_IN_A_ROW, load_study, open_study, run_study, suggest_params
from tests.tuning.workers import (complete_sets, front_sets, kill_after, run_workers, start_worker, stats,
                                  write_config)

optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials log a warning with a traceback each


def config(tmp_path: Path, **overrides: Any) -> TuneConfig:
    data = {"study_name": "s", "n_trials": 6, "objective": "network-slimming", "sampler_args": {"population_size": 2},
            "ranges": {"lam": {"low": 1e-4, "high": 1.0, "log": True}}, **overrides}
    return parse_tune_config(data, "test", tmp_path)


def stand_in(params: TuneParams, report: Any) -> TuneResult:
    """Test stand-in (not a model): the metric peaks at lam = 1e-2."""
    return TuneResult(4 - abs(math.log10(params["lam"]) + 2), 100.0 * (1 - params["lam"]))


def dead_worker() -> dict[str, Any]:
    """The worker identity of a process of this machine that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return {**worker_identity(), "pid": proc.pid, "start": "0"}


def test_diverged_and_non_finite_trials_fail_and_the_worker_goes_on(tmp_path: Path) -> None:
    def unstable(params: TuneParams, report: Any) -> TuneResult:
        if params["lam"] > 0.1:
            raise DivergedError("the training loss is nan at epoch 1, step 3")
        if params["lam"] > 0.01:
            return TuneResult(float("nan"), 100.0)
        return stand_in(params, report)

    study = run_study(config(tmp_path, n_trials=6, sampler="random", sampler_args={}, objectives="metric"), unstable)
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 6  # failures do not count, the worker went on
    reasons = {t.user_attrs[FAIL_REASON].split(":")[0] for t in failed}
    assert reasons == {"DivergedError", "NonFiniteResultError"}  # both kinds were drawn, each is a FAIL
    assert all(t.values is None and t.params["lam"] > 0.01 for t in failed)
    assert all(t.params["lam"] <= 0.01 for t in study.get_trials(states=(TrialState.COMPLETE,)))


def test_a_worker_whose_trials_all_fail_stops_with_one_line(tmp_path: Path) -> None:
    def diverges(params: TuneParams, report: Any) -> TuneResult:
        raise DivergedError("the training loss is inf at epoch 0, step 0")

    with pytest.raises(RuntimeError, match=rf"^{FAILS_IN_A_ROW} trials in a row failed \(the last: DivergedError: the "
                                           r"training loss is inf at epoch 0, step 0\); fix the objective's settings "
                                           r"or the ranges$"):
        run_study(config(tmp_path), diverges)
    trials = load_study(config(tmp_path)).trials
    assert len(trials) == FAILS_IN_A_ROW and len({tuple(t.params.items()) for t in trials}) == FAILS_IN_A_ROW


def test_other_exceptions_still_stop_the_worker(tmp_path: Path) -> None:
    def broken(params: TuneParams, report: Any) -> TuneResult:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        run_study(config(tmp_path), broken)
    assert [t.state for t in load_study(config(tmp_path)).trials] == [TrialState.FAIL]


def test_dead_workers_trials_fail_and_are_retried_once(tmp_path: Path) -> None:
    cfg = config(tmp_path, storage={"url": f"sqlite:///{tmp_path / 'r.db'}", "max_retry": 1})
    study = open_study(cfg)
    workers = {"dead": dead_worker(), "alive": worker_identity(), "elsewhere": {**dead_worker(), "host": "other"}}
    trials = {}
    for name, worker in workers.items():
        trials[name] = study.ask()
        suggest_params(trials[name], cfg.ranges)
        study._storage.set_trial_system_attr(trials[name]._trial_id, WORKER_ATTR, worker)
    assert fail_dead_trials(study, max_retry=1) == [trials["dead"].number]
    by_number = {t.number: t for t in study.trials}
    dead = by_number[trials["dead"].number]
    assert dead.state == TrialState.FAIL and "died while it ran" in dead.user_attrs[FAIL_REASON]
    assert by_number[trials["alive"].number].state == by_number[trials["elsewhere"].number].state == \
        TrialState.RUNNING  # alive, or on another machine: only a heartbeat can tell
    retry = study.trials[-1]
    assert retry.state == TrialState.WAITING and retry.params == dead.params and FAIL_REASON not in retry.user_attrs
    assert fail_dead_trials(study, max_retry=1) == []  # failed once only


def test_running_trials_count_toward_the_target_until_their_worker_dies(tmp_path: Path) -> None:
    cfg = config(tmp_path, n_trials=3, sampler="tpe", sampler_args={"n_startup_trials": 2}, objectives="metric")
    study = run_study(cfg.model_copy(update={"n_trials": 2}), stand_in)
    running = study.ask()  # this process: alive
    suggest_params(running, cfg.ranges)
    assert len(run_study(cfg, stand_in).trials) == 3  # 2 finished + 1 running reach the target: nothing starts
    study._storage.set_trial_system_attr(running._trial_id, WORKER_ATTR, dead_worker())
    trials = run_study(cfg, stand_in).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[3].params == trials[2].params  # the replacement has the dead trial's seed key: same draw
    assert [t.system_attrs[SEED_KEY_ATTR] for t in trials] == [0, 1, 2, 2]


def test_a_trial_its_worker_never_marked_fails_when_the_next_worker_starts(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed between creating a trial and recording itself in it (milliseconds), a worker leaves an unmarked
    RUNNING trial: a starting worker fails it once it stays unmarked for UNMARKED_WAIT seconds."""
    monkeypatch.setattr("hrnas_automl.tuning.study.UNMARKED_WAIT", 0.2)
    cfg = config(tmp_path, n_trials=2, sampler="random", sampler_args={})
    study = run_study(cfg.model_copy(update={"n_trials": 1}), stand_in)
    study._storage.create_new_trial(study._study_id)  # RUNNING, no worker mark
    trials = run_study(cfg, stand_in).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs[FAIL_REASON] == "its worker died before recording itself in it"


def test_concurrent_trials_get_distinct_seed_keys_even_when_one_before_them_fails(tmp_path: Path) -> None:
    study = open_study(config(tmp_path, sampler="random", sampler_args={}))
    first, second = study.ask(), study.ask()
    study.tell(first, state=TrialState.FAIL)  # the third trial counts 1 trial before it, as the second did
    third = study.ask()
    keys = [study._storage.get_trial_system_attrs(t._trial_id)[SEED_KEY_ATTR] for t in (first, second, third)]
    assert keys == [0, 1, "fallback"]
    assert study._storage.get_trial(second._trial_id).system_attrs[SEED_KEY_ATTR] in (1, "fallback")
    params = [suggest_params(t, config(tmp_path).ranges) for t in (second, third)]
    assert params[0] != params[1]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_heartbeat_fails_a_silent_trial_and_retries_it(tmp_path: Path) -> None:
    cfg = config(tmp_path, n_trials=1, sampler="random", sampler_args={}, objectives="metric",
                 storage={"url": f"sqlite:///{tmp_path / 'h.db'}", "heartbeat_interval": 1, "grace_period": 1,
                          "max_retry": 1})
    study = open_study(cfg)
    silent = study.ask()  # on another machine, no heartbeat since: only the heartbeat can find it dead
    params = suggest_params(silent, cfg.ranges)
    study._storage.set_trial_system_attr(silent._trial_id, WORKER_ATTR, {**worker_identity(), "host": "other"})
    study._storage.record_heartbeat(silent._trial_id)
    time.sleep(2.2)
    trials = run_study(cfg, stand_in).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].params == params and trials[1].system_attrs["failed_trial"] == 0  # Optuna's retry


def test_storage_mapping_and_journal(tmp_path: Path) -> None:
    assert config(tmp_path, storage="sqlite:///a.db").storage == StorageConfig(url="sqlite:///a.db")
    cfg = config(tmp_path, n_trials=3, storage={"journal": "study.log"})
    assert cfg.storage.journal == str((tmp_path / "study.log").resolve())  # next to the config, as the default
    assert isinstance(open_storage(cfg.storage), optuna.storages.JournalStorage)
    run_study(cfg, stand_in)
    assert [t.state for t in load_study(cfg).trials] == [TrialState.COMPLETE] * 3


def test_unreachable_server_is_one_line_without_a_url_hint(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(ValueError, match=r"^cannot open Optuna storage 'postgresql\+psycopg://u@127.0.0.1:1/d': "
                                         r"\(psycopg.OperationalError\) connection failed[^\n]*$") as info:
        open_storage(StorageConfig(url="postgresql+psycopg://u@127.0.0.1:1/d"))
    assert "SQLAlchemy URL such as" not in str(info.value)


WORKERS = 4
N_TRIALS = 20


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgres"])
def test_four_workers_share_one_study(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """4 `hrnas-automl tune` processes started at once on a fresh storage: the study ends with the target's COMPLETE
    trials (up to WORKERS - 1 more when workers check at the same instant), no repeated parameter set, every
    worker exits 0, nothing left RUNNING."""
    storage = {"sqlite": None, "journal": {"journal": "study.log"}}.get(kind) or request.getfixturevalue("postgres_url")
    cfg = write_config(tmp_path, storage, n_trials=N_TRIALS)
    codes, _ = run_workers(cfg, WORKERS)
    logs = "\n".join(p.read_text()[-2000:] for p in sorted(tmp_path.glob("worker*.log")))
    assert codes == [0] * WORKERS, logs
    result = stats(cfg)
    assert N_TRIALS <= result["complete"] <= N_TRIALS + WORKERS - 1, result
    assert (result["running"], result["duplicates"], result["fail"]) == (0, 0, 0), result


@pytest.mark.slow
def test_kill_9_and_rerun_ends_as_the_uninterrupted_run(tmp_path: Path) -> None:
    """The default sampler (NSGA-II): one run of 24 trials, and one killed with SIGKILL in a trial after 10 of 24
    and run again with the same command, hold the same COMPLETE parameter sets and values and the same front."""
    for name in ("full", "killed"):
        (tmp_path / name).mkdir()
    full, killed = (write_config(tmp_path / name, n_trials=24) for name in ("full", "killed"))
    uninterrupted = start_worker(full, tmp_path / "full" / "worker.log")  # alongside, on the other core
    at_kill = kill_after(killed, 10)
    assert at_kill["complete"] in (10, 11) and at_kill["running"] == 1  # one more may end before the poll sees 10
    codes, _ = run_workers(killed, 1)
    assert codes == [0] and uninterrupted.wait(timeout=240) == 0
    after = stats(killed)
    assert (after["complete"], after["running"], after["fail"]) == (24, 0, 1)  # the killed trial: FAIL, replaced
    assert complete_sets(killed) == complete_sets(full)
    assert front_sets(killed) == front_sets(full) and len(front_sets(full)) > 1


@pytest.mark.slow
def test_ctrl_c_is_one_line_and_the_rerun_continues(tmp_path: Path) -> None:
    """SIGINT mid-study: exit 130 with the one "interrupted" line (no Optuna traceback of the KeyboardInterrupt);
    a rerun on the same study continues it and leaves no trial RUNNING."""
    path = write_config(tmp_path, n_trials=200)
    worker = start_worker(path, tmp_path / "worker.log")
    while worker.poll() is None and "trial 2 complete" not in (tmp_path / "worker.log").read_text():
        time.sleep(0.05)
    worker.send_signal(signal.SIGINT)
    assert worker.wait(timeout=60) == 130
    log = (tmp_path / "worker.log").read_text()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log
    assert log.strip().splitlines()[-1].startswith("interrupted; finished trials are kept in")
    # Optuna fails the trial it runs on its way out; a signal that lands in its ask() or tell() leaves that one
    # RUNNING, until the next worker finds its process gone
    at_interrupt = stats(path)
    assert at_interrupt["running"] <= 1 and at_interrupt["complete"] >= 2
    write_config(tmp_path, n_trials=at_interrupt["complete"] + 2)  # the same study, two trials further
    assert run_workers(path, 1)[0] == [0]
    after = stats(path)
    assert (after["complete"], after["running"]) == (at_interrupt["complete"] + 2, 0)
    assert after["fail"] == at_interrupt["fail"] + at_interrupt["running"]
