"""The ask/tell contract shared by all strategies, and the sampling machinery behind it.

A strategy proposes architectures (plain ``{label: value}`` dicts) with :meth:`Strategy.ask` and
learns their scores through :meth:`Strategy.tell`; it knows nothing about NNI, Optuna or torch, so
nnictl tuners and the in-process supernet search can both drive it. Everything random goes through
one ``random.Random`` owned by the strategy, and labels are always iterated in the order of the
choices, so the same seed gives the same proposals and :meth:`Strategy.state_dict` can resume a
search exactly.

Every proposal is new (never proposed or told before; with a ``canonical`` function, no sample of the same network
was) and satisfies the constraint. Candidates are
found by rejection sampling with a hard cap of ``max_attempts`` draws, so no loop can spin forever:

* :class:`InfeasibleConstraintError` when no feasible new candidate turns up within the cap
  (the limit is too tight for the space);
* :class:`SpaceExhaustedError` when every architecture of the space has been proposed (or, without
  a constraint, when the cap is hit because almost all of them have).
"""
from __future__ import annotations

import abc
import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hrnas_automl.arch import validate_arch
from hrnas_automl.cost.limits import InfeasibleConstraintError
from hrnas_automl.registry import space_size

__all__ = [
    "Choices",
    "Constraint",
    "Canonical",
    "InfeasibleConstraintError",
    "SpaceExhaustedError",
    "Strategy",
    "random_arch",
    "mutate",
    "crossover",
    "search",
]

Choices = Mapping[str, Sequence[Any]]
"""``{label: candidate values}`` of a search space; candidates are JSON primitives."""

Constraint = Callable[[dict[str, Any]], bool]
"""True when an architecture is feasible (e.g. its MACs are under a limit)."""

Canonical = Callable[[dict[str, Any]], dict[str, Any]]
"""The one form of an architecture's network (:meth:`hrnas_automl.arch.Space.canonical`): samples of one network map
to the same dict."""

_Key = tuple[Any, ...]
_PRIMITIVES = (str, int, float, bool, type(None))


class SpaceExhaustedError(RuntimeError):
    """Every architecture of the space has already been proposed; there is nothing new to ask."""


def random_arch(choices: Choices, rng: random.Random) -> dict[str, Any]:
    """One candidate per label, drawn uniformly."""
    return {label: rng.choice(candidates) for label, candidates in choices.items()}


def mutate(arch: Mapping[str, Any], choices: Choices, rng: random.Random, prob: float) -> dict[str, Any]:
    """Re-draw each gene uniformly with probability ``prob``.

    As in DetNAS (distributed_arch_search/search.py, ``get_mutation``) the re-drawn value may equal
    the old one, so ``prob`` is the re-draw rate, not the change rate.
    """
    _check_prob("prob", prob)
    return {label: rng.choice(candidates) if rng.random() < prob else arch[label]
            for label, candidates in choices.items()}


def crossover(a: Mapping[str, Any], b: Mapping[str, Any], rng: random.Random) -> dict[str, Any]:
    """Uniform crossover: each gene taken from ``a`` or ``b`` with equal chance (DetNAS ``get_crossover``)."""
    if a.keys() != b.keys():
        raise ValueError(f"crossover parents must have the same labels, got {sorted(a)} and {sorted(b)}")
    return {label: rng.choice((a[label], b[label])) for label in a}


def _check_prob(name: str, prob: float) -> None:
    if not 0.0 <= prob <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be a probability in [0, 1], got {prob!r}")


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _checked_choices(choices: Choices) -> dict[str, list[Any]]:
    """Validate ``choices`` and copy it into ``{label: list}`` (order kept)."""
    if not isinstance(choices, Mapping) or not choices:
        raise ValueError(f"choices must be a non-empty mapping {{label: candidates}}, got {choices!r}")
    checked: dict[str, list[Any]] = {}
    for label, candidates in choices.items():
        if not isinstance(label, str):
            raise ValueError(f"choices labels must be strings, got {label!r}")
        if isinstance(candidates, (str, bytes)) or not isinstance(candidates, Sequence) or not candidates:
            raise ValueError(f"choices[{label!r}] must be a non-empty list of candidates, got {candidates!r}")
        for value in candidates:
            if not isinstance(value, _PRIMITIVES):
                raise ValueError(f"choices[{label!r}] candidates must be JSON primitives "
                                 f"(str, int, float, bool, None), got {value!r}")
        checked[label] = list(candidates)
    return checked


