"""Seeded, deterministic results of hrnas-automl's public Python API, as one JSON file, to prove that a refactor
changes no numbers: run it before and after and compare the files (``--compare OLD.json NEW.json``).

    python bench/seeded_results.py OUT.json [PART ...]   # PART: names below (default: all), e.g. a_classification_trial
    python bench/seeded_results.py --compare OLD.json NEW.json

Each computation is one function with its imports inside it, so porting the script to a new module layout means
changing only import lines; where a refactor renamed a key or a setting, the function says so and writes the old
key. Timing-dependent values (latency_ms, trial_s) are dropped. First written at dc766ca (issue 16's baseline:
bench/results/seeded_results_dc766ca.json).

Every run is self-contained: generated data ($TMPDIR/hrnas-automl-data) and compiled cost tables
($HRNAS_AUTOML_CACHE) go to a fresh temporary folder, removed at the end, so nothing cached by an earlier
run (or by another checkout) is read.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from typing import Any

TIMING_KEYS = {"latency_ms", "trial_s"}


def _clean(value: Any) -> Any:
    """JSON-ready: tuples -> lists, numpy/torch scalars -> Python, timing keys dropped, NaN/inf as strings."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def _trial(config: dict[str, Any], arch: str | dict[str, Any] | None = None) -> dict[str, Any]:
    """One trial of ``config`` (a trial YAML as a dict) on ``arch``: a dict, ``preset:NAME``, or None for the
    seeded random sample of a run by hand."""
    from hrnas_automl.trial import resolve_arch, run_trial
    from hrnas_automl.trial.config import parse_trial_config

    config = parse_trial_config({**config, "threads": 1})
    result = run_trial(config, arch if isinstance(arch, dict) else resolve_arch(config, arch))
    return {"space": result.space, "arch": result.arch, "metrics": result.metrics, "epochs": result.epochs}


# -- a. classification trial (examples/detnas/trial.yml, preset detnas-coco-fpn-300m) --------------------------

def a_classification_trial() -> dict[str, Any]:
    return _trial({  # examples/detnas/trial.yml at dc766ca, unchanged
        "space": "detnas-small",
        "data": {"kind": "synthetic", "num_classes": 10, "image_size": 32, "train_size": 1024, "val_size": 256,
                 "noise": 0.1, "seed": 0},
        "train": {"epochs": 3, "batch_size": 32, "lr": 0.02, "seed": 0},
        "latency": {"repeats": 10, "threads": 1},
    }, "preset:detnas-coco-fpn-300m")


# -- b. segmentation, early-exit and keypoints trials ----------------------------------------------------------

def b_segmentation_trial() -> dict[str, Any]:
    return _trial({  # examples/hrnas/trial_seg.yml at dc766ca, unchanged
        "space": "hrnas",
        "space_args": {"setting": "tiny", "bn_momentum": 0.1},
        "task": "segmentation",
        "data": {"kind": "shapes", "layout": "cityscapes", "train_size": 64, "val_size": 32, "image_size": 64,
                 "seed": 0},
        "train": {"epochs": 3, "batch_size": 16, "lr": 0.05, "seed": 0},
        "latency": {"repeats": 5, "threads": 1},
    })  # no arch given: the seeded random sample (train.seed) of a run by hand


def b_early_exit_trial() -> dict[str, Any]:
    return _trial({  # examples/ranet/trial.yml at dc766ca, unchanged
        "space": "ranet",
        "task": "early-exit",
        "task_args": {"budget_macs": 10000000, "method": "geometric", "optuna_trials": 100, "holdout": 0.2},
        "data": {"kind": "synthetic", "num_classes": 4, "image_size": 32, "train_size": 320, "val_size": 128,
                 "seed": 0},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.05, "seed": 0},
        "latency": {"repeats": 5, "threads": 1},
    }, {"n_scales": 3, "n_channels": 8, "growth_rate": 4, "gr_factor": "4-2-1-1",  # examples/ranet/small_arch.json
        "bn_factor": "4-2-1-1", "block_step": 2, "step": 2, "step_mode": "even"})


