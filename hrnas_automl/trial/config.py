"""The trial YAML file (``hrnas-automl trial --config trial.yml``), validated with one-line errors.

Example::

    space: detnas-small          # `hrnas-automl spaces` lists them
    data: {kind: synthetic, num_classes: 10, image_size: 32}
    train: {epochs: 2, batch_size: 64, lr: 0.05, seed: 0}
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hrnas_automl.config import ConfigError, TrainSettings, one_line_error, read_yaml_file

__all__ = ["DataConfig", "LatencyConfig", "TrialConfig", "parse_trial_config", "load_trial_config"]


class DataConfig(BaseModel):
    """Which dataset to train on; every key but ``kind`` is an option of that dataset kind."""

    model_config = ConfigDict(extra="allow", frozen=True)
    kind: str  # one of the task's data_kinds (checked in parse_trial_config)

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class LatencyConfig(BaseModel):
    """The latency a trial reports, batch 1, fp32, under eager PyTorch (``backend: torch``, on the device it trained
    on, ``train.device``; CUDA timed with CUDA events) or ONNX Runtime on the CPU (``onnxruntime``): ``latency_ms`` is
    predicted by the space's latency table, which is timed once per machine (while no other trial of it runs) and
    cached, so it does not depend on what runs next to the trial; the network is also timed in the trial,
    ``repeats`` runs after ``warmup``, as ``latency_measured_ms`` (median) and ``latency_measured_iqr_ms`` (their
    interquartile range): noisy when trials share the cores."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    backend: Literal["torch", "onnxruntime"] = "torch"
    repeats: int = Field(10, ge=1)
    warmup: int = Field(3, ge=0)
    threads: int | None = Field(1, ge=1)

    def metrics(self, space: str, arch: Mapping[str, Any], space_args: Mapping[str, Any],
                input_shape: tuple[int, ...], nets: Mapping[str, Any], device: Any = "cpu") -> dict[str, float]:
        """The latency keys of a trial of ``arch`` on ``device`` (the torch backend; ONNX Runtime always runs on the
        CPU): ``latency_ms``, the searched network's prediction (:func:`~hrnas_automl.cost.latency.predicted_latency`,
        the table the tuners' ``max_latency_ms`` reads), and for each network of ``nets`` (``{key prefix: module}``)
        ``{prefix}latency_measured_ms`` and ``{prefix}latency_measured_iqr_ms``
        (:func:`~hrnas_automl.cost.latency.latency_times`)."""
        import statistics

        from hrnas_automl.cost.latency import latency_times, predicted_latency

        device = str(device) if self.backend == "torch" else "cpu"
        out = {"latency_ms": predicted_latency(space, arch, input_shape, threads=self.threads, device=device,
                                               backend=self.backend, **space_args)}
        for prefix, net in nets.items():
            times = latency_times(net, input_shape, warmup=self.warmup, repeats=self.repeats, threads=self.threads,
                                  device=device, backend=self.backend)
            q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else times * 3
            out.update({f"{prefix}latency_measured_ms": statistics.median(times),
                        f"{prefix}latency_measured_iqr_ms": q3 - q1})
        return out


class TrialConfig(BaseModel):
    """One trial: which space, which data, how to train; the architecture comes from the tuner."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    space: str
    space_args: dict[str, Any] = Field(default_factory=dict)
    task: str = "classification"  # `hrnas_automl.tasks.task_names()`
    task_args: dict[str, Any] = Field(default_factory=dict)  # options of that task (budgets, loss weights)
    # which of the task's metrics NNI ranks as `default` (the task's own when None, e.g. keypoints' OKS AP): for a
    # short search whose trials all score 0 on the task's metric (AP) but differ on another (PCK)
    metric: str | None = None
    data: DataConfig
    train: TrainSettings = TrainSettings()  # train.seed also seeds the random arch of a standalone run
    arch: str | None = None
    # torch threads for training; under nnictl use cores / trialConcurrency, or concurrent trials
    # oversubscribe the CPU (2 trials x 2 threads on 2 cores ran 5x slower than one trial).
    threads: int | None = Field(None, ge=1)
    latency: LatencyConfig = LatencyConfig()
    output_dir: str | None = None


def parse_trial_config(data: Any, source: str = "trial config") -> TrialConfig:
    """Validate a mapping (already loaded from YAML) into a :class:`TrialConfig`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of keys (space, data, train, ...), got {type(data).__name__}")
    try:
        config = TrialConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(one_line_error(exc, source, TrialConfig)) from None
    from hrnas_automl.registry import get_space
    from hrnas_automl.tasks import get_task

    try:
        spec = get_space(config.space)
        task = get_task(config.task)
    except KeyError as exc:
        key = "space" if "space" in exc.args[0] else "task"
        raise ConfigError(f"{source}: {key}: {exc.args[0]}") from None
    if config.data.kind not in task.data_kinds:
        raise ConfigError(f"{source}: data.kind {config.data.kind!r} is not a dataset of task {task.name!r}; "
                          f"use one of: {', '.join(task.data_kinds)}")
    if task.head not in spec.heads:
        raise ConfigError(f"{source}: space {spec.name} has no {task.head!r} head, which task {task.name!r} needs "
                          f"(its heads: {', '.join(spec.heads)}); pick another space or task")
    if config.space_args.get("head", task.head) != task.head:
        raise ConfigError(f"{source}: space_args.head is {config.space_args['head']!r}, but task {task.name!r} "
                          f"trains the {task.head!r} head; remove space_args.head")
    try:
        task.check_options(config.task_args)
    except ValueError as exc:
        raise ConfigError(f"{source}: task_args: {exc}") from None
    return config


def load_trial_config(path: str | Path) -> TrialConfig:
    """Read and validate a trial YAML file (``yaml.safe_load``; nothing in it is executed)."""
    path = Path(path)
    data = read_yaml_file(path, "trial config")
    return parse_trial_config(data, str(path))
