"""Search strategies (hrnas_automl.strategies): the ask/tell contract, constraints, and DetNAS's evolution.

Everything here runs on synthetic fitness and cost functions over plain dicts; no network is built.
"""
from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from hrnas_automl.strategies import (
    Evolution,
    InfeasibleConstraintError,
    RandomSearch,
    SpaceExhaustedError,
    Strategy,
    crossover,
    mutate,
    random_arch,
    search,
)

OPS = ["k3", "k5", "k7", "xception"]
# Mixed JSON primitives, so state_dict round trips and dedup keys are exercised on every kind of value.
CHOICES: dict[str, list[Any]] = {
    **{f"s1_b{i}": OPS for i in range(4)},
    "width": [0.5, 0.75, 1.0],
    "depth": [1, 2, 3],
    "se": [True, False],
    "pool": [None, "avg", "max"],
}

Factory = Callable[..., Strategy]
FACTORIES: dict[str, Factory] = {
    "random": lambda choices=CHOICES, **kw: RandomSearch(choices, **kw),
    "evolution": lambda choices=CHOICES, **kw: Evolution(
        choices, population_size=6, select_num=2, mutation_num=2, crossover_num=2, **kw),
}
strategies = pytest.mark.parametrize("factory", list(FACTORIES.values()), ids=list(FACTORIES))


def index_fitness(arch: dict[str, Any]) -> float:
    """Deterministic score: a label-weighted sum of candidate indices (higher index, higher score)."""
    return float(sum((i + 1) * CHOICES[label].index(value) for i, (label, value) in enumerate(arch.items())))


def run(strategy: Strategy, n: int, fitness: Callable[[dict[str, Any]], float] = index_fitness) -> list[dict]:
    """Ask/tell ``n`` times, telling each arch at once; return the proposals in order."""
    proposals = []
    for _ in range(n):
        arch = strategy.ask()
        assert arch is not None
        proposals.append(arch)
        strategy.tell(arch, fitness(arch))
    return proposals


def key(arch: dict[str, Any]) -> str:
    return json.dumps(arch, sort_keys=True)


# -- contract, over both strategies -------------------------------------------------------------

@strategies
def test_same_seed_same_proposals(factory: Factory) -> None:
    assert run(factory(seed=3), 30) == run(factory(seed=3), 30)


@strategies
def test_different_seed_different_proposals(factory: Factory) -> None:
    assert run(factory(seed=0), 10) != run(factory(seed=1), 10)


@strategies
def test_proposals_are_valid_and_never_repeat(factory: Factory) -> None:
    proposals = run(factory(seed=0), 60)
    for arch in proposals:
        assert list(arch) == list(CHOICES)
        assert all(arch[label] in CHOICES[label] for label in CHOICES)
    assert len({key(arch) for arch in proposals}) == len(proposals)


@strategies
def test_state_dict_resumes_the_same_search(factory: Factory) -> None:
    original = factory(seed=5)
    run(original, 9)
    pending = [original.ask() for _ in range(3)]  # handed out, not told yet: part of the state
    state = json.loads(json.dumps(original.state_dict()))

    resumed = factory(seed=123)
    resumed.load_state_dict(state)
    assert resumed.ask() == original.ask()  # evolution: None on both, the generation's results are pending
    for strategy in (original, resumed):
        for arch in pending:
            strategy.tell(arch, index_fitness(arch))
    assert run(resumed, 25) == run(original, 25)
    assert resumed.history == original.history
    assert resumed.best() == original.best()


@strategies
def test_load_state_dict_rejects_other_choices(factory: Factory) -> None:
    state = factory(seed=0).state_dict()
    with pytest.raises(ValueError, match="state was saved for different choices"):
        factory(choices={**CHOICES, "depth": [1, 2]}, seed=0).load_state_dict(state)


def test_load_state_dict_rejects_another_strategy() -> None:
    state = FACTORIES["random"](seed=0).state_dict()
    with pytest.raises(ValueError, match="saved by strategy 'RandomSearch', cannot load it into Evolution"):
        FACTORIES["evolution"](seed=0).load_state_dict(state)


