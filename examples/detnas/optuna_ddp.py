"""Tune a DetNAS trial's learning rate and weight decay with Optuna, every trial trained by all ranks of a torchrun job.

Rank 0 asks the study (TPE, median pruner) and broadcasts the parameters; every rank trains the trial
(:func:`hrnas_automl.trial.run.run_trial` on ``--config``: with the trainer's DDP each rank trains its shard of each
batch); rank 0 reports each epoch's metric, decides pruning for all ranks and tells the study
(:mod:`hrnas_automl.tuning.distributed`). The objective returns the same validation metric on every rank.

    torchrun --nproc-per-node 2 examples/detnas/optuna_ddp.py --storage sqlite:///ddp.db --trials 8
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --master-addr HOST0 --master-port 29500 \\
        examples/detnas/optuna_ddp.py --storage postgresql+psycopg://user@db-host/studies   # and node-rank 1 on HOST1

Without torchrun (``python examples/detnas/optuna_ddp.py``) it is one process, rank 0 alone.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from hrnas_automl.runtime import distributed
from hrnas_automl.runtime.device import resolve_device
from hrnas_automl.trial import resolve_arch
from hrnas_automl.trial.config import load_trial_config
from hrnas_automl.trial.run import run_trial
from hrnas_automl.tuning.distributed import DistributedTrial, TrialPruned, optimize_distributed
from hrnas_automl.tuning.study import make_pruner, open_named_study, to_optuna_distributions

HERE = Path(__file__).resolve().parent
SPACE = {"lr": {"_type": "loguniform", "_value": [1e-3, 0.2]},
         "weight_decay": {"_type": "loguniform", "_value": [1e-6, 1e-3]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(HERE / "trial.yml"), help="trial config (space, data, train)")
    parser.add_argument("--arch", default="preset:detnas-coco-fpn-300m", help="architecture file or preset:NAME")
    parser.add_argument("--storage", default="sqlite:///optuna_ddp.db", help="Optuna storage URL (rank 0 opens it)")
    parser.add_argument("--study", default="detnas-ddp-lr", help="study name (created or resumed)")
    parser.add_argument("--trials", type=int, default=8, help="trials this job runs")
    args = parser.parse_args()
    config = load_trial_config(args.config)
    distributed.init_from_env(resolve_device(config.train.device))  # a no-op outside torchrun
    arch = resolve_arch(config, args.arch)
    study = (open_named_study(args.study, args.storage, multi_objective=False, sampler="tpe", seed=0,
                              pruner=make_pruner("median", n_warmup_steps=1)) if distributed.is_main() else None)

    def objective(trial: DistributedTrial) -> float:
        train = dataclasses.replace(config.train, **trial.params)

        def on_epoch(row: dict) -> None:
            trial.report(row["default"], row["epoch"])
            if trial.should_prune():  # rank 0's decision, on every rank
                raise TrialPruned()

        return run_trial(config.model_copy(update={"train": train}), arch, report_intermediate=on_epoch).metrics[
            "default"]

    distributions, _ = to_optuna_distributions(SPACE)
    for number, state, value in optimize_distributed(study, objective, distributions, args.trials):
        if distributed.is_main():
            print(f"trial {number}: {state} {value if value is not None else ''}")
    if distributed.is_distributed():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