class Strategy(abc.ABC):
    """Propose architectures with :meth:`ask`; report their scores with :meth:`tell`.

    Scores are higher-is-better; ``None`` (or NaN) marks a failed evaluation, which is recorded but
    never ranked. Subclasses implement :meth:`ask` on top of :meth:`_find` / :meth:`_random_candidate`,
    which enforce the dedup, constraint and ``max_attempts`` rules described in the module docstring.

    Args:
        choices: ``{label: candidates}`` of the space.
        seed: seed of the strategy's own ``random.Random``.
        constraint: feasibility test every proposal must pass; None accepts all.
        max_attempts: cap on random draws when looking for one new feasible architecture.
        canonical: the space's canonical form (:data:`Canonical`): architectures are new, told or seen by it, so
            two samples of one network count as one; None: every sample is its own network.
    """

    def __init__(self, choices: Choices, *, seed: int = 0, constraint: Constraint | None = None,
                 max_attempts: int = 10_000, canonical: Canonical | None = None) -> None:
        self._choices = _checked_choices(choices)
        if constraint is not None and not callable(constraint):
            raise ValueError(f"constraint must be a callable arch -> bool or None, got {constraint!r}")
        _check_int("max_attempts", max_attempts, 1)
        self.constraint = constraint
        self.max_attempts = max_attempts
        self.canonical = canonical
        self._space_size = space_size(self._choices)
        self._rng = random.Random(seed)
        self._seen: set[_Key] = set()  # proposed or told: never proposed (again)
        self._history: list[tuple[dict[str, Any], float | None]] = []

    @property
    def choices(self) -> dict[str, list[Any]]:
        """A copy of the space's ``{label: candidates}``."""
        return {label: list(c) for label, c in self._choices.items()}

    @abc.abstractmethod
    def ask(self) -> dict[str, Any] | None:
        """The next architecture to evaluate, or None when nothing can be proposed until pending results arrive.

        Raises:
            InfeasibleConstraintError: no feasible new architecture within ``max_attempts`` draws.
            SpaceExhaustedError: every architecture has been proposed.
        """

    def tell(self, arch: Mapping[str, Any], score: float | None) -> None:
        """Record the score of ``arch`` (higher is better; None or NaN = failed).

        ``arch`` need not have been proposed by this strategy (NNI hands over imported trials); it
        is then recorded too, and never proposed later.

        Raises:
            ArchitectureError: ``arch`` has an unknown or missing label, or a value that is not a candidate
                (a ``ValueError``).
        """
        arch = validate_arch(arch, self._choices)
        if score is not None:
            if isinstance(score, bool) or not isinstance(score, (int, float)):
                raise ValueError(f"score must be a real number or None, got {score!r}")
            score = None if math.isnan(score) else float(score)
        self._seen.add(self._key(arch))
        self._history.append((arch, score))

    @property
    def history(self) -> list[tuple[dict[str, Any], float | None]]:
        """Every ``(arch, score)`` told so far, in order (copies)."""
        return [(dict(arch), score) for arch, score in self._history]

    def best(self) -> tuple[dict[str, Any], float] | None:
        """The highest-scoring architecture told so far (earliest on ties), or None if none succeeded."""
        scored = [(arch, score) for arch, score in self._history if score is not None]
        if not scored:
            return None
        arch, score = max(scored, key=lambda entry: entry[1])
        return dict(arch), score

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume the search exactly, JSON-serialisable (RNG state included).

        Subclasses extend the returned dict with their own state.
        """
        version, internal, gauss_next = self._rng.getstate()
        return {
            "strategy": type(self).__name__,
            "choices": self.choices,
            "rng": [version, list(internal), gauss_next],
            "seen": [list(key) for key in self._seen],
            "history": [[dict(arch), score] for arch, score in self._history],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (possibly after a JSON round trip) into this strategy.

        Raises:
            ValueError: the state was saved by another strategy class or for other choices.
        """
        if state.get("strategy") != type(self).__name__:
            raise ValueError(f"state was saved by strategy {state.get('strategy')!r}, "
                             f"cannot load it into {type(self).__name__}")
        if state.get("choices") != self._choices:
            raise ValueError("state was saved for different choices (labels or candidates differ)")
        version, internal, gauss_next = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss_next))
        self._seen = {tuple(key) for key in state["seen"]}
        self._history = [(dict(arch), score) for arch, score in state["history"]]

    # -- shared sampling machinery -------------------------------------------------------------

    def _key(self, arch: Mapping[str, Any]) -> _Key:
        """Hashable identity of an architecture's network (values of its canonical form in choices order)."""
        if self.canonical is not None:
            arch = self.canonical(dict(arch))
        return tuple(arch[label] for label in self._choices)

    def _find(self, generate: Callable[[], dict[str, Any]], tries: int, taken: set[_Key], *,
              dedup: bool = True) -> dict[str, Any] | None:
        """Draw up to ``tries`` candidates from ``generate``; return the first acceptable one, else None.

        Acceptable: feasible and, with ``dedup``, neither seen before nor in ``taken`` (the batch
        being built). Its key is added to ``taken``; the caller commits ``taken`` with
        :meth:`_commit` once the whole batch is built, so a failed batch leaves no trace.
        """
        for _ in range(tries):
            arch = generate()
            key = self._key(arch)
            if dedup and (key in self._seen or key in taken):
                continue
            if self.constraint is not None and not self.constraint(dict(arch)):
                continue
            taken.add(key)
            return arch
        return None

    def _random_candidate(self, taken: set[_Key], *, dedup: bool = True) -> dict[str, Any]:
        """A uniformly random acceptable architecture (see :meth:`_find`), within ``max_attempts`` draws.

        Raises:
            SpaceExhaustedError: with ``dedup``, every architecture is seen or taken, or (without a
                constraint) none new turned up within ``max_attempts`` draws.
            InfeasibleConstraintError: with a constraint, no feasible new one within ``max_attempts`` draws.
        """
        proposed = len(self._seen) + len(taken)
        if dedup and proposed >= self._space_size:
            raise SpaceExhaustedError(f"all {self._space_size} architectures of the space have been proposed")
        arch = self._find(lambda: random_arch(self._choices, self._rng), self.max_attempts, taken, dedup=dedup)
        if arch is not None:
            return arch
        if self.constraint is None:
            raise SpaceExhaustedError(f"no new architecture found in {self.max_attempts} random draws "
                                      f"({proposed} of {self._space_size} proposed): the space is nearly exhausted")
        raise InfeasibleConstraintError(f"no feasible, not-yet-proposed architecture found in {self.max_attempts} "
                                        f"random draws ({proposed} proposed so far); loosen the constraint's limit "
                                        f"or raise max_attempts")

    def _commit(self, taken: set[_Key]) -> None:
        """Mark a finished batch of candidates as proposed, so they are never proposed again."""
        self._seen |= taken


def search(strategy: Strategy, objective: Callable[[dict[str, Any]], float | None], n: int
           ) -> tuple[dict[str, Any], float]:
    """Run ``n`` ask/evaluate/tell rounds in-process and return the best ``(arch, score)`` told so far.

    This is how the one-shot supernet search drives a strategy: ``objective`` scores an architecture
    (e.g. validation accuracy with inherited weights) and returns None when it fails.

    Raises:
        ValueError: ``n`` < 1.
        RuntimeError: the strategy waits for results told outside this call, or every evaluation failed.
    """
    _check_int("n", n, 1)
    for _ in range(n):
        arch = strategy.ask()
        if arch is None:
            raise RuntimeError(f"{type(strategy).__name__}.ask() returned None: it waits for results of archs "
                               f"proposed before search() was called; tell() those first")
        strategy.tell(arch, objective(arch))
    best = strategy.best()
    if best is None:
        raise RuntimeError(f"no evaluation succeeded: the objective returned None (or NaN) for all {n} archs")
    return best
