"""The NNI tuners that run registered hrnas-automl strategies under nnictl (``tuner: {className: ...}``): one
(:class:`StrategyTuner`), or several side by side in one experiment (:class:`MultiStrategyTuner`, which also hosts
the Optuna tuner and NNI's own tuners).

Example (nnictl YAML)::

    tuner:
      className: hrnas_automl.nni.StrategyTuner
      codeDirectory: .
      classArgs: {strategy: evolution, space: detnas-small, seed: 0, max_macs: 6.0e+6, input_shape: [3, 32, 32],
                  space_args: {num_classes: 10}, population_size: 8, select_num: 3}

The tuner only adapts NNI's callbacks to the strategy's ask/tell; the search itself lives in
:mod:`hrnas_automl.strategies`. A generation-synchronous strategy may have nothing to propose while
results are pending: the tuner then defers the request and sends the trial later, as NNI's own
Evolution tuner does (``NoMoreTrialError`` + the dispatcher's ``st_callback``).

``nnictl stop`` + ``nnictl resume`` continue the same search: the tuner saves the strategy's state
(:meth:`~hrnas_automl.strategies.Strategy.state_dict`, RNG included) and the trials it handed out in NNI's
checkpoint folder after every proposal and result, and a resumed tuner starts from there (see
:mod:`hrnas_automl.nni.resume`). With ``trialConcurrency: 1`` the proposals after the resume are those of an
uninterrupted run with the same seed; with more, both runs depend on the order in which trials finish.
"""
from __future__ import annotations

import inspect
import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any

import nni
from nni.tuner import Tuner

from hrnas_automl.arch import Space, resolve_space
from hrnas_automl.config import parse_number
from hrnas_automl.cost.backends import check_backend
from hrnas_automl.files import write_json_atomic
from hrnas_automl.nni.compat import STRATEGY_KEY, quiet_nni, to_nni_search_space
from hrnas_automl.nni.resume import Orphans, params_key, state_file
from hrnas_automl.registry import STRATEGIES
from hrnas_automl.strategies import SpaceExhaustedError, Strategy

__all__ = ["StrategyTuner", "MultiStrategyTuner"]

_log = logging.getLogger(__name__)


def _check_strategy_options(name: str, strategy_class: type[Strategy], options: Mapping[str, Any]) -> None:
    """Refuse a classArg that is neither the tuner's nor an option of the strategy, naming both lists: under
    nnictl the strategy is built at the first trial request, where a typo would kill the dispatcher."""
    params = inspect.signature(strategy_class).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    own = [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _GIVEN_BY_TUNER]
    unknown = [key for key in options if key not in own]
    if unknown:
        tuner = [p for p in inspect.signature(StrategyTuner).parameters if p != "strategy_args"]
        raise ValueError(f"unknown classArgs key {unknown[0]!r}: StrategyTuner takes {', '.join(tuner)}; "
                         f"strategy {name} also takes {', '.join(own) or 'no options'}")


def _limits(max_macs: Any, max_params: Any, max_latency_ms: Any, latency_threads: int | None, latency_backend: str,
            input_shape: Sequence[int] | None, max_first_exit_macs: Any = None) -> dict[str, Any]:
    """The arguments of :func:`~hrnas_automl.cost.cost_limit` from a tuner's classArgs (checked: numbers, backend)."""
    check_backend(latency_backend)
    limits = {name: parse_number(f"tuner classArgs {name}", value) for name, value in
              (("max_macs", max_macs), ("max_params", max_params), ("max_latency_ms", max_latency_ms),
               ("max_first_exit_macs", max_first_exit_macs))}
    return {**limits, "input_shape": input_shape, "threads": latency_threads, "backend": latency_backend}


_GIVEN_BY_TUNER = ("seed", "constraint", "canonical")  # strategy arguments the tuner sets (classArgs, the space)
_STATE_FILE = "strategy_tuner.json"


