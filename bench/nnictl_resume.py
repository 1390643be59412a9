"""Benchmark: ``nnictl stop`` + ``nnictl resume`` against an uninterrupted nnictl run, per tuner (issue 17).

For each tuner (the evolution and random StrategyTuner, the Optuna-backed tuner with TPE) two experiments run with
the same seed and ``trialConcurrency: 1``: one uninterrupted, one stopped with ``nnictl stop`` once ``--stop-after``
trials have finished (the next one is usually running then: NNI runs it again at the resume) and continued with
``nnictl resume``. The trials are a deterministic synthetic score of the architecture (a position-weighted op score,
~1 s each), so both runs see the same results and only the tuner's state decides what is proposed. Measured: the
proposals after the resume that equal the uninterrupted run's (position by position, in start order), and the
Hamming distance of each proposal after the resume to the nearest earlier architecture, next to the uninterrupted
run's at the same positions (restarting at generation 0 made the resumed ones random: 12-14 of 20 labels, against
1-10, in the issue's measurement).

Run: .venv/bin/python bench/nnictl_resume.py --out  (writes bench/results/nnictl_resume.json; about 5 minutes on
2 cores)
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.common, run as a script too

from bench.common import add_out_argument, emit  # noqa: E402
from hrnas_automl.arch import choices_of  # noqa: E402
from hrnas_automl.nni.compat import to_nni_search_space  # noqa: E402
from hrnas_automl.nni.experiment import NniExperiment, free_port, nni_env  # noqa: E402

TRIAL = """import os
import time
import nni
arch = nni.get_next_parameter()
ops = {"k3": 0.1, "k5": 0.4, "k7": 0.2, "xception": 0.3}
while os.path.exists("hold"):  # the harness holds the trial running at the stop until the resumed tuner is up
    time.sleep(0.2)
time.sleep(1.0)
nni.report_final_result({"default": sum(ops[v] * (i + 1) for i, v in enumerate(arch.values())), "macs": 1.0})
"""
TUNERS: dict[str, dict[str, Any]] = {
    "evolution": {"className": "hrnas_automl.nni.StrategyTuner",
                  "classArgs": {"strategy": "evolution", "space": "detnas-small", "seed": 0, "population_size": 3,
                                "select_num": 2, "mutation_num": 1, "crossover_num": 1}},
    "random": {"className": "hrnas_automl.nni.StrategyTuner",
               "classArgs": {"strategy": "random", "space": "detnas-small", "seed": 0}},
    "optuna": {"className": "hrnas_automl.nni.optuna_tuner.OptunaTuner",
               "classArgs": {"objectives": "metric", "seed": 0, "sampler": "tpe",
                             "sampler_args": {"n_startup_trials": 3}}},
}


def write_experiment(folder: Path, tuner: str, trials: int) -> Path:
    """An nnictl config of ``tuner`` over DetNAS-small with the synthetic trial, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "search_space.json").write_text(json.dumps(to_nni_search_space(choices_of("detnas-small"))))
    (folder / "trial.py").write_text(TRIAL)
    config = {"searchSpaceFile": "search_space.json", "trialCommand": "python trial.py", "trialCodeDirectory": ".",
              "trialConcurrency": 1, "maxTrialNumber": trials, "maxExperimentDuration": "10m",
              "tuner": {**TUNERS[tuner], "codeDirectory": "."}, "trainingService": {"platform": "local"}}
    (folder / "config.yml").write_text(yaml.safe_dump(config))
    return folder / "config.yml"


def proposals(exp: NniExperiment) -> list[dict[str, Any]]:
    """The architectures of the experiment's trials, in the order they started."""
    return [t.arch for t in exp.trials()]


def uninterrupted(folder: Path, tuner: str, trials: int, home: Path) -> list[dict[str, Any]]:
    with NniExperiment.create(write_experiment(folder, tuner, trials), port=free_port(), env=nni_env(home)) as exp:
        exp.wait(timeout=600)
        return proposals(exp)


def _manager_log(home: Path, experiment_id: str) -> str:
    log = home / "nni-experiments" / experiment_id / "log" / "nnimanager.log"
    return log.read_text() if log.is_file() else ""


def _tuner_starts(home: Path, experiment_id: str) -> int:
    """How many times a dispatcher of the experiment has answered the manager's Initialize (its search space)."""
    return _manager_log(home, experiment_id).count("received command from dispatcher: ID")


def stopped_and_resumed(folder: Path, tuner: str, trials: int, stop_after: int, home: Path
                        ) -> tuple[list[dict[str, Any]], int, int]:
    """The proposals of a run stopped once ``stop_after`` trials finished and resumed; how many had finished; and
    how many trials NNI ran again at the resume (those running at the stop).

    The trial that runs at the stop is held until the resumed tuner has its search space: NNI starts that trial
    again before the new tuner is up, and a result that arrives earlier is dropped by NNI's dispatcher ("Find
    unknown job parameter id"), which also hands out ids that it later takes for re-run ones (see README, resuming
    nnictl experiments). Real trials, minutes long, do not finish within the tuner's ~15 s start.
    """
    env = nni_env(home)
    exp = NniExperiment.create(write_experiment(folder, tuner, trials), port=free_port(), env=env)
    try:
        while len(exp.trials()) < stop_after:
            time.sleep(0.2)
        (folder / "hold").touch()
        before = len([t for t in exp.trials() if t.status == "SUCCEEDED"])
    finally:
        exp.stop()
    with NniExperiment.resume(exp.id, port=free_port(), env=env) as exp:
        while _tuner_starts(home, exp.id) < 2:
            time.sleep(0.2)
        (folder / "hold").unlink()
        exp.wait(timeout=600)
        rerun = re.search(r"where (\d+) is resuming", _manager_log(home, exp.id))
        return proposals(exp), before, int(rerun.group(1)) if rerun else 0


def hamming(a: dict[str, Any], b: dict[str, Any]) -> int:
    return sum(a[k] != b[k] for k in a)


def nearest_earlier(archs: list[dict[str, Any]], start: int) -> list[int]:
    """For each architecture from ``start`` on: its Hamming distance to the nearest earlier one."""
    return [min(hamming(archs[i], archs[j]) for j in range(i)) for i in range(max(start, 1), len(archs))]


def compare(tuner: str, trials: int, stop_after: int, root: Path) -> dict[str, Any]:
    plain = uninterrupted(root / tuner / "plain", tuner, trials, root / "home")
    resumed, before, rerun = stopped_and_resumed(root / tuner / "resumed", tuner, trials, stop_after, root / "home")
    after = resumed[before:]
    return {"trials_before_stop": before, "trials_after_resume": len(after), "rerun_by_nni_at_resume": rerun,
            "equal_proposals_after_resume": sum(a == b for a, b in zip(after, plain[before:])),
            "min_hamming_to_earlier_resumed": nearest_earlier(resumed, before),
            "min_hamming_to_earlier_uninterrupted": nearest_earlier(plain, before)[:len(after)],
            "all_proposals_equal": resumed == plain[:len(resumed)] and len(resumed) == len(plain)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tuners", nargs="+", default=list(TUNERS), choices=list(TUNERS))
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--stop-after", type=int, default=4)
    add_out_argument(parser, "nnictl_resume")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nnictl-resume-") as tmp:
        results = {tuner: compare(tuner, args.trials, args.stop_after, Path(tmp)) for tuner in args.tuners}
    summary = {"trials": args.trials, "stop_after": args.stop_after, "trial_concurrency": 1, "tuners": results}
    emit(summary, args)


if __name__ == "__main__":
    main()