@strategies
def test_history_best_and_failed_scores(factory: Factory) -> None:
    strategy = factory(seed=0)
    a, b, c = (strategy.ask() for _ in range(3))
    strategy.tell(a, 1.0)
    strategy.tell(b, None)
    strategy.tell(c, math.nan)  # a diverged run counts as failed
    assert strategy.history == [(a, 1.0), (b, None), (c, None)]
    assert strategy.best() == (a, 1.0)


@strategies
def test_told_arch_that_was_never_proposed_is_recorded_and_not_proposed(factory: Factory) -> None:
    tiny = {"a": [0, 1], "b": ["x", "y"], "c": [0.5, 1.0]}  # 8 archs
    strategy = factory(choices=tiny, seed=0)
    strategy.tell({"c": 1.0, "b": "y", "a": 1}, 0.5)  # label order differs from choices: same arch
    assert strategy.history == [({"a": 1, "b": "y", "c": 1.0}, 0.5)]
    proposals = [strategy.ask() for _ in range(6)]
    assert {"a": 1, "b": "y", "c": 1.0} not in proposals
    assert len({key(arch) for arch in proposals}) == 6


@strategies
@pytest.mark.parametrize(("arch", "match"), [
    ({**{label: c[0] for label, c in CHOICES.items()}, "s9_b0": "k3"}, "unknown label 's9_b0'"),
    ({label: c[0] for label, c in CHOICES.items() if label != "depth"}, "is missing label 'depth'"),
    ({**{label: c[0] for label, c in CHOICES.items()}, "depth": 7},
     r"label 'depth' of these choices has value 7; allowed values: "),
])
def test_tell_rejects_archs_outside_the_space(factory: Factory, arch: dict[str, Any], match: str) -> None:
    strategy = factory(seed=0)
    with pytest.raises(ValueError, match=match):
        strategy.tell(arch, 1.0)
    assert strategy.history == []


# -- constraints and bounded sampling ------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda choices, **kw: RandomSearch(choices, **kw),
    lambda choices, **kw: Evolution(choices, population_size=10, select_num=3, mutation_num=4, crossover_num=4, **kw),
], ids=["random", "evolution"])
def test_every_proposal_satisfies_the_constraint(make: Factory) -> None:
    choices = {f"b{i}": OPS for i in range(12)}
    wrng = random.Random(7)
    weights = {label: {op: wrng.uniform(0, 10) for op in OPS} for label in choices}

    def cost(arch: dict[str, Any]) -> float:
        return sum(weights[label][value] for label, value in arch.items())

    limit = 55.0  # below the mean cost (~60): most random archs are infeasible
    rejected = []

    def constraint(arch: dict[str, Any]) -> bool:
        if cost(arch) > limit:
            rejected.append(arch)
            return False
        return True

    strategy = make(choices, seed=0, constraint=constraint)
    proposals = run(strategy, 60, fitness=cost)  # maximising cost pushes evolution against the limit
    assert all(cost(arch) <= limit for arch in proposals)
    assert rejected  # the limit was binding
    if isinstance(strategy, Evolution):
        assert strategy.generation == 5


@strategies
def test_impossible_constraint_fails_fast_naming_the_attempts(factory: Factory) -> None:
    strategy = factory(seed=0, constraint=lambda arch: False)
    start = time.perf_counter()
    with pytest.raises(InfeasibleConstraintError, match=r"in 10000 random draws .*loosen the constraint's limit"):
        strategy.ask()
    assert time.perf_counter() - start < 5.0


def test_max_attempts_caps_the_draws() -> None:
    draws = []
    strategy = RandomSearch(CHOICES, constraint=lambda arch: draws.append(arch) and False, max_attempts=37)
    with pytest.raises(InfeasibleConstraintError, match="in 37 random draws"):
        strategy.ask()
    assert len(draws) == 37


