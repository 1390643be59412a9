"""One rank of the 2-rank gloo test of :func:`hrnas_automl.tuning.distributed.optimize_distributed` (run by torchrun
from tests/tuning/test_distributed.py): a DDP linear regression per trial, its learning rate from the study. Writes
``rank<N>.json`` with what this rank saw: each trial's parameters, reported values, outcome and value, and the
trials its own study handle was told about."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import optuna
import torch
import torch.distributed as dist
from optuna.distributions import FloatDistribution
from torch.nn.parallel import DistributedDataParallel

from hrnas_automl.tuning.distributed import DistributedTrial, optimize_distributed

LEARNING_RATES = (0.05, 3.0, 0.2)  # enqueued: the second diverges, and the threshold pruner stops it
SPACE = {"lr": FloatDistribution(1e-3, 10.0, log=True)}


def objective(trial: DistributedTrial) -> float:
    """Four epochs of full-batch SGD on this rank's half of a seeded regression; the all-reduced mean loss."""
    rank, world = dist.get_rank(), dist.get_world_size()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(64, generator=g)
    torch.manual_seed(0)
    model = DistributedDataParallel(torch.nn.Linear(4, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=trial.params["lr"])
    mine = slice(rank * 64 // world, (rank + 1) * 64 // world)
    for epoch in range(4):
        loss = torch.nn.functional.mse_loss(model(x[mine]).squeeze(1), y[mine])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        value = float(mean) / world
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return value


def main(storage: str, out: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    if rank == 0:
        pruner = optuna.pruners.ThresholdPruner(upper=50.0)
        study = optuna.create_study(storage=storage, study_name="ddp", pruner=pruner)
        for lr in LEARNING_RATES:
            study.enqueue_trial({"lr": lr})
    dist.barrier()
    if rank != 0:  # a handle of its own, to show it is never told anything
        study = optuna.load_study(storage=storage, study_name="ddp")
    told = []
    tell = study.tell
    study.tell = lambda *args, **kwargs: (told.append(args[0].number), tell(*args, **kwargs))[1]  # type: ignore
    seen = []

    def recorded(trial: DistributedTrial) -> float:
        row = {"number": trial.number, "params": trial.params, "reported": []}
        seen.append(row)
        report = trial.report
        trial.report = lambda value, step: (row["reported"].append([step, value]), report(value, step))[1]  # type: ignore
        return objective(trial)

    outcomes = optimize_distributed(study, recorded, SPACE, n_trials=len(LEARNING_RATES))
    for row, (_, state, value) in zip(seen, outcomes):
        row.update(state=state, value=value)
    (out / f"rank{rank}.json").write_text(json.dumps({"trials": seen, "told": told}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
