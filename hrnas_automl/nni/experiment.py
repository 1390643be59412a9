"""Run an nnictl experiment, wait for it and read its trials back through NNI's Python API.

Results are joined on ``parameterId`` (not on the trial record's hyper-parameters, which NNI 3.0
mis-attributes when trialConcurrency > 1, shared/docs/NNI.md §3). A tuner that cannot start or dies is a clear
error, never a silent wait: its classArgs are checked by building it in-process before ``nnictl create``, and
``wait`` watches the dispatcher's log (NNI's manager keeps reporting RUNNING after its tuner died).
"""
from __future__ import annotations

import importlib
import inspect
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["TrialRecord", "NniExperiment", "free_port", "port_is_free", "nni_env", "nnictl_command", "check_tuner",
           "dispatcher_error"]

_FINISHED = ("DONE", "STOPPED")
_ERROR = ("ERROR",)
# the loggers through which NNI records the exception that ends its dispatcher: building the tuner (nni/__main__.py)
# and handling a command (nni/runtime/msg_dispatcher_base.py, whose worker then stops)
_FATAL = re.compile(r"^\[[^]]*\] (?:ERROR|CRITICAL) \((?:nni\.main|nni\.runtime\.msg_dispatcher_base)/")


@dataclass(frozen=True)
class TrialRecord:
    """One finished trial: its id, status, architecture and final metric dict (empty if it failed)."""

    trial_id: str
    status: str
    arch: dict[str, Any]
    metrics: dict[str, Any]
    intermediate: list[dict[str, Any]]