def test_random_search_raises_when_the_space_is_exhausted() -> None:
    tiny = {"a": [0, 1], "b": ["x", "y"]}
    strategy = RandomSearch(tiny, seed=0)
    proposals = run(strategy, 4, fitness=lambda arch: 0.0)
    assert len({key(arch) for arch in proposals}) == 4
    with pytest.raises(SpaceExhaustedError, match="all 4 architectures of the space have been proposed"):
        strategy.ask()


def test_random_search_without_dedup_repeats() -> None:
    strategy = RandomSearch({"a": [0, 1]}, seed=0, dedup=False)
    proposals = [strategy.ask() for _ in range(10)]
    assert {arch["a"] for arch in proposals} == {0, 1}


def test_evolution_population_larger_than_space_raises() -> None:
    strategy = Evolution({"a": [0, 1], "b": [0, 1]}, population_size=5, select_num=1, mutation_num=0, crossover_num=0)
    with pytest.raises(SpaceExhaustedError, match="all 4 architectures"):
        strategy.ask()


# A small Lite-HRNet space where most samples repeat a network: stage 1 has 2 or 3 modules (12 networks), the other
# free labels are block types of modules past their stage's depth. 512 samples, 12 networks.
SMALL_LITE_HRNET: dict[str, list[Any]] = {
    "width": [20], "reduce_ratio": [8], "s1_modules": [2, 3], **{f"s1_m{i}": ["naive", "ccw"] for i in range(3)},
    "s2_modules": [4], **{f"s2_m{i}": ["naive"] if i < 4 else ["naive", "ccw"] for i in range(8)},
    "s3_modules": [2], "s3_m0": ["ccw"], "s3_m1": ["ccw"], "s3_m2": ["naive", "ccw"],
}


@strategies
def test_no_two_proposals_build_one_network(factory: Factory) -> None:
    from hrnas_automl.spaces.lite_hrnet import canonical_arch

    def fitness(arch: dict[str, Any]) -> float:
        return float(sum(value == "ccw" for value in canonical_arch(arch).values()))

    strategy = factory(SMALL_LITE_HRNET, seed=0, canonical=canonical_arch, max_attempts=2000)
    proposals = run(strategy, 12, fitness)
    assert len({key(canonical_arch(arch)) for arch in proposals}) == 12
    with pytest.raises(SpaceExhaustedError):  # every network is proposed: nothing new, although 500 samples are left
        run(strategy, 6, fitness)
    plain = run(factory(SMALL_LITE_HRNET, seed=0), 12, fitness)  # by sample: the same networks again
    assert len({key(canonical_arch(arch)) for arch in plain}) < 12


# -- evolution ----------------------------------------------------------------------------------

def test_evolution_is_generation_synchronous() -> None:
    strategy = Evolution(CHOICES, population_size=4, select_num=2, mutation_num=1, crossover_num=1, seed=0)
    assert strategy.generation == 0 and strategy.population == []
    gen0 = [strategy.ask() for _ in range(4)]
    assert None not in gen0 and gen0 == strategy.population
    assert strategy.ask() is None
    for arch in gen0[:3]:
        strategy.tell(arch, index_fitness(arch))
    assert strategy.ask() is None  # one result still pending
    strategy.tell(gen0[3], None)  # a failure completes the generation too
    first = strategy.ask()
    assert strategy.generation == 1
    assert first == strategy.population[0]
    assert all(arch not in gen0 for arch in strategy.population)


def test_evolution_breeds_from_the_top_scored_archs_excluding_failures() -> None:
    choices = {f"b{i}": OPS for i in range(20)}
    strategy = Evolution(choices, population_size=8, select_num=1, mutation_num=7, crossover_num=0,
                         mutation_prob=0.1, seed=4)
    gen0 = [strategy.ask() for _ in range(8)]
    ranked = sorted(gen0, key=lambda arch: sum(v == "k3" for v in arch.values()), reverse=True)
    strategy.tell(ranked[0], None)  # the best one failed: it must not be a parent
    for rank, arch in enumerate(ranked[1:]):
        strategy.tell(arch, float(-rank))
    parent = ranked[1]

    def distance(a: dict[str, Any], b: dict[str, Any]) -> int:
        return sum(a[label] != b[label] for label in a)

    gen1 = [strategy.ask() for _ in range(8)]
    # A mutant re-draws ~2 of 20 genes; an unrelated arch differs in ~15.
    assert all(1 <= distance(mutant, parent) <= 8 for mutant in gen1[:7])
    assert distance(gen1[7], parent) > 8  # the random fill
    for arch in gen1:
        strategy.tell(arch, -50.0 if arch is gen1[7] else -100.0)
    # Parents are ranked over all generations, not just the last one: still the same parent.
    gen2 = [strategy.ask() for _ in range(7)]
    assert strategy.generation == 2
    assert all(1 <= distance(mutant, parent) <= 8 for mutant in gen2)


