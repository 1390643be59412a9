"""The NNI tuners, driven the way NNI's dispatcher drives them (no manager needed)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import nni
import pytest

from hrnas_automl.arch import choices_of
from hrnas_automl.cost import arch_cost
from hrnas_automl.cost.latency import latency_table
from hrnas_automl.nni.compat import STRATEGY_KEY, to_nni_search_space
from hrnas_automl.nni.experiment import check_tuner, dispatcher_error
from tests import EXAMPLES
from hrnas_automl.nni.tuners import MultiStrategyTuner, StrategyTuner
from hrnas_automl.strategies import RandomSearch

SPACE_ARGS = {"num_classes": 10}
SHAPE = (3, 32, 32)
LIMIT = 6.9e6


def fitness(arch: dict) -> float:
    """Synthetic score: how many blocks use the 5x5 op."""
    return sum(v == "k5" for v in arch.values()) / len(arch)


def drive(tuner: StrategyTuner, n_trials: int, concurrency: int) -> list[dict]:
    """Request `concurrency` trials, then one more per finished trial, as the NNI manager does."""
    sent: list[tuple[int, dict]] = []
    deferred_sends: list[tuple[int, dict]] = []
    next_id = 0

    def request(k: int) -> None:
        nonlocal next_id
        ids = list(range(next_id, next_id + k))
        next_id += k
        params = tuner.generate_multiple_parameters(ids, st_callback=lambda i, p: deferred_sends.append((i, p)))
        sent.extend(zip(ids, params))

    tuner.update_search_space(to_nni_search_space(choices_of(tuner.space_name, **tuner.space_args)))
    request(concurrency)
    done = 0
    while done < n_trials:
        sent.extend(deferred_sends)
        deferred_sends.clear()
        pid, arch = sent[done]
        tuner.receive_trial_result(pid, arch, {"default": fitness(arch), "macs": 0})
        tuner.trial_end(pid, True)
        done += 1
        request(1)
    return [arch for _, arch in sent[:n_trials]]


def test_evolution_tuner_defers_between_generations_and_stays_under_limit() -> None:
    args = dict(space="detnas-small", space_args=SPACE_ARGS, seed=0, max_macs=LIMIT, input_shape=list(SHAPE),
                population_size=4, select_num=2, mutation_num=1, crossover_num=1)
    archs = drive(StrategyTuner(strategy="evolution", **args), n_trials=12, concurrency=3)
    assert len(archs) == 12
    assert len({json.dumps(a, sort_keys=True) for a in archs}) == 12  # duplicates rejected
    assert all(arch_cost("detnas-small", a, SHAPE, **SPACE_ARGS).macs <= LIMIT for a in archs)
    # same seed, same proposals
    assert archs == drive(StrategyTuner(strategy="evolution", **args), n_trials=12, concurrency=3)


def test_failed_trial_does_not_stall_the_generation() -> None:
    tuner = StrategyTuner(strategy="evolution", space="detnas-small", seed=1, population_size=2, select_num=1,
                          mutation_num=1, crossover_num=0)
    tuner.update_search_space(to_nni_search_space(choices_of("detnas-small")))
    sends: list = []
    first = tuner.generate_multiple_parameters([0, 1, 2], st_callback=lambda i, p: sends.append((i, p)))
    assert len(first) == 2  # the third request waits for generation 0
    tuner.receive_trial_result(0, first[0], 0.5)
    tuner.trial_end(1, False)  # trial 1 crashed without a final result
    assert [i for i, _ in sends] == [2]


def test_random_tuner_minimize_mode_negates_scores() -> None:
    tuner = StrategyTuner(strategy="random", space="detnas-small", seed=0, optimize_mode="minimize")
    tuner.update_search_space(to_nni_search_space(choices_of("detnas-small")))
    arch = tuner.generate_parameters(0)
    tuner.receive_trial_result(0, arch, {"default": 3.0})
    assert tuner.strategy.best() == (arch, -3.0)


def test_search_space_mismatch_is_reported_with_the_fix() -> None:
    tuner = StrategyTuner(strategy="random", space="detnas-small")
    stale = to_nni_search_space(choices_of("detnas-small"))
    stale["s1_b0"]["_value"] = ["k3", "k5"]
    with pytest.raises(ValueError, match=r"differs from space detnas-small at label 's1_b0'.*export-space"):
        tuner.update_search_space(stale)


def test_no_more_trial_error_is_nni_s() -> None:
    tuner = StrategyTuner(strategy="evolution", space="detnas-small", population_size=1, select_num=1, mutation_num=0,
                          crossover_num=0)
    tuner.update_search_space(to_nni_search_space(choices_of("detnas-small")))
    tuner.generate_parameters(0)
    with pytest.raises(nni.NoMoreTrialError):
        tuner.generate_parameters(1)


def test_ranet_tuner_never_proposes_a_network_whose_first_exit_is_over_the_budget() -> None:
    # issue 18: a RANet whose first exit alone costs more than the trial's budget_macs fails every sample
    from hrnas_automl.arch import resolve_space
    from hrnas_automl.tasks.early_exit import early_exit_costs

    budget, shape = 1.2e7, (3, 32, 32)  # the space's first exits span 3.6e6 to 5.5e7 MACs
    args = dict(space="ranet", space_args={"num_classes": 4}, seed=0, max_first_exit_macs=budget,
                input_shape=list(shape))
    for strategy, options in (("random", {}), ("evolution", dict(population_size=2, select_num=1, mutation_num=1,
                                                                 crossover_num=0))):
        archs = drive(StrategyTuner(strategy=strategy, **args, **options), n_trials=4, concurrency=2)
        space = resolve_space("ranet", num_classes=4)
        assert len(archs) == 4 and all(early_exit_costs(space.freeze(a), shape)[0] <= budget for a in archs)


def test_limits_given_as_yaml_strings_are_numbers_or_a_clear_error() -> None:
    tuner = StrategyTuner(strategy="random", space="detnas-small", max_macs="7e6", input_shape=[3, 32, 32],
                          space_args=SPACE_ARGS)
    tuner.update_search_space(to_nni_search_space(choices_of("detnas-small")))
    assert arch_cost("detnas-small", tuner.generate_parameters(0), SHAPE, **SPACE_ARGS).macs <= 7e6  # "7e6": PyYAML
    with pytest.raises(ValueError, match="classArgs max_macs must be a number, got 'lots'"):
        StrategyTuner(strategy="random", space="detnas-small", max_macs="lots")


def test_evolution_tuner_under_an_onnxruntime_latency_limit_proposes_under_it() -> None:
    """classArgs latency_backend: onnxruntime: the limit is read from the table of ONNX Runtime timings (the one
    examples/detnas/evolution_ort_latency.yml uses: same space, input and threads, so compiled once per session)."""
    table = latency_table("detnas-small", SHAPE, threads=1, backend="onnxruntime", **SPACE_ARGS)
    (lo,), (hi,) = table.bounds()
    limit = lo + (hi - lo) / 3
    tuner = StrategyTuner(strategy="evolution", space="detnas-small", seed=0, max_latency_ms=limit,
                          latency_backend="onnxruntime", latency_threads=1, input_shape=list(SHAPE),
                          space_args=SPACE_ARGS, population_size=2, select_num=1, mutation_num=1, crossover_num=0)
    proposals = drive(tuner, n_trials=6, concurrency=2)
    assert len(proposals) == 6 and all(table.evaluate(arch)[0] <= limit for arch in proposals)
    unconstrained = RandomSearch(choices_of("detnas-small", **SPACE_ARGS), seed=0)
    assert any(table.evaluate(unconstrained.ask())[0] > limit for _ in range(20))  # the limit binds
    with pytest.raises(ValueError, match=r"^unknown latency backend 'ort'; use one of: torch, onnxruntime$"):
        StrategyTuner(strategy="evolution", space="detnas-small", max_latency_ms=1.0, latency_backend="ort")


def test_dispatcher_error_is_the_last_line_of_the_exception_that_ended_it(tmp_path: Path) -> None:
    log = tmp_path / "dispatcher.log"
    assert dispatcher_error(log) is None  # not written yet
    died = ("[2026-11-29 20:03:52] ERROR (nni.runtime.msg_dispatcher_base/Thread-1 (command_queue_worker)) bad\n"
            "Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n    g()\n"
            "TypeError: Evolution.__init__() got an unexpected keyword argument 'sed'\n")
    log.write_text("[2026-11-29 20:03:40] INFO (nni.runtime.msg_dispatcher_base/MainThread) Dispatcher started\n"
                   "[2026-11-29 20:03:41] ERROR (hrnas_automl.nni.optuna_tuner/Thread-1) trial 3: stored as FAIL\n")
    assert dispatcher_error(log) is None  # a tuner's own error line is not the dispatcher's end
    log.write_text(log.read_text() + died)
    assert dispatcher_error(log) == "TypeError: Evolution.__init__() got an unexpected keyword argument 'sed'"
    # resumed: a new dispatcher started after the old one died
    log.write_text(log.read_text() + "[2026-11-29 21:00:00] INFO (nni.runtime.msg_dispatcher_base/MainThread) "
                   "Dispatcher started\n")
    assert dispatcher_error(log) is None
    log.write_text(log.read_text() + "[2026-11-29 21:00:01] ERROR (nni.main/MainThread) cannot build\n"
                   "ValueError: cannot build\n")
    assert dispatcher_error(log) == "ValueError: cannot build"


@pytest.mark.parametrize("config", sorted(p.relative_to(EXAMPLES) for p in EXAMPLES.glob("*/*.yml")
                                          if "\ntuner:" in p.read_text()), ids=str)
def test_every_example_tuner_passes_the_check_before_nnictl(config: Path) -> None:
    check_tuner(EXAMPLES / config)  # builds it in-process: no error, and no storage touched (OptunaTuner)


# -- several strategies side by side ----------------------------------------------------------

def multi(tmp_path: Path, *extra: dict, space: str = "detnas-small", **kwargs: object) -> MultiStrategyTuner:
    return MultiStrategyTuner(space, space_args=SPACE_ARGS if space == "detnas-small" else None, strategies=[
        {"strategy": "random", "seed": 0},
        {"strategy": "evolution", "seed": 0, "population_size": 4, "select_num": 2, "mutation_num": 1,
         "crossover_num": 1},
        {"strategy": "optuna", "seed": 0, "sampler": "tpe", "objectives": "metric", "study_name": "multi",
         "storage": f"sqlite:///{tmp_path / 'multi.db'}"},
        *extra], **kwargs)


def test_strategies_side_by_side_get_equal_turns_their_own_results_and_a_tag(tmp_path: Path) -> None:
    tuner = multi(tmp_path, {"strategy": "nni:TPE", "seed": 0})
    assert list(tuner.tuners) == ["random", "evolution", "optuna", "tpe"]
    archs = drive(tuner, n_trials=32, concurrency=3)
    by_tag: dict[str, list[dict]] = {}
    for arch in archs:
        by_tag.setdefault(arch.pop(STRATEGY_KEY), []).append(arch)
    assert {tag: len(a) for tag, a in by_tag.items()} == dict.fromkeys(tuner.tuners, 8)  # fair
    # isolated: each strategy was told its own trials' results only
    for tag in ("random", "evolution"):
        assert [a for a, _ in tuner.tuners[tag].strategy.history] == by_tag[tag]
    assert [t.params for t in tuner.tuners["optuna"].study.trials if t.values] == by_tag["optuna"]
    assert {len(r) for r in tuner.tuners["tpe"]._history.values()} == {8}  # NNI's TPE: a result per label and trial
    # and so evolution proposes what it proposes alone, with the same seed and results (two generations of 4)
    alone = drive(StrategyTuner(strategy="evolution", space="detnas-small", space_args=SPACE_ARGS, seed=0,
                                population_size=4, select_num=2, mutation_num=1, crossover_num=1), 8, 1)
    assert by_tag["evolution"] == alone


def test_the_search_space_may_list_the_tags_in_order(tmp_path: Path) -> None:
    tuner = multi(tmp_path)
    space = to_nni_search_space(choices_of("detnas-small", **SPACE_ARGS))
    tags = {"_type": "choice", "_value": ["random", "evolution", "optuna"]}
    tuner.update_search_space({**space, STRATEGY_KEY: tags})
    with pytest.raises(ValueError, match=r"'strategy' entry must be .*\[\"random\", \"evolution\", \"optuna\"\]\}.*"
                       r"regenerate it with `hrnas-automl export-space detnas-small --strategies random,evolution,opt"):
        tuner.update_search_space({**space, STRATEGY_KEY: {"_type": "choice", "_value": ["random", "optuna"]}})


@pytest.mark.parametrize(("extra", "match"), [
    ({"strategy": "random", "seed": 1}, "two strategies are tagged 'random'; give each a distinct 'tag'"),
    ({"strategy": "nni:Anneal"}, "strategy 'nni:Anneal': NNI's tuner cannot be built here .*hyperopt"),
    ({"strategy": "nni:Nope"}, "strategy 'nni:Nope': NNI's tuner cannot be built here"),
    ({"strategy": "random", "tag": "r2", "max_macs": 1}, "strategy 'r2' sets 'max_macs', which the strategies share"),
    ({"strategy": "evolution", "tag": "e2", "population": 4}, "unknown classArgs key 'population'"),
    ({"strategy": "optuna", "tag": "o2", "study_name": "multi"}, "two optuna strategies would share a study"),
    ({"tag": "x"}, "each strategies entry must be a mapping with a 'strategy' name"),
])
def test_bad_strategies_are_one_line_naming_the_fix(tmp_path: Path, extra: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        multi(tmp_path, extra)


def test_optuna_and_nni_tuners_are_asked_again_past_the_limit(tmp_path: Path) -> None:
    tuner = MultiStrategyTuner("detnas-small", space_args=SPACE_ARGS, max_macs=LIMIT, input_shape=list(SHAPE),
                               strategies=[{"strategy": "optuna", "seed": 0, "objectives": "metric", "study_name": "l",
                                            "storage": f"sqlite:///{tmp_path / 'l.db'}"},
                                           {"strategy": "nni:TPE", "seed": 0}])
    archs = drive(tuner, n_trials=4, concurrency=2)
    for arch in archs:
        arch.pop(STRATEGY_KEY)
        assert arch_cost("detnas-small", arch, SHAPE, **SPACE_ARGS).macs <= LIMIT
    over = [t for t in tuner.tuners["optuna"].study.trials if t.state.name == "FAIL"]
    assert over and all(arch_cost("detnas-small", t.params, SHAPE, **SPACE_ARGS).macs > LIMIT for t in over)


def test_an_empty_strategies_list_is_refused() -> None:
    with pytest.raises(ValueError, match="strategies must be a non-empty list of mappings"):
        MultiStrategyTuner("detnas-small", strategies=[])


def test_nni_tuners_are_asked_again_for_a_network_they_had(caplog: pytest.LogCaptureFixture) -> None:
    from hrnas_automl.spaces.lite_hrnet import canonical_arch
    from tests.strategies.test_strategies import SMALL_LITE_HRNET  # 512 samples, 12 networks

    tuner = MultiStrategyTuner("lite-hrnet", strategies=[{"strategy": "nni:Random", "seed": 0},
                                                         {"strategy": "nni:TPE", "seed": 0}])
    tuner.update_search_space(to_nni_search_space(SMALL_LITE_HRNET))
    with caplog.at_level(logging.INFO, logger="hrnas_automl.nni.tuners"):
        sent = tuner.generate_multiple_parameters(list(range(20)))
    asked_again = {tag for tag in ("random", "tpe") if f"strategy {tag} suggested a network it had" in caplog.text}
    assert asked_again == {"random", "tpe"}  # without the host, both would have run a network twice
    for pid, arch in enumerate(sent):
        tuner.receive_trial_result(pid, arch, {"default": sum(v == "ccw" for v in arch.values()) / 20})
    for tag in ("random", "tpe"):
        mine = [canonical_arch({k: v for k, v in a.items() if k != STRATEGY_KEY}) for a in sent
                if a[STRATEGY_KEY] == tag]
        assert len(mine) == 10 and len({json.dumps(a, sort_keys=True) for a in mine}) == 10