def b_keypoints_trial() -> dict[str, Any]:
    return _trial({  # examples/lite_hrnet/trial_kpt.yml at dc766ca, unchanged
        "space": "lite-hrnet",
        "task": "keypoints",
        "data": {"kind": "stick-figures", "train_size": 32, "val_size": 16, "image_size": 96, "input_size": [64, 48],
                 "seed": 0},
        "train": {"epochs": 2, "batch_size": 16, "lr": 0.05, "seed": 0},
        "latency": {"repeats": 5, "threads": 1},
    }, "preset:naive-lite-hrnet-18")


# -- c. random search under a MACs limit -----------------------------------------------------------------------

def c_random_search() -> dict[str, Any]:
    from hrnas_automl.arch import choices_of
    from hrnas_automl.cost import analytic_cost, cost_limit
    from hrnas_automl.strategies import RandomSearch

    choices = choices_of("detnas-small", num_classes=10)
    constraint = cost_limit("detnas-small", max_macs=6.9e6, input_shape=(3, 32, 32), space_args={"num_classes": 10})
    strategy = RandomSearch(choices, seed=0, constraint=constraint)
    asked = []
    for _ in range(20):
        arch = strategy.ask()
        cost = analytic_cost("detnas-small", arch, (3, 32, 32), num_classes=10)
        asked.append({"arch": arch, "macs": cost.macs, "params": cost.params})
    return {"asked": asked}


# -- d. evolution driven by the analytic MACs ------------------------------------------------------------------

def d_evolution() -> dict[str, Any]:
    from hrnas_automl.arch import choices_of
    from hrnas_automl.cost import analytic_cost, cost_limit
    from hrnas_automl.strategies import Evolution

    choices = choices_of("detnas-small", num_classes=10)
    constraint = cost_limit("detnas-small", max_macs=6.9e6, input_shape=(3, 32, 32), space_args={"num_classes": 10})
    # mutation_num / crossover_num: the defaults (20 + 20) exceed population_size 8; 3 + 3 as the one-shot example
    evo = Evolution(choices, seed=0, constraint=constraint, population_size=8, select_num=3, mutation_num=3,
                    mutation_prob=0.1, crossover_num=3)
    asked = []
    while len(asked) < 4 * 8:  # generations 0..3
        arch = evo.ask()
        generation = evo.generation
        cost = analytic_cost("detnas-small", arch, (3, 32, 32), num_classes=10)
        score = cost.macs / 1e6  # deterministic objective: the most MACs under the 6.9e6 limit
        evo.tell(arch, score)
        asked.append({"generation": generation, "arch": arch, "macs": cost.macs, "params": cost.params,
                      "score": score})
    best_arch, best_score = evo.best()
    return {"asked": asked, "best": {"arch": best_arch, "score": best_score}, "final_generation": evo.generation,
            "population": evo.population}


# -- e. fine-grained (HR-NAS) pruning search -------------------------------------------------------------------

def _fine_grained_summary(result: Any) -> dict[str, Any]:
    return {"arch": result.arch, "metrics": result.metrics, "supernet_macs": result.supernet_macs,
            "steps": [{"epoch": s.epoch, "metric": s.metric, "macs": s.macs, "params": s.params, "lam": s.lam,
                       "arch": s.arch} for s in result.steps]}


def e_fine_grained() -> dict[str, Any]:
    from hrnas_automl.config import TrainSettings
    from hrnas_automl.strategies.fine_grained import FineGrainedSettings, fine_grained_search

    space_args = {"setting": "tiny", "transformer": False}
    data = {"image_size": 32, "train_size": 16, "val_size": 8}
    out = {}
    # threshold only (as tests/test_fine_grained.py search(10.0))
    train = TrainSettings(epochs=4, batch_size=8)  # issue 16: the training fields left FineGrainedSettings
    settings = FineGrainedSettings(lam=10.0, threshold=1e-3, warmup=0)
    threshold_only = fine_grained_search("hrnas", "segmentation", "shapes", data, settings, train=train,
                                         space_args=space_args)
    out["threshold_only_lam10"] = _fine_grained_summary(threshold_only)
    # a MACs budget of half the supernet, lam too small to reach it by the threshold alone
    budget = threshold_only.supernet_macs / 2
    settings = FineGrainedSettings(lam=0.3, threshold=1e-3, warmup=0, max_macs=budget)
    budgeted = fine_grained_search("hrnas", "segmentation", "shapes", data, settings, train=train,
                                   space_args=space_args)
    out["max_macs_half_lam0.3"] = {"max_macs": budget, **_fine_grained_summary(budgeted)}
    return out