def test_evolution_fills_with_random_archs_when_offspring_cannot_be_new() -> None:
    # One parent: its crossovers are the parent itself (already seen), so they are replaced by random archs.
    tiny = {f"b{i}": [0, 1] for i in range(3)}
    strategy = Evolution(tiny, population_size=3, select_num=1, mutation_num=0, crossover_num=3, seed=0)
    gen0 = run(strategy, 3, fitness=lambda arch: float(sum(arch.values())))
    gen1 = run(strategy, 3, fitness=lambda arch: 0.0)
    assert strategy.generation == 1
    assert len({key(arch) for arch in gen0 + gen1}) == 6


def test_evolution_beats_its_first_generation_and_random_search() -> None:
    # DetNAS's setting scaled down: 20 blocks x 4 ops, 10 generations of 20; fitness = genes matching a
    # hidden target. Random archs match ~5 (sd ~1.9); a working evolution climbs to 14-20 within 200
    # evaluations, while 200 random evaluations reach ~11.
    choices = {f"b{i}": OPS for i in range(20)}
    for seed in range(5):
        target = random_arch(choices, random.Random(1000 + seed))

        def fitness(arch: dict[str, Any]) -> float:
            return float(sum(arch[label] == target[label] for label in target))

        evolution = Evolution(choices, population_size=20, select_num=5, mutation_num=8, crossover_num=8, seed=seed)
        first_generation = search(evolution, fitness, 20)[1]
        evolved = search(evolution, fitness, 180)[1]
        assert evolution.generation == 9
        random_best = search(RandomSearch(choices, seed=seed), fitness, 200)[1]
        assert evolved >= first_generation + 4, (seed, first_generation, evolved)
        assert evolved >= random_best + 2, (seed, random_best, evolved)


# -- genetic operators ----------------------------------------------------------------------------

def test_random_arch_follows_choices_order_and_seed() -> None:
    arch = random_arch(CHOICES, random.Random(0))
    assert list(arch) == list(CHOICES)
    assert arch == random_arch(CHOICES, random.Random(0))


def test_mutate_with_prob_0_returns_the_parent() -> None:
    rng = random.Random(0)
    parent = random_arch(CHOICES, rng)
    assert all(mutate(parent, CHOICES, rng, 0.0) == parent for _ in range(50))


def test_mutate_with_prob_1_redraws_every_gene() -> None:
    rng = random.Random(0)
    parent = {label: c[0] for label, c in CHOICES.items()}
    children = [mutate(parent, CHOICES, rng, 1.0) for _ in range(400)]
    for label, candidates in CHOICES.items():
        values = [child[label] for child in children]
        assert set(values) == set(candidates)  # every candidate is drawn...
        kept = values.count(parent[label]) / len(values)
        assert abs(kept - 1 / len(candidates)) < 0.1  # ...and the old value only at its uniform rate


def test_crossover_takes_each_gene_from_a_parent_and_mixes_both() -> None:
    rng = random.Random(0)
    a = {label: c[0] for label, c in CHOICES.items()}
    b = {label: c[-1] for label, c in CHOICES.items()}
    children = [crossover(a, b, rng) for _ in range(50)]
    for child in children:
        assert list(child) == list(CHOICES)
        assert all(child[label] in (a[label], b[label]) for label in CHOICES)
    assert any(child[label] == a[label] for child in children for label in CHOICES)
    assert any(child[label] == b[label] for child in children for label in CHOICES)
    assert any(child not in (a, b) for child in children)