def port_is_free(port: int) -> bool:
    """True when nothing listens on ``port`` (nnictl refuses a busy port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def nnictl_command() -> str:
    """This environment's nnictl as a user types it: ``nnictl`` when that is the one on PATH, else its full path (a
    virtual environment that is not activated, as after ``make demo``)."""
    own = Path(sys.executable).parent / "nnictl"
    found = shutil.which("nnictl")
    return "nnictl" if found and Path(found).resolve() == own.resolve() else str(own)


def free_port() -> int:
    """A port the OS reports unused right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nni_env(home: str | os.PathLike[str] | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for nnictl: this interpreter's bin first on PATH (trials run ``hrnas-automl``), quiet
    warnings, and optionally another HOME (NNI keeps its experiment list in ``$HOME/nni-experiments``)."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("PYTHONWARNINGS", "ignore")
    if home is not None:
        env["HOME"] = str(home)
    return env


def _tuner_class(tuner: Mapping[str, Any], folder: Path) -> type:
    """The class an nnictl ``tuner:`` section names: a built-in ``name`` or a ``className`` (importable from its
    ``codeDirectory``, relative to the config's folder as nnictl takes it)."""
    if "name" in tuner:
        from nni.tools.package_utils.tuner_factory import get_builtin_module_class_name

        module, name = get_builtin_module_class_name("tuners", str(tuner["name"]).lower())
        if module is None:
            raise ValueError(f"tuner name {tuner['name']!r} is not a built-in NNI tuner (e.g. TPE, Random, Evolution)")
    else:
        module, _, name = str(tuner.get("className", "")).rpartition(".")
        if not module:
            raise ValueError(f"tuner className {tuner.get('className')!r} must be a module path and a class, "
                             "e.g. hrnas_automl.nni.StrategyTuner")
        if not tuner.get("codeDirectory"):  # nnictl fails on it with a bare AssertionError
            raise ValueError(f"tuner {tuner['className']} needs codeDirectory (the folder nnictl imports it from, "
                             "e.g. codeDirectory: .)")
    code = tuner.get("codeDirectory")
    path = str((folder / code).resolve()) if code else None
    if path is not None:
        sys.path.insert(0, path)
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import tuner {module}.{name}: {exc}") from None
    finally:
        if path is not None:
            sys.path.remove(path)


def check_tuner(config: str | os.PathLike[str]) -> None:
    """Build the tuner of an nnictl experiment YAML once in-process, so a wrong classArgs key or value is one line
    naming it (and the keys the tuner takes) before anything starts; under nnictl it would kill the dispatcher.

    Raises:
        ValueError: the tuner cannot be imported or rejects its classArgs.
    """
    from hrnas_automl.config import read_yaml_file

    experiment = read_yaml_file(config, "nnictl config")
    tuner = experiment.get("tuner") if isinstance(experiment, Mapping) else None
    if not isinstance(tuner, Mapping):
        return  # no tuner section (an advisor, or a config nnictl itself will reject)
    args = tuner.get("classArgs") or {}
    cls = _tuner_class(tuner, Path(config).parent)
    signature = inspect.signature(cls)
    try:
        signature.bind(**args)
    except TypeError as exc:
        takes = [p.name for p in signature.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        raise ValueError(f"{config}: tuner {cls.__name__} classArgs: {exc}; it takes {', '.join(takes)}") from None
    try:
        cls(**args)
    except (TypeError, ValueError, LookupError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise ValueError(f"{config}: tuner {cls.__name__} classArgs: {message}") from None


def dispatcher_error(log: Path) -> str | None:
    """The last line of the exception that ended NNI's dispatcher (the tuner process), read from its
    ``dispatcher.log``; None while no such exception is logged. A resumed experiment appends to the log: what the
    dispatchers before the last one to start logged is skipped."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return None
    starts = [i for i, line in enumerate(lines) if "Dispatcher started" in line]
    if starts:
        lines = lines[starts[-1]:]
    for i, line in enumerate(lines):
        if _FATAL.match(line):
            last = line.split(") ", 1)[-1]
            for later in lines[i + 1:]:  # its traceback ends with "Type: message", before the next record
                if later.startswith("["):
                    break
                if later.strip() and not later.startswith((" ", "Traceback", "During handling", "The above")):
                    last = later
            return last
    return None


class NniExperiment:
    """An nnictl experiment on a port: ``create`` it, ``wait`` for it, read ``trials()``, ``stop`` it (or use it
    as a context manager, which stops it however the block ends).

    Example:
        >>> with NniExperiment.create("examples/detnas/evolution.yml", port=8080) as exp:  # doctest: +SKIP
        ...     exp.wait(timeout=600); best = exp.best()
    """

    def __init__(self, experiment_id: str, port: int, env: Mapping[str, str]) -> None:
        self.id, self.port, self.env = experiment_id, port, dict(env)
        self._connection: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def create(cls, config: str | os.PathLike[str], *, port: int, env: Mapping[str, str] | None = None,
               timeout: float = 120, attempts: int = 3) -> NniExperiment:
        """``nnictl create --config CONFIG --port PORT``; returns once the manager is up.

        nnictl gives the manager it starts about 3 s to answer (``nni/experiment/launcher.py``
        ``_check_rest_server``), then kills it and fails; a busy machine can miss that, so such a failure is
        retried, up to ``attempts`` runs in all, once the port is free again.
        """
        if not Path(config).is_file():
            raise FileNotFoundError(f"nnictl config {config} does not exist")
        check_tuner(config)
        if not port_is_free(port):
            raise RuntimeError(f"port {port} is busy; pass another --port (nnictl needs a free one)")
        return cls._launch(["create", "--config", str(config)], port=port, env=env, timeout=timeout, attempts=attempts)

    @classmethod
    def start(cls, config: str | os.PathLike[str], *, env: Mapping[str, str] | None = None, attempts: int = 3,
              settle: float = 15) -> NniExperiment:
        """:meth:`create` on a free port, then watch it ``settle`` seconds: NNI's manager gives the tuner process a
        fixed 10 s to connect and fails the experiment otherwise (``Tuner did not connect in 10 seconds``, a tuner
        starting on a loaded machine); such an experiment ran no trial, so it is stopped and created afresh, up to
        ``attempts`` times in all."""
        for attempt in range(1, attempts + 1):
            exp = cls.create(config, port=free_port(), env=env)
            try:
                exp.wait(timeout=settle, poll=1)
            except TimeoutError:
                return exp  # still running, its tuner connected
            except RuntimeError as exc:
                exp.stop()
                if "did not connect" not in str(exc) or attempt == attempts:
                    raise
            else:
                return exp  # already done
        raise ValueError("attempts must be >= 1")

    @classmethod
    def resume(cls, experiment_id: str, *, port: int, env: Mapping[str, str] | None = None, timeout: float = 120,
               attempts: int = 3) -> NniExperiment:
        """``nnictl resume ID --port PORT`` of a stopped experiment (retried as :meth:`create` is)."""
        if not port_is_free(port):
            raise RuntimeError(f"port {port} is busy; pass another --port (nnictl needs a free one)")
        return cls._launch(["resume", experiment_id], port=port, env=env, timeout=timeout, attempts=attempts,
                           experiment_id=experiment_id)

    @classmethod
    def _launch(cls, argv: list[str], *, port: int, env: Mapping[str, str] | None, timeout: float, attempts: int,
                experiment_id: str | None = None) -> NniExperiment:
        env = dict(env) if env is not None else nni_env()
        nnictl = nnictl_command()
        attempt = 1
        while True:
            proc = subprocess.run([nnictl, *argv, "--port", str(port)], env=env, capture_output=True, text=True,
                                  timeout=timeout)
            output = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)  # nnictl colours its output
            match = re.search(r"Experiment ID: (\w+)", output)
            if proc.returncode == 0 and (match is not None or experiment_id is not None):
                return cls(experiment_id or match.group(1), port, env)  # type: ignore[union-attr]
            if attempt >= attempts or "/check-status" not in output:  # only a manager too slow to answer is retried
                tail = output.strip().splitlines()[-3:]
                raise RuntimeError(f"nnictl {argv[0]} failed (exit {proc.returncode}): {' | '.join(tail)}")
            attempt += 1
            deadline = time.monotonic() + 30
            while not port_is_free(port) and time.monotonic() < deadline:
                time.sleep(0.5)

    def _api(self) -> Any:
        if self._connection is None:
            import logging

            from nni.experiment import Experiment

            self._connection = Experiment.connect(self.port)
            logging.getLogger("nni").setLevel(logging.WARNING)  # NNI logs every REST call at INFO
        return self._connection

    def status(self) -> str:
        """The manager's status: RUNNING, TUNER_NO_MORE_TRIAL, NO_MORE_TRIAL, DONE, ERROR, ..."""
        return str(self._api().get_status())

    def wait(self, timeout: float, *, poll: float = 2.0,
             on_progress: Callable[[list[TrialRecord]], None] | None = None) -> list[TrialRecord]:
        """Block until the experiment is DONE; returns the trials.

        Raises:
            RuntimeError: the manager reports ERROR, the tuner died (the experiment is then stopped: the manager
                would wait for trials that are never proposed), or the manager stopped answering (``nnictl stop``
                from another shell); the message says how to go on.
            TimeoutError: still running after ``timeout`` seconds.
        """
        import requests

        try:
            return self._wait(timeout, poll, on_progress)
        except requests.ConnectionError:
            raise RuntimeError(f"the NNI manager of experiment {self.id} stopped answering (stopped with `nnictl "
                               f"stop`?); continue it with `{nnictl_command()} resume {self.id} --port {self.port}` "
                               "and follow it in the web UI") from None

    def _wait(self, timeout: float, poll: float,
              on_progress: Callable[[list[TrialRecord]], None] | None) -> list[TrialRecord]:
        deadline, seen = time.monotonic() + timeout, -1
        log = Path(self._api().get_experiment_profile()["logDir"]) / "log"
        while True:
            status = self.status()
            if status in _ERROR:
                raise RuntimeError(f"experiment {self.id} failed: {self._errors()}; see {log / 'nnimanager.log'}")
            died = dispatcher_error(log / "dispatcher.log")
            if died is not None:
                self.stop()
                raise RuntimeError(f"experiment {self.id} stopped: its tuner died with {died} "
                                   f"(see {log / 'dispatcher.log'})")
            trials = self.trials()
            if on_progress is not None and len(trials) != seen:
                seen = len(trials)
                on_progress(trials)
            if status in _FINISHED:
                return trials
            if time.monotonic() > deadline:
                raise TimeoutError(f"experiment {self.id} still {status} after {timeout:.0f}s; its trials so far "
                                   f"are in the web UI at {self.url}")
            time.sleep(poll)

    def _errors(self) -> str:
        import requests

        info = requests.get(f"{self.url}/api/v1/nni/check-status", timeout=10).json()
        return "; ".join(str(e) for e in info.get("errors", [])) or "no error message from the manager"

    def trials(self) -> list[TrialRecord]:
        """Finished trials (succeeded or failed) with their architecture and metrics, in the order they started."""
        api = self._api()
        params: dict[int, dict[str, Any]] = {}
        jobs = sorted(api.list_trial_jobs(), key=lambda job: getattr(job, "startTime", None) or 0)
        for job in jobs:
            for hp in job.hyperParameters or []:
                params[int(hp.parameter_id)] = dict(hp.parameters)
        metrics = api.get_job_metrics()  # decoded by NNI (the REST payload is JSON-encoded twice)
        records = []
        for job in jobs:
            if job.status in ("WAITING", "RUNNING", "UNKNOWN"):
                continue
            final: dict[str, Any] = {}
            inter: list[dict[str, Any]] = []
            arch: dict[str, Any] = {}
            # the REST API does not always return them in report order (a test run got steps 1, 0): sort by the
            # sequence number NNI gives each intermediate result
            for m in sorted(metrics.get(job.trialJobId, []), key=lambda m: m.sequence):
                value = m.data if isinstance(m.data, dict) else {"default": m.data}
                if m.type == "FINAL":
                    final, arch = value, params.get(int(m.parameterId), {})
                elif m.type == "PERIODICAL":
                    inter.append(value)
            if not arch and job.hyperParameters:  # failed before reporting: only the record knows its arch
                arch = dict(job.hyperParameters[0].parameters)
            records.append(TrialRecord(job.trialJobId, job.status, arch, final, inter))
        return records

    def best(self, mode: str = "maximize") -> TrialRecord | None:
        """The succeeded trial with the best ``default`` metric."""
        done = [t for t in self.trials() if t.status == "SUCCEEDED" and "default" in t.metrics]
        if not done:
            return None
        key = (lambda t: t.metrics["default"]) if mode == "maximize" else (lambda t: -t.metrics["default"])
        return max(done, key=key)

    def __enter__(self) -> NniExperiment:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        """``nnictl stop ID`` (idempotent)."""
        nnictl = nnictl_command()
        subprocess.run([nnictl, "stop", self.id], env=self.env, capture_output=True, text=True, timeout=120)
