"""The Optuna storage of a tune config, safe when several workers open it at once, and the trials of dead workers.

* RDB (any SQLAlchemy URL): SQLite is created under a file lock next to the database file (``<file>.lock``);
  every RDB retries the schema-creation race of a fresh database (PostgreSQL's ``UniqueViolation`` on
  ``pg_type``, SQLite's ``alembic_version``), so N workers can start on an empty database together.
  ``heartbeat_interval`` turns on Optuna's heartbeat: a RUNNING trial without beats for ``grace_period``
  becomes FAIL, whichever machine its worker ran on.
* Journal (``journal: file``): Optuna's JournalStorage on a JournalFileBackend (no database server).
* On every storage, a worker marks each trial it runs with its host, boot and process (start time included,
  so a reused PID does not count as alive); before each trial a worker fails the RUNNING trials of dead
  processes of its own machine (``fail_reason`` user attribute). ``max_retry`` > 0 runs such a trial again
  with the same parameters (Optuna's RetryHeartbeatStaleTrialCallback, formerly RetryFailedTrialCallback).
"""
from __future__ import annotations

import contextlib
import copy
import os
import random
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from hrnas_automl.tuning.config import StorageConfig

__all__ = ["WORKER_ATTR", "FAIL_REASON", "storage_file", "open_storage", "creation_guard", "worker_identity",
           "mark_worker", "fail_dead_trials"]

WORKER_ATTR = "hrnas_automl:worker"  # system attribute: {host, boot, pid, start} of the process running the trial
FAIL_REASON = "fail_reason"  # user attribute of a trial that failed: why (diverged, non-finite, worker died)
_CREATE_ATTEMPTS = 8


def _retry_callback(max_retry: int) -> Callable[[optuna.Study, FrozenTrial], None] | None:
    """Optuna's retry of a failed trial (a WAITING copy with the same parameters), without the copy inheriting the
    failure's ``fail_reason`` and steps."""
    if max_retry <= 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def run(study: optuna.Study, trial: FrozenTrial) -> None:
        trial = copy.deepcopy(trial)  # the storage's cache may hold this very object
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in (FAIL_REASON, "steps")}
        retry(study, trial)

    return run


