"""The NNI tuner that runs any registered hrnas-automl strategy under nnictl (``tuner: {className: ...}``).

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
from hrnas_automl.nni.compat import quiet_nni, to_nni_search_space
from hrnas_automl.nni.resume import Orphans, params_key, state_file
from hrnas_automl.registry import STRATEGIES
from hrnas_automl.strategies import Strategy

__all__ = ["StrategyTuner"]

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
                 **strategy_args: Any) -> None:
        quiet_nni()
        if optimize_mode not in ("maximize", "minimize"):
            raise ValueError(f"optimize_mode must be 'maximize' or 'minimize', got {optimize_mode!r}")
        check_backend(latency_backend)
        limits = {name: parse_number(f"tuner classArgs {name}", value) for name, value in
                  (("max_macs", max_macs), ("max_params", max_params), ("max_latency_ms", max_latency_ms))}
        self.strategy_class = STRATEGIES.get(strategy)
        _check_strategy_options(strategy, self.strategy_class, strategy_args)
        self.space_name, self.seed, self.sign = space, seed, 1.0 if optimize_mode == "maximize" else -1.0
        self.space_args = dict(space_args or {})
        self._limits = {**limits, "input_shape": input_shape, "threads": latency_threads, "backend": latency_backend}
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
