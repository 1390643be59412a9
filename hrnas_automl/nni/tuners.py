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
"""
from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any

import nni
from nni.tuner import Tuner

from hrnas_automl.arch import Space, resolve_space
from hrnas_automl.config import parse_number
from hrnas_automl.nni.compat import quiet_nni, to_nni_search_space
from hrnas_automl.registry import STRATEGIES
from hrnas_automl.strategies import Strategy

__all__ = ["StrategyTuner"]

_log = logging.getLogger(__name__)


class StrategyTuner(Tuner):
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
        latency_threads: torch threads for that table (match the trials' ``threads``).
        input_shape: (C, H, W) for the limits; default the space's paper input size.
        space_args: space constructor arguments used for the limits (e.g. ``num_classes``).
    """

    def __init__(self, space: str, *, strategy: str = "random", seed: int = 0, optimize_mode: str = "maximize",
                 max_macs: float | None = None, max_params: float | None = None, max_latency_ms: float | None = None,
                 latency_threads: int | None = None, input_shape: Sequence[int] | None = None,
                 space_args: Mapping[str, Any] | None = None, **strategy_args: Any) -> None:
        quiet_nni()
        if optimize_mode not in ("maximize", "minimize"):
            raise ValueError(f"optimize_mode must be 'maximize' or 'minimize', got {optimize_mode!r}")
        limits = {name: parse_number(f"tuner classArgs {name}", value) for name, value in
                  (("max_macs", max_macs), ("max_params", max_params), ("max_latency_ms", max_latency_ms))}
        self.strategy_class = STRATEGIES.get(strategy)
        self.space_name, self.seed, self.sign = space, seed, 1.0 if optimize_mode == "maximize" else -1.0
        self.space_args = dict(space_args or {})
        self._limits = {**limits, "input_shape": input_shape, "threads": latency_threads}
        self._strategy_args = strategy_args
        self._running: dict[int, dict[str, Any]] = {}
        self._deferred: deque[int] = deque()
        self._send: Callable[[int, dict[str, Any]], None] | None = None

    # Built on first use, not in __init__: NNI creates the tuner before its dispatcher connects to the
    # manager, which gives up after 10 s, and building a space or compiling its cost table can take longer.
    @cached_property
    def space(self) -> Space:
        """The resolved space (the nnictl search space must be its choices in NNI's form)."""
        return resolve_space(self.space_name, **self.space_args)

    @cached_property
    def strategy(self) -> Strategy:
        """The strategy this tuner drives, under the configured limits."""
        from hrnas_automl.cost import cost_limit  # imports torch

        constraint = cost_limit(self.space, **self._limits)
        return self.strategy_class(self.space.choices, seed=self.seed, constraint=constraint, **self._strategy_args)

    def update_search_space(self, search_space: dict[str, Any]) -> None:
        expected = to_nni_search_space(self.space.choices)
        if search_space == expected:
            return
        diff = next((k for k in expected if search_space.get(k) != expected[k]), None) or \
            next(k for k in search_space if k not in expected)
        raise ValueError(f"the experiment's search space differs from space {self.space_name} at label {diff!r}; "
                         f"regenerate it with `hrnas-automl export-space {self.space_name} -o search_space.json`")

    def generate_multiple_parameters(self, parameter_id_list: list[int], **kwargs: Any) -> list[dict[str, Any]]:
        self._send = kwargs.get("st_callback", self._send)
        return super().generate_multiple_parameters(parameter_id_list, **kwargs)

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict[str, Any]:
        arch = self.strategy.ask()
        if arch is None:  # the generation is handed out; propose once its results are in
            self._deferred.append(parameter_id)
            raise nni.NoMoreTrialError("waiting for the results of the current generation")
        self._running[parameter_id] = arch
        return arch

    def receive_trial_result(self, parameter_id: int, parameters: dict[str, Any], value: Any, **kwargs: Any) -> None:
        score = value["default"] if isinstance(value, Mapping) else value
        self._running.pop(parameter_id, None)
        self.strategy.tell(parameters, self.sign * float(score))
        self._send_deferred()

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        arch = self._running.pop(parameter_id, None)
        if arch is not None:  # ended without a final result: failed, killed or early-stopped
            self.strategy.tell(arch, None)
            self._send_deferred()

    def import_data(self, data: list[dict[str, Any]]) -> None:
        for entry in data:
            value = entry["value"]
            self.strategy.tell(entry["parameter"], self.sign * float(value["default"] if isinstance(value, Mapping)
                                                                      else value))

    def _send_deferred(self) -> None:
        while self._deferred and self._send is not None:
            arch = self.strategy.ask()
            if arch is None:
                return
            parameter_id = self._deferred.popleft()
            self._running[parameter_id] = arch
            _log.info("sending deferred trial %d", parameter_id)
            self._send(parameter_id, arch)