# -- f. Optuna studies -----------------------------------------------------------------------------------------

def _study_trials(study: Any) -> list[dict[str, Any]]:
    return [{"number": t.number, "state": t.state.name, "params": t.params, "values": t.values,
             "user_attrs": t.user_attrs, "constraints": getattr(t, "constraints", None)} for t in study.trials]


def f_optuna_slimming_study() -> dict[str, Any]:
    from hrnas_automl.tuning.config import parse_tune_config
    from hrnas_automl.tuning.study import front_trials, log_warnings_only, run_study

    log_warnings_only()
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_tune_config({
            "study_name": "s", "n_trials": 6, "objective": "network-slimming", "seed": 0,
            "objective_args": {"train": {"epochs": 4}, "val_size": 64},  # issue 16: epochs moved under train:
            "ranges": {"lam": {"low": 1e-3, "high": 2e-1, "log": True},
                       "threshold": {"low": 1e-3, "high": 5e-2, "log": True},
                       "warmup": {"low": 0, "high": 2}},
            "sampler_args": {"population_size": 4},
            "storage": f"sqlite:///{tmp}/optuna_studies.db",
        }, "seeded.py", tmp)
        study = run_study(config)
        return {"trials": _study_trials(study), "front": sorted(t.number for t in front_trials(study))}


def f_optuna_fine_grained_study() -> dict[str, Any]:
    from hrnas_automl.tuning.config import parse_tune_config
    from hrnas_automl.tuning.study import log_warnings_only, run_study

    log_warnings_only()
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_tune_config({  # examples/hrnas/tune.yml, 2 trials at 32x32 (16 train, 8 val images)
            "study_name": "hrnas-lambda", "n_trials": 2, "objectives": "metric+macs", "seed": 0,
            "sampler_args": {"population_size": 4},
            "max_macs": 1.2e7,
            "ranges": {"lam": {"low": 0.3, "high": 30.0, "log": True},
                       "threshold": {"low": 1.0e-3, "high": 1.0e-1, "log": True},
                       "warmup": {"low": 0, "high": 2}},
            "objective": "fine-grained",
            "objective_args": {"space": "hrnas", "space_args": {"setting": "tiny", "transformer": False},
                               "task": "segmentation",
                               "data": {"kind": "shapes", "image_size": 32, "train_size": 16, "val_size": 8},
                               # issue 16: the prune.yml dialect (train: + threads) replaces settings:
                               "train": {"epochs": 3, "batch_size": 8, "seed": 0}, "threads": 1},
            "storage": f"sqlite:///{tmp}/optuna_studies.db",
        }, "seeded.py", tmp)
        return {"trials": _study_trials(run_study(config))}


# -- g. DetNAS one-shot: supernet training and search (the sizes of tests/test_oneshot.py) ---------------------

def g_oneshot() -> dict[str, Any]:
    from hrnas_automl.oneshot.config import SearchConfig, SupernetConfig
    from hrnas_automl.oneshot.search import run_search
    from hrnas_automl.oneshot.supernet import train_supernet

    evolution = {"generations": 3, "population_size": 8, "select_num": 3, "mutation_num": 3, "crossover_num": 3}
    out: dict[str, Any] = {"evolution_settings": evolution}
    strategy_args = {k: v for k, v in evolution.items() if k != "generations"}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = f"{tmp}/supernet.pt"
        supernet = SupernetConfig.model_validate({
            "data": {"kind": "shapes", "root": f"{tmp}/shapes", "train_size": 48, "val_size": 12, "image_size": 64},
            "detector": {"fpn_channels": 32}, "checkpoint": checkpoint,
            "train": {"steps": 200, "batch_size": 8, "lr": 0.02, "checkpoint_every": 50}})
        checkpoints: list[dict[str, float]] = []
        out["train"] = train_supernet(supernet, on_checkpoint=lambda s, loss: checkpoints.append(
            {"step": s, "loss": loss}))
        out["train_checkpoints"] = checkpoints
        for name, max_macs in (("search_max_macs_300e6", 300e6), ("search_no_limit", None)):
            # issue 16: evolution: -> strategy_args: + candidates:, max_macs -> max_conv_macs (the count it always
            # was), and rows say conv_macs; written under the old key for the comparison
            result = run_search(SearchConfig.model_validate({
                "supernet": checkpoint, "state": f"{tmp}/{name}.json", "seed": 0, "strategy": "evolution",
                "strategy_args": strategy_args, "candidates": evolution["generations"] * evolution["population_size"],
                "max_conv_macs": max_macs, "bn_batches": 2}))
            rows = [{("macs" if k == "conv_macs" else k): v for k, v in row.items()}
                    for row in (*result.evaluated, result.best)]
            out[name] = {"evaluated": rows[:-1], "best": rows[-1]}
    return out