def test_crossover_rejects_parents_with_different_labels() -> None:
    with pytest.raises(ValueError, match="same labels"):
        crossover({"a": 0}, {"b": 0}, random.Random(0))


# -- search() -------------------------------------------------------------------------------------

def test_search_runs_n_evaluations_and_returns_the_best() -> None:
    strategy = Evolution(CHOICES, population_size=6, select_num=2, mutation_num=2, crossover_num=2, seed=0)
    calls = []

    def objective(arch: dict[str, Any]) -> float:
        calls.append(arch)
        return index_fitness(arch)

    arch, score = search(strategy, objective, 17)
    assert len(calls) == 17 and len(strategy.history) == 17
    assert score == max(index_fitness(a) for a in calls)
    assert arch in calls and index_fitness(arch) == score


def test_search_raises_when_every_evaluation_fails() -> None:
    with pytest.raises(RuntimeError, match="returned None .* for all 3 archs"):
        search(RandomSearch(CHOICES), lambda arch: None, 3)


def test_search_raises_when_results_are_pending_outside() -> None:
    strategy = Evolution(CHOICES, population_size=2, select_num=1, mutation_num=1, crossover_num=1)
    strategy.ask(), strategy.ask()
    with pytest.raises(RuntimeError, match=r"ask\(\) returned None"):
        search(strategy, index_fitness, 1)


# -- argument validation --------------------------------------------------------------------------

@pytest.mark.parametrize(("make", "match"), [
    (lambda: RandomSearch({}), r"choices must be a non-empty mapping .*got \{\}"),
    (lambda: RandomSearch({"a": []}), r"choices\['a'\] must be a non-empty list of candidates, got \[\]"),
    (lambda: RandomSearch({"a": "k3"}), r"choices\['a'\] must be a non-empty list of candidates, got 'k3'"),
    (lambda: RandomSearch({"a": [[1, 2]]}), r"choices\['a'\] candidates must be JSON primitives .*got \[1, 2\]"),
    (lambda: RandomSearch({1: [0]}), "choices labels must be strings, got 1"),
    (lambda: RandomSearch(CHOICES, max_attempts=0), "max_attempts must be an int >= 1, got 0"),
    (lambda: RandomSearch(CHOICES, constraint=3), "constraint must be a callable .* got 3"),
    (lambda: Evolution(CHOICES, population_size=0), "population_size must be an int >= 1, got 0"),
    (lambda: Evolution(CHOICES, select_num=0), "select_num must be an int >= 1, got 0"),
    (lambda: Evolution(CHOICES, population_size=5, select_num=6, mutation_num=0, crossover_num=0),
     r"select_num must be <= population_size \(5\), got 6"),
    (lambda: Evolution(CHOICES, mutation_num=-1), "mutation_num must be an int >= 0, got -1"),
    (lambda: Evolution(CHOICES, crossover_num=-1), "crossover_num must be an int >= 0, got -1"),
    (lambda: Evolution(CHOICES, population_size=10, select_num=2, mutation_num=6, crossover_num=5),
     r"mutation_num \+ crossover_num must be <= population_size \(10\), got 6 \+ 5 = 11"),
    (lambda: Evolution(CHOICES, mutation_prob=1.5), r"mutation_prob must be a probability in \[0, 1\], got 1.5"),
    (lambda: mutate({"a": 0}, {"a": [0]}, random.Random(0), -0.1), r"prob must be a probability in \[0, 1\], got -0.1"),
    (lambda: RandomSearch(CHOICES).tell(random_arch(CHOICES, random.Random(0)), "high"),
     "score must be a real number or None, got 'high'"),
    (lambda: search(RandomSearch(CHOICES), index_fitness, 0), "n must be an int >= 1, got 0"),
])
def test_invalid_arguments_raise_value_error(make: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_constructor_arguments_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        RandomSearch(CHOICES, 0)  # type: ignore[misc]
    with pytest.raises(TypeError):
        Evolution(CHOICES, 50)  # type: ignore[misc]