class StrategyTuner(Orphans[dict[str, Any]], Tuner):
    """Adapts a registered :class:`~hrnas_automl.strategies.Strategy` to NNI's Tuner interface.

    Args:
        strategy: a name of :data:`hrnas_automl.registry.STRATEGIES` (``random``, ``evolution``, or a plugin's);
            its own options (e.g. evolution's ``population_size``, ``select_num``, ``mutation_num``,
            ``mutation_prob``, ``crossover_num``) are further classArgs.
        space: a registered space name; the nnictl search space must be its ``export-space`` output.
        seed: the strategy's seed (same seed, same proposals).
        optimize_mode: ``maximize`` or ``minimize`` the ``default`` metric.
        max_macs / max_params: only propose networks under these limits (analytic cost at ``input_shape``).
        max_first_exit_macs: (RANet) only propose networks whose first exit costs at most this (the trial's
            ``budget_macs``: a network over it fails every sample), counted in closed form at ``input_shape``.
        max_latency_ms: only propose networks whose latency, predicted by the lookup table measured on the
            tuner's machine (:func:`hrnas_automl.cost.latency.latency_table`), is under this limit.
        latency_threads: threads for that table (match the trials' ``latency.threads``).
        latency_backend: where that table is measured: ``torch`` (eager PyTorch, default) or ``onnxruntime`` (ONNX
            Runtime on the exported blocks; match the trials' ``latency.backend``).
        input_shape: (C, H, W) for the limits; default the space's paper input size.
        space_args: space constructor arguments used for the limits (e.g. ``num_classes``).
    """

    def __init__(self, space: str, *, strategy: str = "random", seed: int = 0, optimize_mode: str = "maximize",
                 max_macs: float | None = None, max_params: float | None = None, max_latency_ms: float | None = None,
                 latency_threads: int | None = None, latency_backend: str = "torch",
                 input_shape: Sequence[int] | None = None, space_args: Mapping[str, Any] | None = None,
                 max_first_exit_macs: float | None = None, **strategy_args: Any) -> None:
        quiet_nni()
        if optimize_mode not in ("maximize", "minimize"):
            raise ValueError(f"optimize_mode must be 'maximize' or 'minimize', got {optimize_mode!r}")
        self._limits = _limits(max_macs, max_params, max_latency_ms, latency_threads, latency_backend, input_shape,
                               max_first_exit_macs)
        self.strategy_class = STRATEGIES.get(strategy)
        _check_strategy_options(strategy, self.strategy_class, strategy_args)
        self.space_name, self.seed, self.sign = space, seed, 1.0 if optimize_mode == "maximize" else -1.0
        self.space_args = dict(space_args or {})
        self._strategy_args = strategy_args
        self._running: dict[int, dict[str, Any]] = {}
        self._deferred: deque[int] = deque()
        self._send: Callable[[int, dict[str, Any]], None] | None = None
        self._lock = threading.RLock()  # NNI calls trial_end from another thread than the other callbacks
        self._saved: dict[str, Any] | None = None  # the strategy state load_checkpoint read, loaded when it is built
        self._state_name = _STATE_FILE  # a host of several tuners gives each its own file
        Orphans.__init__(self)

    # Built on first use, not in __init__: NNI creates the tuner before its dispatcher connects to the manager,
    # which gives up after 10 s, and building a space or compiling its cost table can take longer.
    @cached_property
    def space(self) -> Space:
        """The resolved space (the nnictl search space must be its choices in NNI's form)."""
        return resolve_space(self.space_name, **self.space_args)

    @cached_property
    def strategy(self) -> Strategy:
        """The strategy this tuner drives, under the configured limits (in its saved state after a resume)."""
        from hrnas_automl.cost import cost_limit  # imports torch

        constraint = cost_limit(self.space, **self._limits)
        takes = inspect.signature(self.strategy_class).parameters
        canonical = {"canonical": self.space.canonical} if "canonical" in takes or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in takes.values()) else {}  # a plugin's may not take it
        strategy = self.strategy_class(self.space.choices, seed=self.seed, constraint=constraint, **canonical,
                                       **self._strategy_args)
        if self._saved is not None:
            strategy.load_state_dict(self._saved)
        return strategy

    def update_search_space(self, search_space: dict[str, Any]) -> None:
        expected = to_nni_search_space(self.space.choices)
        if search_space == expected:
            return
        diff = next((k for k in expected if search_space.get(k) != expected[k]), None) or \
            next(k for k in search_space if k not in expected)
        raise ValueError(f"the experiment's search space differs from space {self.space_name} at label {diff!r}; "
                         f"regenerate it with `hrnas-automl export-space {self.space_name} -o search_space.json`")

    def generate_multiple_parameters(self, parameter_id_list: list[int], **kwargs: Any) -> list[dict[str, Any]]:
        with self._lock:
            self._send = kwargs.get("st_callback", self._send)
            if parameter_id_list:
                self.resume_at(parameter_id_list[0])
            return super().generate_multiple_parameters(parameter_id_list, **kwargs)

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict[str, Any]:
        arch = self._next()
        if arch is None:  # the generation is handed out; propose once its results are in
            self._deferred.append(parameter_id)
            raise nni.NoMoreTrialError("waiting for the results of the current generation")
        self._hand_out(parameter_id, arch)
        return arch

    def receive_trial_result(self, parameter_id: int, parameters: dict[str, Any], value: Any, **kwargs: Any) -> None:
        with self._lock:
            self._running.pop(parameter_id, None)
            self._tell(parameters, self._score(value))

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        with self._lock:
            arch = self._running.pop(parameter_id, None)
            if arch is not None:  # ended without a final result: failed, killed or early-stopped
                self._tell(arch, None)

    def load_checkpoint(self) -> None:
        """Read the state saved before ``nnictl stop`` (NNI calls this when it resumes the experiment)."""
        path = state_file(self, self._state_name)
        if path is not None and path.is_file():
            state = json.loads(path.read_text())
            self._saved = state["strategy"]
            self._orphans = {int(pid): arch for pid, arch in state["running"].items()}

    def import_data(self, data: list[dict[str, Any]]) -> None:
        """Tell the results NNI hands over that the strategy has not been told yet (all of them in a new tuner;
        after a resume, those that arrived after the last save and those of the trials NNI ran again)."""
        with self._lock:
            told = {params_key(arch) for arch, _ in self.strategy.history}
            for entry in data:
                if params_key(entry["parameter"]) not in told:
                    self._tell(entry["parameter"], self._score(entry["value"]))

    def _score(self, value: Any) -> float:
        return self.sign * float(value["default"] if isinstance(value, Mapping) else value)

    def _next(self) -> dict[str, Any] | None:
        """The next architecture to hand out: one proposed before a stop and never started, else the strategy's."""
        return self._again.popleft() if self._again else self.strategy.ask()

    def _hand_out(self, parameter_id: int, arch: dict[str, Any]) -> None:
        self._running[parameter_id] = arch
        self._save()

    def _tell(self, arch: Mapping[str, Any], score: float | None) -> None:
        """Tell the strategy, save, and send the trials deferred until this result."""
        key = params_key(arch)
        self._rerun = {pid: a for pid, a in self._rerun.items() if params_key(a) != key}
        self.strategy.tell(arch, score)
        self._save()
        while self._deferred and self._send is not None:
            nxt = self._next()
            if nxt is None:
                return
            parameter_id = self._deferred.popleft()
            self._hand_out(parameter_id, nxt)
            _log.info("sending deferred trial %d", parameter_id)
            self._send(parameter_id, nxt)

    def _save(self) -> None:
        """Keep the strategy's state and the trials handed out without an end in NNI's checkpoint folder, so
        ``nnictl resume`` continues the same search (written atomically after every proposal and result)."""
        path = state_file(self, self._state_name)
        if path is not None:
            running = {**self._running, **self._rerun}
            write_json_atomic({"strategy": self.strategy.state_dict(),
                               "running": {str(pid): arch for pid, arch in running.items()}}, path)


