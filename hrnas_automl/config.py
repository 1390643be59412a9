"""Configuration pieces every entry point shares, with no torch or NNI import: the one-line
:class:`ConfigError`, YAML reading, pydantic errors as one line, number parsing and the training settings.

Each YAML entry point (trial, prune, oneshot, tune) declares its own pydantic model in its package and
validates through :func:`one_line_error`, so every bad key reads the same way.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar

import yaml
from pydantic import BaseModel, BeforeValidator, ValidationError, ValidationInfo

__all__ = ["ConfigError", "read_yaml_file", "yaml_problem", "one_line_error", "parse_number", "Budget", "AMP_MODES",
           "DeviceSettings", "TrainSettings", "LOADING_KEYS", "train_with_defaults"]


class ConfigError(ValueError):
    """A configuration file or mapping is invalid; the message names the key and the fix."""


def _allowed_keys(loc: tuple[Any, ...], root: type[BaseModel]) -> list[str]:
    node: Any = root
    for part in loc[:-1]:
        fields = getattr(node, "model_fields", None) or {f.name: f for f in dataclasses.fields(node)}
        field = fields.get(part)
        node = getattr(field, "annotation", None) or getattr(field, "type", None)
        if node is None:
            return []
        if typing.get_origin(node) in (typing.Union, types.UnionType):  # `Model | None`: Model
            node = next(arg for arg in typing.get_args(node) if arg is not type(None))
    if isinstance(node, type) and issubclass(node, BaseModel):
        return list(node.model_fields)
    if dataclasses.is_dataclass(node):
        return [f.name for f in dataclasses.fields(node)]
    return []


def one_line_error(error: ValidationError, source: str, root: type[BaseModel]) -> str:
    """A validation error of ``root`` as one line naming the key: an unknown key first (a typo such as ``n_trial``
    also makes ``n_trials`` missing, and the typo is the cause), with the allowed keys and the closest one."""
    errors = error.errors()
    unknown = [e for e in errors if e["type"] in ("extra_forbidden", "unexpected_keyword_argument")]
    first = (unknown or errors)[0]
    loc = tuple(first["loc"])
    where = ".".join(str(p) for p in loc) or "(top level)"
    if unknown:
        allowed = _allowed_keys(loc, root)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"{source}: unknown key {where!r}; allowed keys here: {', '.join(allowed)}{hint}"
    if first["type"] == "missing":
        return f"{source}: missing required key {where!r}"
    return f"{source}: {where}: {first['msg']} (got {first.get('input')!r})"


def read_yaml_file(path: str | Path, what: str) -> Any:
    """The YAML of the ``what`` config file ``path`` (``yaml.safe_load``); a missing or malformed file raises a
    one-line :class:`ConfigError` naming it and the fix."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a directory; pass the YAML file itself with --config")
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist; pass the YAML file with --config")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the YAML file as UTF-8") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """What PyYAML found wrong, with the line and column it points at (its first line alone names neither)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def parse_number(name: str, value: Any, *, minimum: float | None = None, allow_none: bool = True) -> float | None:
    """``value`` as a finite float: a number, or a string PyYAML did not read as one (``6.9e6`` has no sign in
    its exponent, so YAML 1.1 keeps it a string). One parser for every budget of every config.

    Raises:
        ConfigError: not a number, not finite, or below ``minimum`` (the message names ``name`` and the fix).
    """
    if value is None and allow_none:
        return None
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be a number, got {value!r}; write e.g. 6900000 or 6.9e+6")
    if minimum is not None and number < minimum:
        raise ConfigError(f"{name} must be >= {minimum:g}, got {value!r}")
    return number


def _budget(value: Any, info: ValidationInfo) -> float | None:
    return parse_number(info.field_name or "budget", value)


# A budget field of a pydantic config (``max_macs: Budget = Field(None, gt=0)``): read by parse_number, as the
# dataclass settings and the tuners' classArgs read theirs, so 6.9e6 means 6.9e6 everywhere and inf, nan and
# booleans are refused.
Budget = Annotated[float | None, BeforeValidator(_budget)]


AMP_MODES = ("off", "bf16", "fp16")


@dataclass(frozen=True)
class DeviceSettings:
    """Where a network runs: the one declaration of the device keys, which every config that runs a network holds
    (a trial's, a prune trial's and the supernet's ``train:`` block through :class:`TrainSettings`, the one-shot
    search's ``runtime:`` block); resolved by :mod:`hrnas_automl.runtime.device`.

    ``device``: ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; ``amp``:
    mixed precision, ``off``, ``bf16`` or ``fp16`` (with a gradient scaler); ``channels_last``: NHWC weights.
    """

    section: ClassVar[str] = "runtime"  # the YAML block the keys are in, for error messages
    device: str = "auto"
    amp: str = "off"
    channels_last: bool = False

    def checks(self) -> tuple[tuple[str, bool, str], ...]:
        """``(field, holds, what it must be)`` per field; a subclass adding fields extends them."""
        return (
            ("device", isinstance(self.device, str)
             and re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device) is not None, "auto, cpu, cuda, cuda:N or mps"),
            ("amp", self.amp in AMP_MODES, " | ".join(AMP_MODES)),
            ("channels_last", isinstance(self.channels_last, bool), "true or false"),
        )

    def __post_init__(self) -> None:
        for name, ok, need in self.checks():
            if not ok:
                raise ValueError(f"{self.section}.{name} must be {need}, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class TrainSettings(DeviceSettings):
    """How one network is trained: the one declaration of these settings, read by the one trainer
    (:mod:`hrnas_automl.tasks.training`) of every loop of the package; validated on construction (``ValueError``
    naming the field, also inside the pydantic configs that hold it as their ``train:`` block).

    The length of a run is ``epochs`` passes over the training split or, when ``steps`` is set, that many
    optimizer steps (the last epoch stops early), as ``max_steps`` overrides the epochs in Hugging Face's trainer.
    The device keys come from :class:`DeviceSettings`; ``sync_bn`` synchronises BatchNorm statistics over the
    processes of a ``torchrun`` launch (:mod:`hrnas_automl.runtime.distributed`; no effect in one process).
    """

    section: ClassVar[str] = "train"
    epochs: int = 2
    steps: int | None = None  # optimizer steps instead of epochs (the one-shot supernet counts steps)
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.0
    seed: int = 0
    sync_bn: bool = False
    progress: bool = False  # tqdm bars when run by hand
    # How batches are loaded (hrnas_automl.data.loading.make_loader, every DataLoader of the package): worker
    # processes (0: in the training process), page-locked batches (null: when training on CUDA), workers kept
    # between passes, and batches each worker loads ahead.
    num_workers: int = 0
    pin_memory: bool | None = None
    persistent_workers: bool = True
    prefetch_factor: int = 2

    def checks(self) -> tuple[tuple[str, bool, str], ...]:
        """``(field, holds, what it must be)`` per field; a subclass adding fields extends them."""
        return (
            *super().checks(),
            ("epochs", self.epochs >= 1, ">= 1"),
            ("steps", self.steps is None or self.steps >= 1, ">= 1 or null"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("momentum", self.momentum >= 0, ">= 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
            ("sync_bn", isinstance(self.sync_bn, bool), "true or false"),
            ("num_workers", self.num_workers >= 0, ">= 0"),
            ("prefetch_factor", self.prefetch_factor >= 1, ">= 1"),
        )


# The train: keys of how batches are loaded: they change no result (hrnas_automl.data.loading), so a checkpoint
# written with other values resumes.
LOADING_KEYS = ("num_workers", "pin_memory", "persistent_workers", "prefetch_factor")


def train_with_defaults(value: Any, defaults: TrainSettings) -> Any:
    """A ``train:`` mapping with every key it omits taken from ``defaults``, an entry point's own recipe (the
    supernet's 200 steps of 8 images, the slimming objective's 6 epochs without weight decay) rather than
    :class:`TrainSettings`' defaults; anything else is returned unchanged, for the validator to judge."""
    if isinstance(value, Mapping):
        return {**{f.name: getattr(defaults, f.name) for f in dataclasses.fields(defaults)}, **value}
    return value
