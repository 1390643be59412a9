"""``nnictl stop`` + ``nnictl resume`` in-process: the tuners are driven the way NNI's manager and dispatcher drive
them (trialConcurrency 1), stopped after some trials, and a new tuner is resumed the way NNI 3.0 resumes one
(load_checkpoint, the search space, import_data of every finished trial, the trial running at the stop run again
with its result through import_data). Its proposals must be those of an uninterrupted run with the same seed."""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hrnas_automl.arch import choices_of
from hrnas_automl.nni.compat import STRATEGY_KEY, to_nni_search_space
from hrnas_automl.nni.optuna_tuner import OptunaTuner
from hrnas_automl.nni.tuners import MultiStrategyTuner, StrategyTuner

SPACE = to_nni_search_space(choices_of("detnas-small"))
OPS = {"k3": 0.1, "k5": 0.4, "k7": 0.2, "xception": 0.3}


def fitness(arch: dict[str, Any]) -> dict[str, float]:
    """A synthetic final result with few ties: position-weighted op scores (of the labels: not the strategy tag)."""
    ops = [v for k, v in arch.items() if k != STRATEGY_KEY]
    return {"default": sum(OPS[v] * (i + 1) for i, v in enumerate(ops)), "macs": 1.0}


class Manager:
    """NNI's manager + dispatcher at trialConcurrency 1, as far as a tuner sees them (nni_node nnimanager.js,
    nni/runtime/msg_dispatcher.py): ``trialConcurrency`` trials are requested at the start and one more whenever
    a trial ends; trials run one at a time in the order they were sent; a trial's final result reaches the tuner
    before its end. A stopped experiment loses the tuner; ``resume`` builds a new one."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make, self.next_id = make, 0
        self.waiting: deque[tuple[int, dict[str, Any]]] = deque()
        self.finished: list[tuple[int, dict[str, Any]]] = []  # every trial run, in order
        self.rerun: set[int] = set()
        self.start()

    def start(self, resumed: bool = False) -> None:
        self.tuner = self.make()
        if resumed:
            self.tuner.load_checkpoint()
        self.tuner.update_search_space(SPACE)
        if resumed:
            self.tuner.import_data([{"parameter": arch, "value": fitness(arch)} for _, arch in self.finished])
        self.request(1)

    def request(self, n: int) -> None:
        ids = list(range(self.next_id, self.next_id + n))
        self.next_id += n
        sent = self.tuner.generate_multiple_parameters(ids, st_callback=lambda i, p: self.waiting.append((i, p)))
        self.waiting.extend(zip(ids, sent))

    def run(self, n: int) -> None:
        """Run the next ``n`` trials to their end."""
        for _ in range(n):
            pid, arch = self.waiting.popleft()
            if pid in self.rerun:  # NNI routes a re-run trial's result to import_data and drops its end
                self.tuner.import_data([{"parameter": arch, "value": fitness(arch)}])
            else:
                self.tuner.receive_trial_result(pid, arch, fitness(arch))
                self.tuner.trial_end(pid, True)
            self.finished.append((pid, arch))
            self.request(1)

    def stop_and_resume(self, running: bool) -> None:
        """``nnictl stop`` while the next trial runs (NNI runs it again at the resume) or before it started (it is
        lost); then ``nnictl resume``, whose dispatcher hands out ids from one past the re-run one."""
        pid, arch = self.waiting.popleft()
        self.waiting.clear()
        if running:
            self.waiting.append((pid, arch))
            self.rerun.add(pid)
        self.next_id = pid + 1 if running else 1
        self.start(resumed=True)


def strategy_tuner(strategy: str) -> Callable[[], StrategyTuner]:
    args = {"evolution": dict(population_size=4, select_num=2, mutation_num=1, crossover_num=1)}.get(strategy, {})
    return lambda: StrategyTuner(space="detnas-small", strategy=strategy, seed=3, **args)


def optuna_tuner(storage: str) -> Callable[[], OptunaTuner]:
    return lambda: OptunaTuner(study_name="resume", storage=storage, objectives="metric", seed=3,
                               sampler_args={"n_startup_trials": 3})


def multi_tuner(storage: str) -> Callable[[], MultiStrategyTuner]:
    """Three strategies side by side (NNI's TPE is left out: it restarts from scratch, relearning only results)."""
    return lambda: MultiStrategyTuner("detnas-small", strategies=[
        {"strategy": "random", "seed": 3},
        {"strategy": "evolution", "seed": 3, "population_size": 2, "select_num": 1, "mutation_num": 1,
         "crossover_num": 0},
        {"strategy": "optuna", "study_name": "resume", "storage": storage, "objectives": "metric", "seed": 3,
         "sampler_args": {"n_startup_trials": 3}}])


def archs(manager: Manager) -> list[dict[str, Any]]:
    return [arch for _, arch in manager.finished]


@pytest.mark.parametrize("running", [True, False], ids=["stopped-mid-trial", "stopped-before-start"])
@pytest.mark.parametrize("tuner", ["random", "evolution", "optuna", "multi"])
def test_resumed_tuner_proposes_what_an_uninterrupted_run_does(tuner: str, running: bool, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def make(run: str) -> Callable[[], Any]:
        (tmp_path / run).mkdir()
        storage = f"sqlite:///{tmp_path / run / 'study.db'}"
        return {"optuna": optuna_tuner, "multi": multi_tuner}[tuner](storage) if tuner in ("optuna", "multi") else \
            strategy_tuner(tuner)

    monkeypatch.setenv("NNI_CHECKPOINT_DIRECTORY", str(tmp_path / "plain"))
    plain = Manager(make("plain"))
    plain.run(12)
    monkeypatch.setenv("NNI_CHECKPOINT_DIRECTORY", str(tmp_path / "stopped"))
    stopped = Manager(make("stopped"))
    stopped.run(5)  # evolution: generation 1 is being evaluated
    stopped.stop_and_resume(running)
    stopped.run(7)
    assert archs(stopped) == archs(plain)
    assert len({str(a) for a in archs(plain)}) == 12



def test_the_saved_state_is_used_even_before_any_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NNI_CHECKPOINT_DIRECTORY", str(tmp_path))
    first = strategy_tuner("evolution")()
    first.update_search_space(SPACE)
    for pid in range(3):
        arch = first.generate_parameters(pid)
        first.receive_trial_result(pid, arch, fitness(arch))
    resumed = strategy_tuner("evolution")()
    resumed.load_checkpoint()
    resumed.update_search_space(SPACE)
    assert resumed.generate_multiple_parameters([1]) == [first.generate_parameters(3)]
