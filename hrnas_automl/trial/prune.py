"""One fine-grained search as a trial (``hrnas-automl prune --config prune.yml``), by hand or under nnictl.

``prune.yml`` is a trial config (space, space_args, task, data, train, threads, latency, output_dir) plus a
``prune:`` section of :class:`~hrnas_automl.strategies.fine_grained.FineGrainedSettings` fields (lam,
threshold, warmup, prune_every, finetune_epochs, max_macs, cost, calib_batches); epochs, batch size, lr,
momentum, weight decay and seed come from ``train``. Under nnictl the tuner's parameters (any ``prune:``
keys, e.g. a λ grid) override the section. Results carry the keys of every other trial (``default``, the task
metrics, ``macs``, ``params``, ``latency_ms``, ``trial_s``); intermediate results are the metric and MACs after
each prune step and after fine-tuning.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


from hrnas_automl.config import ConfigError, read_yaml_file
from hrnas_automl.trial.config import TrialConfig, parse_trial_config

__all__ = ["PRUNE_KEYS", "load_prune_config", "check_prune_options", "run_prune_trial"]

# FineGrainedSettings fields a prune: section (or nnictl's parameters) may set; the rest come from train:.
PRUNE_KEYS = ("lam", "threshold", "warmup", "prune_every", "finetune_epochs", "max_macs", "cost",
              "calib_batches")
Report = Callable[[Mapping[str, float]], None]


def load_prune_config(path: str | Path) -> tuple[TrialConfig, dict[str, Any]]:
    """The trial config and the ``prune:`` options of a prune YAML file (one-line ``ConfigError`` if bad)."""
    path = Path(path)
    data = read_yaml_file(path, "prune config")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys (space, data, train, prune, ...)")
    prune = data.pop("prune", None) or {}
    config = parse_trial_config(data, str(path))
    return config, check_prune_options(prune, str(path))


def check_prune_options(options: Any, source: str) -> dict[str, Any]:
    """``options`` if every key is one of :data:`PRUNE_KEYS`, else a one-line ``ConfigError``."""
    if not isinstance(options, Mapping) or set(options) - set(PRUNE_KEYS):
        keys = sorted(set(options) - set(PRUNE_KEYS)) if isinstance(options, Mapping) else options
        raise ConfigError(f"{source}: prune: unknown keys {keys}; allowed: {', '.join(PRUNE_KEYS)} "
                          "(epochs, batch_size, lr and seed go under train:)")
    return dict(options)


def run_prune_trial(config: TrialConfig, prune: Mapping[str, Any], *, report_intermediate: Report | None = None,
                    report_final: Report | None = None) -> dict[str, Any]:
    """Run the search, report like :func:`~hrnas_automl.trial.run_trial`, write ``result.json`` (arch, metrics,
    steps) and ``weights.pt`` (the searched sample's state dict) to the output directory if there is one."""
    import torch

    from hrnas_automl.cost.latency import measure_latency
    from hrnas_automl.strategies.fine_grained import FineGrainedSettings, PruneStep, fine_grained_search

    train = config.train
    try:
        settings = FineGrainedSettings(epochs=train.epochs, batch_size=train.batch_size, lr=train.lr,
                                       momentum=train.momentum, weight_decay=train.weight_decay, seed=train.seed,
                                       threads=config.threads or 1, **prune)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"prune: {exc}") from None
    t0 = time.perf_counter()

    def on_step(step: PruneStep) -> None:
        if report_intermediate is not None:
            report_intermediate({"default": step.metric, "macs": step.macs, "params": step.params,
                                 "epoch": step.epoch})

    result = fine_grained_search(config.space, config.task, config.data.kind, config.data.options(), settings,
                                 space_args=config.space_args, on_step=on_step)
    metrics = dict(result.metrics)
    if config.latency.enabled:
        from hrnas_automl.arch import freeze
        from hrnas_automl.tasks import get_task

        task = get_task(config.task)
        data = task.build_data(config.data.kind, config.data.options())
        model = freeze(config.space, result.arch, **config.space_args, **task.model_args(data), head=task.head)
        model.load_state_dict(result.state_dict)
        metrics["latency_ms"] = measure_latency(model, data.input_shape, warmup=config.latency.warmup,
                                                repeats=config.latency.repeats, threads=config.latency.threads)
    metrics["trial_s"] = time.perf_counter() - t0
    if report_final is not None:
        report_final(metrics)
    out = os.environ.get("NNI_OUTPUT_DIR") or config.output_dir
    record = {"space": config.space, "arch": result.arch, "metrics": metrics, "prune": dict(prune),
              "supernet_macs": result.supernet_macs,
              "steps": [{"epoch": s.epoch, "default": s.metric, "macs": s.macs, "params": s.params, "lam": s.lam}
                        for s in result.steps]}
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "result.json").write_text(json.dumps(record, indent=2))
        torch.save(result.state_dict, Path(out) / "weights.pt")
    return record

