"""The one-shot YAML files: ``hrnas-automl oneshot train --config supernet.yml`` and ``... search --config
search.yml``, validated into pydantic models with the same one-line errors as the trial config."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from hrnas_automl.config import (Budget, ConfigError, DeviceSettings, TrainSettings, one_line_error, parse_number,
                                 read_yaml_file, train_with_defaults)
from hrnas_automl.trial.config import DataConfig

__all__ = ["SupernetTrainSettings", "SUPERNET_TRAIN", "SupernetConfig", "SearchConfig", "load_config"]

_Model = TypeVar("_Model", bound=BaseModel)


@dataclass(frozen=True)
class SupernetTrainSettings(TrainSettings):
    """Path-wise training: one sampled path per step, SGD with linear LR decay to 0 (REFERENCE §3.3), for
    ``steps`` steps (or ``epochs`` passes when ``steps`` is null). :class:`~hrnas_automl.config.TrainSettings` plus
    how paths are drawn and how often the resumable checkpoint is written; what a ``train:`` block leaves out
    comes from :data:`SUPERNET_TRAIN`. Weight decay spares BN / biases, as the official train.py."""

    # None: uniform paths (DetNAS COCO supernet); [[lo, hi], ...]: a MACs bin (backbone Conv2d MACs at
    # macs_input) drawn uniformly, then paths redrawn (<= 500 tries) until one falls in it (Supernet-ImageNet
    # train.py, bins [290e6, 300e6) ... [350e6, 360e6); REFERENCE §3.3).
    macs_bins: tuple[tuple[float, float], ...] | None = None
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        if self.macs_bins is not None:  # budgets: read as every other budget is (parse_number)
            object.__setattr__(self, "macs_bins", tuple(
                tuple(parse_number("train.macs_bins", bound, allow_none=False) for bound in pair)
                for pair in self.macs_bins))
        super().__post_init__()

    def checks(self) -> tuple[tuple[str, bool, str], ...]:
        bins_ok = self.macs_bins is None or (len(self.macs_bins) >= 1 and all(
            len(pair) == 2 and pair[0] < pair[1] for pair in self.macs_bins))
        return (*super().checks(),
                ("macs_bins", bins_ok, "[[low, high], ...] with low < high in every bin, or null"),
                ("checkpoint_every", self.checkpoint_every >= 1, ">= 1"))


SUPERNET_TRAIN = SupernetTrainSettings(steps=200, batch_size=8, lr=0.01)


class SupernetConfig(BaseModel):
    """Supernet training on detection data; ``init_from`` starts from another supernet checkpoint's weights
    (fine-tuning), ``checkpoint`` is written every ``train.checkpoint_every`` steps and resumed from."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    space: str = "detnas-small"
    space_args: dict[str, Any] = Field(default_factory=dict)
    data: DataConfig
    detector: dict[str, int] = Field(default_factory=dict)  # fpn_channels, head_depth
    train: Annotated[SupernetTrainSettings, BeforeValidator(partial(train_with_defaults, defaults=SUPERNET_TRAIN))] = (
        SUPERNET_TRAIN)
    macs_input: tuple[int, int, int] = (3, 224, 224)  # DetNAS's constraint: backbone Conv2d MACs at 224
    checkpoint: str
    init_from: str | None = None
    threads: int | None = Field(1, ge=1)


class SearchConfig(BaseModel):
    """Search on a trained supernet; ``state`` is the resumable search state (JSON, rewritten atomically)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    supernet: str
    state: str
    # a name of hrnas_automl.registry.STRATEGIES (random: the same budget, for comparison) and its own options;
    # Evolution's defaults are DetNAS's EA (arch_search_config.py:24-36, REFERENCE §3.3), 20 generations of 50.
    strategy: str = "evolution"
    strategy_args: dict[str, Any] = Field(default_factory=dict)
    candidates: int = Field(1000, ge=1)  # architectures to evaluate (evolution: generations x population_size)
    seed: int = 0
    max_conv_macs: Budget = Field(None, gt=0)  # backbone Conv2d MACs at the supernet's macs_input (DetNAS)
    bn_batches: int = Field(10, ge=1)  # DetNAS: 500 training iterations of BN re-statistics
    batch_size: int = Field(8, ge=1)
    threads: int | None = Field(1, ge=1)
    runtime: DeviceSettings = DeviceSettings()  # where candidates are recalibrated and evaluated (device, amp)


def load_config(path: str | Path, model: type[_Model]) -> _Model:
    """Read a YAML file (``yaml.safe_load``) into ``model``; any problem is a one-line :class:`ConfigError`."""
    path = Path(path)
    data = read_yaml_file(path, "config")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(one_line_error(exc, str(path), model)) from None
