"""One fine-grained search as a trial (``hrnas-automl prune --config prune.yml``), by hand or under nnictl.

``prune.yml`` is a trial config (space, space_args, task, data, train, threads, latency, output_dir) plus a
``prune:`` section of :class:`~hrnas_automl.strategies.fine_grained.FineGrainedSettings` fields (lam,
threshold, warmup, prune_every, finetune_epochs, max_macs, cost, calib_batches); epochs, batch size, lr,
momentum, weight decay and seed come from ``train``. Under nnictl the tuner's parameters (any ``prune:``
keys, e.g. a λ grid) override the section. The ``fine-grained`` tuning objective reads its ``objective_args``
with the same code (:func:`parse_prune_config`), so ``tune.yml`` and ``prune.yml`` share one dialect.
Results carry the keys of every other trial (``default``, the task metrics, ``macs``, ``params``,
``latency_ms``, ``trial_s``); intermediate results are the metric and MACs after each prune step and after
fine-tuning.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hrnas_automl.config import ConfigError, read_yaml_file
from hrnas_automl.files import OutputLock, save_torch_atomic, write_json_atomic
from hrnas_automl.runtime import distributed
from hrnas_automl.runtime.device import runtime_of
from hrnas_automl.trial.config import TrialConfig, parse_trial_config

if TYPE_CHECKING:
    from hrnas_automl.strategies.fine_grained import FineGrainedResult, FineGrainedSettings, StepCallback

__all__ = ["CHECKPOINT", "PRUNE_KEYS", "parse_prune_config", "load_prune_config", "check_prune_options",
           "prune_settings", "search", "run_prune_trial", "FineGrainedObjective", "tuning_objective"]

CHECKPOINT = "checkpoint.pt"  # in the output directory: the search's state after its last finished epoch
# FineGrainedSettings fields a prune: section (or nnictl's parameters) may set; the rest come from train:.
PRUNE_KEYS = ("lam", "threshold", "warmup", "prune_every", "finetune_epochs", "max_macs", "cost", "backend",
              "calib_batches")
Report = Callable[[Mapping[str, float]], None]


def parse_prune_config(data: Any, source: str = "prune config") -> tuple[TrialConfig, dict[str, Any]]:
    """The trial config and the ``prune:`` options of a prune mapping (already loaded from YAML; one-line
    ``ConfigError`` if bad)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of keys (space, data, train, prune, ...)")
    data = dict(data)
    prune = data.pop("prune", None) or {}
    config, options = parse_trial_config(data, source), check_prune_options(prune, source)
    if config.metric is not None:
        raise ConfigError(f"{source}: metric: the fine-grained search ranks the task's own metric; remove metric")
    try:  # the values too, before anything runs, naming the file
        prune_settings(options)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config, options


def load_prune_config(path: str | Path) -> tuple[TrialConfig, dict[str, Any]]:
    """The trial config and the ``prune:`` options of a prune YAML file (one-line ``ConfigError`` if bad)."""
    return parse_prune_config(read_yaml_file(path, "prune config"), str(path))


def check_prune_options(options: Any, source: str) -> dict[str, Any]:
    """``options`` if every key is one of :data:`PRUNE_KEYS`, else a one-line ``ConfigError``."""
    if not isinstance(options, Mapping) or set(options) - set(PRUNE_KEYS):
        keys = sorted(set(options) - set(PRUNE_KEYS)) if isinstance(options, Mapping) else options
        raise ConfigError(f"{source}: prune: unknown keys {keys}; allowed: {', '.join(PRUNE_KEYS)} "
                          "(epochs, batch_size, lr and seed go under train:)")
    return dict(options)


def prune_settings(prune: Mapping[str, Any]) -> FineGrainedSettings:
    """The :class:`~hrnas_automl.strategies.fine_grained.FineGrainedSettings` of ``prune:`` options; a bad value is
    a one-line ``ConfigError`` (``max_macs`` goes through :func:`~hrnas_automl.config.parse_number`)."""
    from hrnas_automl.strategies.fine_grained import FineGrainedSettings

    try:
        return FineGrainedSettings(**prune)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"prune: {exc}") from None


def search(config: TrialConfig, settings: FineGrainedSettings, *, on_step: StepCallback | None = None,
           checkpoint: str | Path | None = None) -> FineGrainedResult:
    """The fine-grained search of a prune config: its space, task, data, ``train`` settings and ``threads``
    (one when unset); resumable from ``checkpoint`` (see
    :func:`~hrnas_automl.strategies.fine_grained.fine_grained_search`)."""
    from hrnas_automl.strategies.fine_grained import fine_grained_search

    return fine_grained_search(config.space, config.task, config.data.kind, config.data.options(), settings,
                               train=config.train, threads=config.threads or 1, space_args=config.space_args,
                               on_step=on_step, checkpoint=checkpoint)