def _is_creation_race(exc: Exception) -> bool:
    """A unique-key or "already exists" error: another worker created the same table, type or row first."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    return isinstance(exc, (IntegrityError, ProgrammingError))


def storage_file(config: StorageConfig) -> Path | None:
    """The file a storage lives in (a journal, an SQLite database), None for a server (or SQLite in memory)."""
    if config.journal is not None:
        return Path(config.journal)
    if config.url is not None and config.url.startswith("sqlite:///") and config.url != "sqlite:///:memory:":
        return Path(config.url.removeprefix("sqlite:///").partition("?")[0])
    return None


def creation_guard(config: StorageConfig) -> Callable[[Callable[[], Any]], Any]:
    """Run a creation step (storage, study) once at a time: under ``<sqlite file>.lock`` for SQLite, and retried
    with a random back-off while it loses the schema-creation race of another worker (every RDB).

    Raises:
        ValueError: the folder of the SQLite file does not exist.
    """
    database = storage_file(config) if config.url is not None else None
    lock_path = database.with_name(database.name + ".lock") if database is not None else None
    if lock_path is not None:
        if not lock_path.parent.is_dir():
            raise ValueError(f"cannot open Optuna storage {config.url!r}: folder {lock_path.parent.resolve()} does not "
                             "exist; create it or fix the path")

    def locked(step: Callable[[], Any]) -> Any:
        from filelock import FileLock

        with FileLock(str(lock_path)) if lock_path else contextlib.nullcontext():
            return step()

    def run(step: Callable[[], Any]) -> Any:
        for attempt in range(1, _CREATE_ATTEMPTS):
            try:
                return locked(step)
            except Exception as exc:
                if not _is_creation_race(exc):
                    raise
                time.sleep(random.uniform(0.05, 0.3) * attempt)
        return locked(step)  # the last attempt raises whatever it meets

    return run


def open_storage(config: StorageConfig) -> BaseStorage:
    """The storage ``config`` names, created (tables, journal file) if it does not exist yet.

    Raises:
        ValueError: the URL is malformed, its driver is missing, or the server refuses the connection.
    """
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    retry = _retry_callback(config.max_retry)
    if config.journal is not None:
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(config.journal))
    engine_kwargs = {"connect_args": {"timeout": 60}} if config.url.startswith("sqlite") else {}  # writers wait
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return creation_guard(config)(lambda: optuna.storages.RDBStorage(
                config.url, engine_kwargs=engine_kwargs, heartbeat_interval=config.heartbeat_interval,
                grace_period=config.grace_period, heartbeat_stale_trial_callback=retry))
    except ImportError as exc:
        raise ValueError(f"cannot open Optuna storage {config.url!r}: its database driver is missing ({exc}); "
                         "install it, e.g. for PostgreSQL pip install 'hrnas-automl[postgres]' with a URL "
                         "postgresql+psycopg://user@host/db") from None
    except ArgumentError as exc:
        raise ValueError(f"cannot open Optuna storage {config.url!r}: {str(exc).splitlines()[0]}; give a SQLAlchemy "
                         "URL such as sqlite:///optuna.db or postgresql://user@host/db") from None
    except SQLAlchemyError as exc:
        raise ValueError(f"cannot open Optuna storage {config.url!r}: {str(exc).splitlines()[0]}") from None


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, /proc), "" where /proc is absent, None when no
    such process exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except FileNotFoundError:
        return None
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return ""


def worker_identity() -> dict[str, Any]:
    """This process as a trial's :data:`WORKER_ATTR`: host name, boot id, PID and the PID's start time."""
    return {"host": socket.gethostname(), "boot": _boot_id(), "pid": os.getpid(),
            "start": _process_start(os.getpid())}


def mark_worker(storage: BaseStorage, trial_id: int) -> None:
    """Record this process as the worker of a trial (what :func:`fail_dead_trials` checks)."""
    storage.set_trial_system_attr(trial_id, WORKER_ATTR, worker_identity())


def _dead(worker: dict[str, Any], me: dict[str, Any]) -> bool:
    if worker.get("host") != me["host"]:
        return False  # another machine: only a heartbeat can tell
    if worker.get("boot") != me["boot"]:
        return True  # this machine rebooted since
    return _process_start(int(worker["pid"])) not in (worker.get("start"), "")


def fail_dead_trials(study: optuna.Study, max_retry: int = 0, unmarked_wait: float = 0.0) -> list[int]:
    """Fail the RUNNING trials of dead workers: those without a heartbeat for the grace period (an RDB with
    ``heartbeat_interval``, retried by the storage's callback), and those whose worker was a process of this
    machine that no longer runs (killed, crashed, rebooted; each gets a ``fail_reason`` and, with ``max_retry``,
    a retry). Returns the numbers of the latter.

    With ``unmarked_wait`` > 0 (a worker's first check), a RUNNING trial that still carries no worker mark after
    that many seconds is dead too: its worker died between creating it and marking it (a live one marks it
    within milliseconds, before anything is sampled)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # nothing unless the storage has a heartbeat
    me, storage = worker_identity(), study._storage
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    dead = {t._trial_id: f"its worker (PID {t.system_attrs[WORKER_ATTR]['pid']} on "
                         f"{t.system_attrs[WORKER_ATTR]['host']}) died while it ran"
            for t in running if t.system_attrs.get(WORKER_ATTR) and _dead(t.system_attrs[WORKER_ATTR], me)}
    unmarked = {t._trial_id for t in running if WORKER_ATTR not in t.system_attrs}
    if unmarked and unmarked_wait > 0:
        time.sleep(unmarked_wait)
        dead.update({t._trial_id: "its worker died before recording itself in it"
                     for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                     if t._trial_id in unmarked and WORKER_ATTR not in t.system_attrs})
    failed = []
    for trial_id, reason in dead.items():
        try:
            storage.set_trial_user_attr(trial_id, FAIL_REASON, reason)
            if storage.set_trial_state_values(trial_id, TrialState.FAIL):
                failed.append(trial_id)
        except UpdateFinishedTrialError:
            continue  # another worker got there first
    retry = _retry_callback(max_retry)
    for trial_id in failed:
        if retry is not None:
            retry(study, storage.get_trial(trial_id))
    return [storage.get_trial(trial_id).number for trial_id in failed]
