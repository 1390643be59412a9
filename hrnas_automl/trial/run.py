"""The trial entry point: architecture -> frozen network -> trained on a task -> metrics.

Under nnictl (``trialCommand: hrnas-automl trial --config trial.yml``) the architecture comes from
the tuner and results go to the NNI manager; by hand it runs one architecture (a file, a preset or a
seeded random sample) and prints the same metrics. Every strategy reports the same keys, so the web
UI sorts and plots them alike: ``default`` (the task metric), ``macs``, ``params``, ``latency_ms`` (predicted by
the space's latency table: comparable between trials, whatever runs next to them; the trial's own timing is
``latency_measured_ms``).
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hrnas_automl.config import ConfigError
from hrnas_automl.trial.config import TrialConfig

__all__ = ["TrialResult", "run_trial", "resolve_arch"]

Report = Callable[[Mapping[str, float]], None]


@dataclass(frozen=True)
class TrialResult:
    """What one trial produced: its architecture, the final metric dict and the per-epoch dicts."""

    space: str
    arch: dict[str, Any]
    metrics: dict[str, float]
    epochs: list[dict[str, float]] = field(default_factory=list)


def resolve_arch(config: TrialConfig, arch_ref: str | None = None) -> dict[str, Any]:
    """The architecture of a standalone run: ``--arch`` beats ``config.arch``; neither = seeded random."""
    from hrnas_automl.arch import choices_of, load_arch
    from hrnas_automl.strategies import RandomSearch

    from hrnas_automl.tasks import get_task

    ref = arch_ref or config.arch
    if ref is None:  # the task's head decides the head labels (HR-NAS: head_incre* vs head_transform)
        choices = choices_of(config.space, **{**config.space_args, "head": get_task(config.task).head})
        return RandomSearch(choices, seed=config.train.seed).ask()
    space, arch = load_arch(ref)
    if space is not None and space != config.space:
        raise ConfigError(f"architecture {ref} belongs to space {space}, but the trial config searches "
                          f"{config.space}; use an architecture of {config.space}")
    return arch


def _output_dir(config: TrialConfig) -> Path | None:
    out = os.environ.get("NNI_OUTPUT_DIR") or config.output_dir
    return Path(out) if out else None


def _check_finite(metrics: Mapping[str, Any], when: str) -> None:
    """Refuse a result (an epoch's or the final one) with a NaN or infinite value, e.g. a NaN validation loss
    after a finite training loss: the trial must fail, as a diverged one does, never be scored or plotted."""
    from hrnas_automl.tasks.training import DivergedError

    bad = {key: value for key, value in metrics.items() if isinstance(value, float) and not math.isfinite(value)}
    if bad:
        shown = ", ".join(f"{key}={value}" for key, value in bad.items())
        raise DivergedError(f"the network diverged: its {when} metrics are not finite ({shown}), so the trial fails "
                            "instead of reporting them; lower train.lr (the learning rate) or check the data")


def _deployed_costs(config: TrialConfig, task: Any, model: Any, data: Any) -> tuple[dict[str, Any], dict[str, float]]:
    """The networks whose cost a trial reports, by key prefix, and their ``macs`` and ``params``: the network that
    ships (:meth:`Task.deployed <hrnas_automl.tasks.Task.deployed>`) under ``macs``/``params``, and when that is
    more than the searched network (detection: FPN + head around the backbone) the searched one's under
    ``backbone_macs``/``backbone_params``. Built before training, so a network that cannot run on one image fails
    the trial at once.

    Raises:
        ConfigError: the network that ships around the searched one does not run on one image of the data's size.
    """
    import torch

    from hrnas_automl.cost import count_cost

    with torch.random.fork_rng():  # the head's fresh weights must not move the RNG stream of the training
        whole = task.deployed(model, data, config.task_args)
    nets = {"": whole} if whole is model else {"": whole, "backbone_": model}
    counts: dict[str, float] = {}
    for prefix, net in nets.items():
        try:
            counted = count_cost(net, data.input_shape)
        except ValueError as exc:
            if net is model:
                raise
            raise ConfigError(f"task {task.name}: the {type(net).__name__} it deploys cannot be costed on one image: "
                              f"{exc}".replace(" (--input CxHxW)", " (data.image_size) or change task_args")) from None
        counts.update({f"{prefix}macs": counted.macs, f"{prefix}params": counted.params})
    return nets, counts


def run_trial(config: TrialConfig, arch: Mapping[str, Any], *, report_intermediate: Report | None = None,
              report_final: Report | None = None, progress: bool = False) -> TrialResult:
    """Train and evaluate one architecture of ``config.space`` on the configured task.

    Args:
        config: the validated trial config.
        arch: ``{label: value}`` of the space; validated before anything is built.
        report_intermediate: called after every epoch with ``{"default": metric, ...}``.
        report_final: called once with the final metric dict.
        progress: show tqdm progress bars (a run by hand).

    Under ``torchrun`` every rank trains (:func:`hrnas_automl.tasks.training.fit` in DDP) and only rank 0 measures
    latency, reports and writes ``result.json``.

    Raises:
        DivergedError: the training loss or a final metric is not finite; nothing final is reported, so under
            nnictl the trial ends FAILED (``hrnas-automl trial`` exits 2 with that one line).
    """
    from dataclasses import replace

    import torch

    from hrnas_automl.arch import freeze
    from hrnas_automl.runtime import distributed
    from hrnas_automl.runtime.device import runtime_of
    from hrnas_automl.tasks.training import torch_threads
    from hrnas_automl.tasks import get_task

    task = get_task(config.task)  # the config was validated: the space has the task's head
    runtime = runtime_of(config.train)  # a missing device fails before the data is built
    main = distributed.is_main()
    t0 = time.perf_counter()
    with distributed.main_first():  # rank 0 writes generated data to disk, then the others read it
        data = task.build_data(config.data.kind, config.data.options())
    space_args = {**config.space_args, **task.model_args(data), "head": task.head}
    with torch.random.fork_rng():  # initial weights follow train.seed; the caller's RNG state is untouched
        torch.manual_seed(config.train.seed)
        model = freeze(config.space, arch, **space_args)
    nets, costs = _deployed_costs(config, task, model, data)
    epochs: list[dict[str, float]] = []
    ranked = config.metric or task.metric

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        if ranked not in metrics:
            raise ConfigError(f"metric: task {task.name} reports no metric {ranked!r}; use one of: "
                              f"{', '.join(sorted(metrics))}")
        row = {"default": metrics[ranked], "epoch": epoch, **metrics}
        _check_finite(row, f"epoch {epoch}")
        epochs.append(row)
        if report_intermediate is not None and main:
            report_intermediate(row)

    with torch_threads(config.threads):
        final = task.fit(model, data, replace(config.train, progress=progress), config.task_args, on_epoch)
    metrics: dict[str, float] = {"default": final[ranked], **final, **costs}
    _check_finite(metrics, "final")
    if config.latency.enabled and main:
        metrics.update(config.latency.metrics(config.space, arch, space_args, data.input_shape, nets, runtime.device))
    metrics["trial_s"] = time.perf_counter() - t0
    if report_final is not None and main:
        report_final(metrics)
    result = TrialResult(config.space, dict(arch), metrics, epochs)
    out = _output_dir(config)
    if out is not None and main:
        from hrnas_automl.files import write_json_atomic

        write_json_atomic({"space": result.space, "arch": result.arch, "metrics": metrics, "epochs": epochs},
                          out / "result.json", indent=2)
    return result