def run_prune_trial(config: TrialConfig, prune: Mapping[str, Any], *, report_intermediate: Report | None = None,
                    report_final: Report | None = None) -> dict[str, Any]:
    """Run the search, report like :func:`~hrnas_automl.trial.run_trial`, write ``result.json`` (arch, metrics,
    steps) and ``weights.pt`` (the searched sample's state dict) to the output directory if there is one.

    With an output directory the run holds it (:class:`~hrnas_automl.files.OutputLock`: a second process is
    refused, naming this one), checkpoints the search there after every epoch (``checkpoint.pt``) and resumes a
    checkpoint of the same config it finds: a killed run re-run with the same command ends as an uninterrupted
    one. Every file is written atomically.
    """
    out = os.environ.get("NNI_OUTPUT_DIR") or config.output_dir
    settings = prune_settings(prune)
    with OutputLock(out, "prune") if out and distributed.is_main() else nullcontext():  # rank 0's under torchrun
        return _prune(config, prune, settings, Path(out) if out else None, report_intermediate, report_final)


def _prune(config: TrialConfig, prune: Mapping[str, Any], settings: FineGrainedSettings, out: Path | None,
           report_intermediate: Report | None, report_final: Report | None) -> dict[str, Any]:
    """:func:`run_prune_trial` inside its lock; under ``torchrun`` every rank searches, rank 0 alone measures,
    reports and writes."""
    from hrnas_automl.strategies.fine_grained import PruneStep

    t0 = time.perf_counter()

    def on_step(step: PruneStep) -> None:
        if report_intermediate is not None:
            report_intermediate({"default": step.metric, "macs": step.macs, "params": step.params,
                                 "epoch": step.epoch})

    result = search(config, settings, on_step=on_step, checkpoint=out / CHECKPOINT if out else None)
    metrics = dict(result.metrics)
    if not distributed.is_main():
        return {"space": config.space, "arch": result.arch, "metrics": metrics, "prune": dict(prune)}
    if config.latency.enabled:
        from hrnas_automl.arch import freeze
        from hrnas_automl.tasks import get_task

        task = get_task(config.task)
        data = task.build_data(config.data.kind, config.data.options())
        space_args = {**config.space_args, **task.model_args(data), "head": task.head}
        model = freeze(config.space, result.arch, **space_args)
        model.load_state_dict(result.state_dict)
        metrics.update(config.latency.metrics(config.space, result.arch, space_args, data.input_shape, {"": model},
                                              runtime_of(config.train).device))
    metrics["trial_s"] = time.perf_counter() - t0
    if report_final is not None:
        report_final(metrics)
    record = {"space": config.space, "arch": result.arch, "metrics": metrics, "prune": dict(prune),
              "supernet_macs": result.supernet_macs,
              "steps": [{"epoch": s.epoch, "default": s.metric, "macs": s.macs, "params": s.params, "lam": s.lam}
                        for s in result.steps]}
    if out:
        save_torch_atomic(result.state_dict, out / "weights.pt")
        write_json_atomic(record, out / "result.json", indent=2)
    return record


@dataclass(frozen=True)
class FineGrainedObjective:
    """The ``fine-grained`` tuning objective: one search per call of ``{lam, threshold, warmup}``, of the prune
    config its ``objective_args`` are (the dialect of ``hrnas-automl prune``: a trial config's space, space_args,
    task, data, train and threads, plus ``prune:`` with the other
    :class:`~hrnas_automl.strategies.fine_grained.FineGrainedSettings` fields)."""

    config: TrialConfig
    prune: Mapping[str, Any]

    def __call__(self, params: Mapping[str, Any], report: Callable[[int, float, float], None]) -> Any:
        from hrnas_automl.tuning.objectives import TuneResult

        tuned = {"lam": float(params["lam"]), "threshold": float(params["threshold"]), "warmup": int(params["warmup"])}
        result = search(self.config, prune_settings({**self.prune, **tuned}),
                        on_step=lambda s: report(s.epoch, s.metric, s.macs))
        return TuneResult(result.metrics["default"], result.metrics["macs"])


def tuning_objective(**objective_args: Any) -> FineGrainedObjective:
    """The registered factory of the ``fine-grained`` objective: ``objective_args`` are read as a prune config
    (:func:`parse_prune_config`); ``prune:`` must leave the tuned keys to the study."""
    config, prune = parse_prune_config(objective_args, "objective_args")
    tuned = sorted({"lam", "threshold", "warmup"} & set(prune))
    if tuned:
        raise ConfigError(f"objective_args: prune: the study tunes {', '.join(tuned)}; remove them from prune: "
                          "(ranges: sets what they take)")
    prune_settings(prune)  # the other keys' values are checked now, not in the first trial
    from hrnas_automl.tasks import get_task

    get_task(config.task).build_data(config.data.kind, config.data.options())  # so are the data's options and files
    return FineGrainedObjective(config, prune)
