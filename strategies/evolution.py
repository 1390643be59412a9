"""DetNAS's evolutionary search, generation-synchronous over ask/tell.

Follows megvii-model/DetNAS ``distributed_arch_search/search.py`` (``EvolutionTrainer.train``,
lines 225-268) and the paper (Chen et al., "DetNAS: Backbone Search for Object Detection", NeurIPS
2019, https://arxiv.org/abs/1903.10979, §3, search on the supernet with EA): generation 0 is random;
each later generation takes the top ``select_num`` architectures evaluated so far as parents and is
made of mutants, crossovers and random architectures, every one of them new (``legal``, search.py
83-105) and under the FLOPs limit (here: any constraint).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hrnas_automl.strategies.base import (
    Canonical,
    Choices,
    Constraint,
    Strategy,
    _check_int,
    _check_prob,
    crossover,
    mutate,
)

__all__ = ["Evolution"]

# DetNAS search.py get_mutation / get_crossover: each operator gets at most 10x its count of tries
# (``max_iters = mutation_num*10``); the shortfall is filled with random architectures.
_TRIES_PER_OFFSPRING = 10


class Evolution(Strategy):
    """Evolutionary search as in DetNAS; defaults are its ``arch_search_config.py:24-36`` values.

    Generation 0 is ``population_size`` random feasible architectures. Once every architecture of
    the current generation has been told (a score or None), :meth:`ask` builds the next one:

    * parents: the top ``select_num`` distinct architectures by score over *all* archs told so far
      (failed ones excluded); with no successful arch at all, the generation is all random;
    * ``mutation_num`` mutants of random parents (each gene re-drawn with ``mutation_prob``);
    * ``crossover_num`` uniform crossovers of two random parents (possibly the same one);
    * random architectures up to ``population_size``.

    Every candidate is feasible and never proposed or told before. Mutation and crossover each get
    at most 10x their count of tries; the shortfall is filled with random architectures, and only
    when those fail too does :meth:`ask` raise
    :class:`~hrnas_automl.strategies.base.InfeasibleConstraintError` (or ``SpaceExhaustedError``).

    :meth:`ask` returns None once the whole generation is handed out and results are pending.

    Example::

        >>> from hrnas_automl.strategies import Evolution, search
        >>> choices = {f"b{i}": [0, 1, 2, 3] for i in range(20)}
        >>> evo = Evolution(choices, population_size=10, select_num=3, mutation_num=4, crossover_num=4, seed=0)
        >>> arch, score = search(evo, lambda arch: sum(arch.values()), n=50)
        >>> evo.generation
        4

    Args:
        choices, seed, constraint, max_attempts, canonical: see :class:`~hrnas_automl.strategies.base.Strategy`.
        population_size: archs per generation (DetNAS: 50).
        select_num: parents kept, the top-k (DetNAS: 10).
        mutation_num: mutants per generation (DetNAS: 20).
        mutation_prob: per-gene re-draw probability of a mutation (DetNAS ``m_prob``: 0.1).
        crossover_num: crossovers per generation (DetNAS: 20; the remaining 10 are random).
    """

    def __init__(self, choices: Choices, *, population_size: int = 50, select_num: int = 10, mutation_num: int = 20,
                 mutation_prob: float = 0.1, crossover_num: int = 20, seed: int = 0,
                 constraint: Constraint | None = None, max_attempts: int = 10_000,
                 canonical: Canonical | None = None) -> None:
        _check_int("population_size", population_size, 1)
        _check_int("select_num", select_num, 1)
        if select_num > population_size:
            raise ValueError(f"select_num must be <= population_size ({population_size}), got {select_num}")
        _check_int("mutation_num", mutation_num, 0)
        _check_int("crossover_num", crossover_num, 0)
        if mutation_num + crossover_num > population_size:
            raise ValueError(f"mutation_num + crossover_num must be <= population_size ({population_size}), "
                             f"got {mutation_num} + {crossover_num} = {mutation_num + crossover_num}")
        _check_prob("mutation_prob", mutation_prob)
        super().__init__(choices, seed=seed, constraint=constraint, max_attempts=max_attempts, canonical=canonical)
        self.population_size = population_size
        self.select_num = select_num
        self.mutation_num = mutation_num
        self.mutation_prob = mutation_prob
        self.crossover_num = crossover_num
        self._generation = 0
        self._population: list[dict[str, Any]] = []  # empty until the first ask() builds generation 0
        self._handed = 0  # how many of the population ask() has returned
        self._pending: set[tuple[Any, ...]] = set()  # keys of the population not told yet

    @property
    def generation(self) -> int:
        """Index of the current generation (0 = the random one)."""
        return self._generation

    @property
    def population(self) -> list[dict[str, Any]]:
        """The current generation's architectures (copies); empty before the first :meth:`ask`."""
        return [dict(arch) for arch in self._population]

    def ask(self) -> dict[str, Any] | None:
        """The next architecture of the current generation, building the next generation when the
        current one is fully told; None while it is handed out and results are pending."""
        if self._handed == len(self._population):
            if self._pending:
                return None
            population = self._next_population()
            if self._population:
                self._generation += 1
            self._population, self._handed = population, 0
            self._pending = {self._key(arch) for arch in population}
        arch = self._population[self._handed]
        self._handed += 1
        return dict(arch)

    def tell(self, arch: Mapping[str, Any], score: float | None) -> None:
        """Record a score (see :meth:`Strategy.tell`); the generation advances once all of it is told."""
        super().tell(arch, score)
        self._pending.discard(self._key(arch))

    def state_dict(self) -> dict[str, Any]:
        """:meth:`Strategy.state_dict` plus the generation, its population and which of it is handed out/pending."""
        state = super().state_dict()
        state.update(generation=self._generation, population=self.population, handed=self._handed,
                     pending=[list(key) for key in self._pending])
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the hyper-parameters are this instance's own."""
        super().load_state_dict(state)
        self._generation = state["generation"]
        self._population = [dict(arch) for arch in state["population"]]
        self._handed = state["handed"]
        self._pending = {tuple(key) for key in state["pending"]}

    def _parents(self) -> list[dict[str, Any]]:
        """Top ``select_num`` distinct architectures by score over everything told (DetNAS ``keep_top_k``)."""
        ranked = sorted((entry for entry in self._history if entry[1] is not None),
                        key=lambda entry: entry[1], reverse=True)  # stable: earlier first on ties
        parents: dict[tuple[Any, ...], dict[str, Any]] = {}
        for arch, _ in ranked:
            parents.setdefault(self._key(arch), arch)
            if len(parents) == self.select_num:
                break
        return list(parents.values())

    def _next_population(self) -> list[dict[str, Any]]:
        """Mutants + crossovers + random fill (DetNAS ``train``); generation 0 is all random."""
        taken: set[tuple[Any, ...]] = set()
        population: list[dict[str, Any]] = []
        parents = self._parents() if self._population else []
        if parents:
            rng = self._rng
            population += self._offspring(
                lambda: mutate(rng.choice(parents), self._choices, rng, self.mutation_prob), self.mutation_num, taken)
            population += self._offspring(
                lambda: crossover(rng.choice(parents), rng.choice(parents), rng), self.crossover_num, taken)
        while len(population) < self.population_size:
            population.append(self._random_candidate(taken))
        self._commit(taken)
        return population

    def _offspring(self, generate: Callable[[], dict[str, Any]], num: int,
                   taken: set[tuple[Any, ...]]) -> list[dict[str, Any]]:
        """Up to ``num`` new feasible candidates from ``generate`` in at most 10x ``num`` tries.

        DetNAS decrements its try budget only on success (search.py:192-198, 214-220), so a tight
        limit could loop forever; here every try counts.
        """
        found: list[dict[str, Any]] = []
        for _ in range(_TRIES_PER_OFFSPRING * num):
            if len(found) == num:
                break
            arch = self._find(generate, 1, taken)
            if arch is not None:
                found.append(arch)
        return found