_MULTI_STATE_FILE = "multi_strategy_tuner.json"
_SHARED = ("optimize_mode", "max_macs", "max_params", "max_latency_ms", "latency_threads", "latency_backend",
           "input_shape", "space_args", "max_first_exit_macs")  # StrategyTuner classArgs every hosted tuner gets
_NNI_PREFIX = "nni:"  # strategies: nni:TPE hosts NNI's built-in tuner of that name
_MAX_REPEATS = 1000  # suggestions of known or over-limit networks in a row before a hosted NNI tuner is given up


class MultiStrategyTuner(Tuner):
    """Runs several strategies side by side in one nnictl experiment, each on its own trials and results.

    Example (nnictl YAML; examples/detnas/compare.yml)::

        tuner:
          className: hrnas_automl.nni.MultiStrategyTuner
          codeDirectory: .
          classArgs:
            space: detnas-small
            space_args: {num_classes: 10}
            max_macs: 6.9e+6
            input_shape: [3, 32, 32]
            strategies:
              - {strategy: random, seed: 0}
              - {strategy: evolution, seed: 0, population_size: 4, select_num: 2, mutation_num: 1, crossover_num: 1}
              - {strategy: optuna, seed: 0, sampler: tpe, objectives: metric}
              - {strategy: "nni:TPE", seed: 0}

    Every strategy is a tuner of its own: a registered strategy (``random``, ``evolution``, a plugin's) a
    :class:`StrategyTuner` with the shared classArgs (space, limits, ``optimize_mode``); ``optuna`` an
    :class:`~hrnas_automl.nni.optuna_tuner.OptunaTuner` (its own study; the limit ``max_macs`` is its constraint);
    ``nni:NAME`` NNI's built-in tuner NAME (``nni:TPE``, ``nni:Random``, ``nni:Evolution``...; ``nni:Anneal`` needs
    hyperopt, which NNI does not install), given ``optimize_mode``. Each entry's other keys are that tuner's options.

    Fair: trial requests go round-robin (the next one to the strategy with the fewest trials so far, ties in list
    order), so with ``maxTrialNumber`` a multiple of the number of strategies each gets the same number; a strategy
    waiting for results (an evolution generation) keeps its turn and sends its trial later. Isolated: a result goes
    to the strategy that proposed the trial only. Tagged: every trial's parameters carry :data:`STRATEGY_KEY`
    (``strategy``) = the entry's ``tag`` (default: its ``strategy``), which the web UI shows as a column and in the
    hyper-parameter chart when the search space lists it (``"strategy": {"_type": "choice", "_value": [tags]}``);
    the trial takes it out before building its network and adds it to its final result.

    No duplicates: our strategies and the Optuna tuner never propose a network (canonical form) they proposed
    before; NNI's tuners know nothing of canonical forms or limits, and the Optuna tuner's ``max_macs`` only marks a
    trial infeasible once it ran, so the host asks them again (up to 1000 times in a row) when they suggest a network
    over the limits (telling them the trial failed) or, NNI's, one they suggested before (telling them the known
    result, or a failure while that trial runs). So every strategy runs networks under the limits only.

    One strategy works too: ``[{strategy: "nni:TPE"}]`` is NNI's TPE under the limits, never running a network twice.

    ``nnictl resume`` continues every strategy where it stopped (each keeps its state in NNI's checkpoint folder;
    NNI's own tuners relearn from the results NNI hands over).

    Args:
        space: a registered space name; the nnictl search space is its ``export-space`` output (plus the tag).
        strategies: one mapping per strategy: ``strategy`` (a registered strategy, ``optuna`` or ``nni:NAME``),
            ``tag`` (optional, unique) and that tuner's options (``seed``, ``population_size``, ``sampler``...).
        optimize_mode, max_macs, max_params, max_latency_ms, latency_threads, latency_backend, input_shape,
            space_args, max_first_exit_macs: as for :class:`StrategyTuner` (shared by the strategies).
    """

    def __init__(self, space: str, *, strategies: Sequence[Mapping[str, Any]], optimize_mode: str = "maximize",
                 max_macs: float | None = None, max_params: float | None = None, max_latency_ms: float | None = None,
                 latency_threads: int | None = None, latency_backend: str = "torch",
                 input_shape: Sequence[int] | None = None, space_args: Mapping[str, Any] | None = None,
                 max_first_exit_macs: float | None = None) -> None:
        quiet_nni()
        if isinstance(strategies, (str, Mapping)) or not isinstance(strategies, Sequence) or not strategies:
            raise ValueError("strategies must be a non-empty list of mappings such as {strategy: random, seed: 0}, "
                             f"got {strategies!r}")
        shared = dict(optimize_mode=optimize_mode, max_macs=max_macs, max_params=max_params,
                      max_latency_ms=max_latency_ms, latency_threads=latency_threads, latency_backend=latency_backend,
                      input_shape=input_shape, space_args=space_args, max_first_exit_macs=max_first_exit_macs)
        self.space_name, self.space_args = space, dict(space_args or {})
        self._limits = _limits(max_macs, max_params, max_latency_ms, latency_threads, latency_backend, input_shape,
                               max_first_exit_macs)
        optunas = [e for e in strategies if isinstance(e, Mapping) and e.get("strategy") == "optuna"]
        if len(optunas) > 1 and len({e.get("study_name") for e in optunas}) < len(optunas):
            raise ValueError("two optuna strategies would share a study: give each its own study_name")
        self.tuners: dict[str, Tuner] = {}
        for entry in strategies:
            tag, tuner = self._build(entry, shared)
            if tag in self.tuners:
                raise ValueError(f"two strategies are tagged {tag!r}; give each a distinct 'tag'")
            self.tuners[tag] = tuner
        self._count = dict.fromkeys(self.tuners, 0)  # trials given to each strategy
        self._running: dict[int, str] = {}  # parameter id -> the tag of the strategy it was given to, until its end
        # NNI's own tuners (not ours: those dedupe themselves): network (canonical) -> its result, None while it runs
        self._seen: dict[str, dict[str, Any]] = {tag: {} for tag, tuner in self.tuners.items()
                                                 if not isinstance(tuner, Orphans)}
        self._send: Callable[[int, dict[str, Any]], None] | None = None
        self._lock = threading.RLock()  # NNI calls trial_end from another thread than the other callbacks
        self._resumed = False

    def _build(self, entry: Any, shared: Mapping[str, Any]) -> tuple[str, Tuner]:
        """One strategy's tag and tuner from its classArgs entry."""
        if not isinstance(entry, Mapping) or not isinstance(entry.get("strategy"), str):
            raise ValueError(f"each strategies entry must be a mapping with a 'strategy' name, got {entry!r}")
        options = {k: v for k, v in entry.items() if k not in ("strategy", "tag")}
        name = entry["strategy"]
        tag = str(entry.get("tag", name.removeprefix(_NNI_PREFIX).lower() if name.startswith(_NNI_PREFIX) else name))
        if name == "optuna":
            from hrnas_automl.nni.optuna_tuner import OptunaTuner

            return tag, OptunaTuner(space=self.space_name, space_args=shared["space_args"],
                                    **({"max_macs": shared["max_macs"]} | options))
        if name.startswith(_NNI_PREFIX):
            from nni.tools.package_utils.tuner_factory import create_builtin_class_instance

            try:
                return tag, create_builtin_class_instance(name.removeprefix(_NNI_PREFIX),
                                                          {"optimize_mode": shared["optimize_mode"], **options},
                                                          "tuners")
            except (RuntimeError, ImportError, TypeError) as exc:
                raise ValueError(f"strategy {name!r}: NNI's tuner cannot be built here ({exc}); "
                                 "NNI's tuners: TPE, Random, Evolution, Anneal (needs hyperopt), ...") from None
        unknown = [k for k in options if k in _SHARED or k == "space"]
        if unknown:
            raise ValueError(f"strategy {tag!r} sets {unknown[0]!r}, which the strategies share; set it once in the "
                             "tuner's classArgs")
        tuner = StrategyTuner(self.space_name, strategy=name, **shared, **options)
        tuner._state_name = f"strategy_tuner.{tag}.json"  # each hosted strategy keeps its own state
        return tag, tuner

    @cached_property
    def space(self) -> Space:
        """The resolved space (for the canonical form of what NNI's tuners propose)."""
        return resolve_space(self.space_name, **self.space_args)

    @cached_property
    def constraint(self) -> Callable[[dict[str, Any]], bool] | None:
        """The shared limits as a feasibility test, for what the Optuna tuner and NNI's propose (ours never propose
        past them)."""
        from hrnas_automl.cost import cost_limit  # imports torch

        return cost_limit(self.space, **self._limits)

    def update_search_space(self, search_space: dict[str, Any]) -> None:
        search_space = dict(search_space)
        tags = search_space.pop(STRATEGY_KEY, None)
        expected = to_nni_search_space({}, strategies=list(self.tuners))[STRATEGY_KEY]
        if tags is not None and tags != expected:
            raise ValueError(f"the search space's {STRATEGY_KEY!r} entry must be {json.dumps(expected)} (the "
                             f"strategies' tags, in order), got {json.dumps(tags)}; regenerate it with `hrnas-automl "
                             f"export-space {self.space_name} --strategies {','.join(self.tuners)} -o ...`")
        for tuner in self.tuners.values():
            tuner.update_search_space(search_space)

    def generate_multiple_parameters(self, parameter_id_list: list[int], **kwargs: Any) -> list[dict[str, Any]]:
        """Give each requested trial to the next strategy in turn; stop at the first one that waits for results
        (it sends that trial later; NNI asks again for the others)."""
        with self._lock:
            self._send = kwargs.get("st_callback", self._send)
            if self._resumed and parameter_id_list:  # the first request after a resume: NNI's first new id
                first = parameter_id_list[0]
                for tuner in self.tuners.values():
                    if isinstance(tuner, Orphans):
                        tuner.resume_at(first)
                for pid, tag in list(self._running.items()):
                    if pid >= first:  # handed out, never started (NNI hands the id out again): its strategy gets
                        del self._running[pid]  # the next turn and proposes it again first
                        self._count[tag] -= 1
                self._resumed = False
            sent = []
            for parameter_id in parameter_id_list:
                tag = min(self.tuners, key=self._count.__getitem__)  # ties: the first in list order
                self._running[parameter_id] = tag
                self._count[tag] += 1
                self._save()
                params = self._generate(tag, parameter_id)
                if params is None:
                    break
                sent.append(params)
            return sent

    def receive_trial_result(self, parameter_id: int, parameters: dict[str, Any], value: Any, **kwargs: Any) -> None:
        with self._lock:
            tag, params = self._untag(parameters, parameter_id)
            if tag is None:
                return
            if tag in self._seen and self._space_key(params) in self._seen[tag]:
                self._seen[tag][self._space_key(params)] = value
            self.tuners[tag].receive_trial_result(parameter_id, params, value, **kwargs)

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        with self._lock:
            tag = self._running.pop(parameter_id, None)
            if tag is not None:
                self._save()
                self.tuners[tag].trial_end(parameter_id, success, **kwargs)

    def load_checkpoint(self) -> None:
        """Read which strategy had which trial, and let every strategy read its own state (NNI calls this when it
        resumes the experiment)."""
        path = state_file(self, _MULTI_STATE_FILE)
        if path is not None and path.is_file():
            state = json.loads(path.read_text())
            self._count = state["count"]
            self._running = {int(pid): tag for pid, tag in state["running"].items()}
        for tuner in self.tuners.values():
            tuner.load_checkpoint()
        self._resumed = True

    def import_data(self, data: list[dict[str, Any]]) -> None:
        """Hand each strategy the results of its own trials (by their tag)."""
        with self._lock:
            mine: dict[str, list[dict[str, Any]]] = {tag: [] for tag in self.tuners}
            for entry in data:
                tag, params = self._untag(entry["parameter"], None)
                if tag is not None:
                    mine[tag].append({**entry, "parameter": params})
                    if tag in self._seen:
                        self._seen[tag][self._space_key(params)] = entry["value"]
            for tag, entries in mine.items():
                if entries:
                    self.tuners[tag].import_data(entries)

    def _generate(self, tag: str, parameter_id: int) -> dict[str, Any] | None:
        """Strategy ``tag``'s trial for ``parameter_id``, tagged; None when it sends it later."""
        sent = self.tuners[tag].generate_multiple_parameters([parameter_id], st_callback=self._tagging(tag))
        return self._accepted(tag, parameter_id, sent[0]) if sent else None

    def _accepted(self, tag: str, parameter_id: int, params: dict[str, Any]) -> dict[str, Any] | None:
        """``params`` tagged, once the tuner of ``tag`` proposes a network it may run (:meth:`_rejected`: it is asked
        again until it does); None when it sends the trial later."""
        for _ in range(_MAX_REPEATS):
            if not self._rejected(tag, parameter_id, params):
                return {**params, STRATEGY_KEY: tag}
            sent = self.tuners[tag].generate_multiple_parameters([parameter_id], st_callback=self._tagging(tag))
            if not sent:
                return None
            params = sent[0]
        raise SpaceExhaustedError(f"strategy {tag!r} suggested {_MAX_REPEATS} networks in a row that it had "
                                  "suggested before or that are over the limits: the space is (nearly) exhausted")

    def _rejected(self, tag: str, parameter_id: int, params: dict[str, Any]) -> bool:
        """Whether a tuner that is not ours (the Optuna tuner, NNI's) suggested a network over the shared limits (it is
        told the trial failed) or, NNI's, one it had suggested before (it is told that network's result, or a failure
        while that trial runs); a network NNI's tuner may run is recorded. Our strategies never propose either."""
        tuner = self.tuners[tag]
        if isinstance(tuner, StrategyTuner):
            return False
        if self.constraint is not None and not self.constraint(params):
            tuner.trial_end(parameter_id, False)
            _log.info("strategy %s suggested a network over the limits: asking again", tag)
            return True
        if tag not in self._seen:
            return False
        key, seen = self._space_key(params), self._seen[tag]
        if key not in seen:
            seen[key] = None
            return False
        if seen[key] is None:
            tuner.trial_end(parameter_id, False)
        else:
            tuner.receive_trial_result(parameter_id, params, seen[key])
        _log.info("strategy %s suggested a network it had suggested before: asking again", tag)
        return True

    def _space_key(self, params: Mapping[str, Any]) -> str:
        return params_key(self.space.canonical(params))

    def _tagging(self, tag: str) -> Callable[[int, dict[str, Any]], None]:
        """The callback through which strategy ``tag`` sends a trial it had deferred: tagged, to NNI's."""
        def send(parameter_id: int, params: dict[str, Any]) -> None:
            accepted = self._accepted(tag, parameter_id, params)
            if accepted is not None and self._send is not None:
                self._send(parameter_id, accepted)
        return send

    def _untag(self, parameters: Mapping[str, Any], parameter_id: int | None) -> tuple[str | None, dict[str, Any]]:
        """The strategy tag of a trial (from its parameters, else from whom it was given to) and its parameters
        without the tag; None for a trial of no hosted strategy (logged)."""
        params = {k: v for k, v in parameters.items() if k != STRATEGY_KEY}
        tag = parameters.get(STRATEGY_KEY, self._running.get(parameter_id) if parameter_id is not None else None)
        if tag not in self.tuners:
            _log.warning("a trial with parameters %s has no strategy tag of this tuner: its result is ignored",
                         dict(parameters))
            return None, params
        return tag, params

    def _save(self) -> None:
        path = state_file(self, _MULTI_STATE_FILE)
        if path is not None:
            running = {str(pid): tag for pid, tag in self._running.items()}
            write_json_atomic({"count": self._count, "running": running}, path)