# -- h. the network-slimming objective alone -------------------------------------------------------------------

def h_slimming_objective() -> dict[str, Any]:
    from hrnas_automl.tuning.slimming import tuning_objective

    objective = tuning_objective(train={"epochs": 4}, val_size=64)  # issue 16: epochs moved under train:
    params = {"lam": 0.02, "threshold": 0.01, "warmup": 1}
    steps: list[dict[str, float]] = []
    result = objective(params, lambda step, metric, macs: steps.append({"step": step, "metric": metric,
                                                                         "macs": macs}))
    return {"params": params, "metric": result.metric, "macs": result.macs, "steps": steps,
            "full_macs": objective.macs((16, 32))}


PARTS = [a_classification_trial, b_segmentation_trial, b_early_exit_trial, b_keypoints_trial, c_random_search,
         d_evolution, e_fine_grained, f_optuna_slimming_study, f_optuna_fine_grained_study, g_oneshot,
         h_slimming_objective]


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[1] == "--compare":
        return compare(argv[2], argv[3])
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out_path, wanted = argv[1], argv[2:]
    parts = [p for p in PARTS if not wanted or p.__name__ in wanted]
    unknown = set(wanted) - {p.__name__ for p in PARTS}
    if unknown:
        print(f"unknown parts: {sorted(unknown)}; parts: {[p.__name__ for p in PARTS]}", file=sys.stderr)
        return 2
    scratch = tempfile.mkdtemp(prefix="hrnas-seeded-")
    os.environ["TMPDIR"] = scratch  # anything a part writes to the temp folder
    tempfile.tempdir = scratch
    os.environ["HRNAS_AUTOML_CACHE"] = os.path.join(scratch, "cache")  # cost tables and generated data
    import torch

    torch.set_num_threads(1)
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    try:
        for part in parts:
            t0 = time.perf_counter()
            results[part.__name__] = _clean(part())
            timings[part.__name__] = round(time.perf_counter() - t0, 1)
            print(f"{part.__name__}: {timings[part.__name__]} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    with open(out_path, "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"total: {round(sum(timings.values()), 1)} s", file=sys.stderr)
    return 0


def _first_difference(a: Any, b: Any, path: str) -> str | None:
    """The path of the first value that differs between ``a`` and ``b`` (None: equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{path}.{key} (only in {'new' if key in b else 'old'})"
            if (found := _first_difference(a[key], b[key], f"{path}.{key}")) is not None:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := _first_difference(x, y, f"{path}[{i}]"))),
                    None)
    return None if a == b else f"{path}: {a!r} != {b!r}"


def compare(old_path: str, new_path: str) -> int:
    """Print, per part, whether two result files are equal (exit 1 when any part differs)."""
    with open(old_path) as f:
        old = json.load(f)
    with open(new_path) as f:
        new = json.load(f)
    differ = 0
    for part in sorted(set(old) | set(new)):
        difference = _first_difference(old.get(part), new.get(part), part)
        differ += difference is not None
        print(f"{part}: {'equal' if difference is None else 'DIFFERS at ' + difference}")
    print(f"{len(set(old) | set(new)) - differ} of {len(set(old) | set(new))} parts equal")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
