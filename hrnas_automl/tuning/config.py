"""The tune YAML file (``hrnas-automl tune --config tune.yml``), validated with one-line errors.

Example::

    study_name: slimming-demo
    n_trials: 12                      # finished trials the study should hold (a rerun tops it up)
    objectives: metric+macs           # NSGA-II over (metric max, MACs min); `metric`: TPE + a pruner
    max_macs: 2.0e+5                  # budget: over-budget trials are infeasible (Optuna constraints)
    ranges: {lam: {low: 1.0e-4, high: 1.0e-1, log: true}}
    objective: network-slimming
    objective_args: {train: {epochs: 4, seed: 0}}
    storage: sqlite:///studies.db     # or {url: ..., heartbeat_interval: 60, max_retry: 1}, or {journal: s.log}

Default ranges (each can be overridden): λ 1e-6..1e-3 (log), covering HR-NAS's shipped ρ of 1e-6 to
1.8e-4 (REFERENCE §1.3); threshold 1e-4..1e-2 (log), around the shipped 1e-3; warm-up 0..10 epochs.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hrnas_automl.config import Budget, ConfigError, one_line_error, read_yaml_file

__all__ = ["Range", "TuneRanges", "StorageConfig", "TuneConfig", "parse_tune_config", "load_tune_config",
           "default_storage", "tune_search_space"]

_STORAGE_FILE = "optuna_studies.db"


class Range(BaseModel):
    """A closed interval ``[low, high]``, sampled on a log scale when ``log``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be smaller than high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        return self


class IntRange(BaseModel):
    """An integer interval ``[low, high]`` (both ends included)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    low: int = Field(ge=0)
    high: int

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if not self.low <= self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        return self


class TuneRanges(BaseModel):
    """Where the study searches λ, the pruning threshold and the warm-up length."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    lam: Range = Range(low=1e-6, high=1e-3, log=True)
    threshold: Range = Range(low=1e-4, high=1e-2, log=True)
    warmup: IntRange = IntRange(low=0, high=10)


class StorageConfig(BaseModel):
    """Where a study lives: an RDB (``url``: any SQLAlchemy URL, with Optuna's heartbeat) or a journal file
    (``journal``: Optuna's JournalStorage, no database server), and how many times a trial whose worker died
    is run again (``max_retry``; default 0: it stays FAIL and a new trial takes its place)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str | None = Field(None, min_length=1)
    journal: str | None = Field(None, min_length=1)  # a file path, relative to the tune config's folder
    heartbeat_interval: int | None = Field(None, ge=1)  # seconds; RDB only: a RUNNING trial without beats fails
    grace_period: int | None = Field(None, ge=1)  # seconds without a beat before that (default 2 x interval)
    max_retry: int = Field(0, ge=0)  # runs of a dead worker's trial again, same parameters (Optuna's retry)

    @model_validator(mode="after")
    def _one_backend(self) -> StorageConfig:
        if (self.url is None) == (self.journal is None):
            raise ValueError("give exactly one of url (an RDB, e.g. sqlite:///studies.db) and journal (a file)")
        if self.journal is not None and (self.heartbeat_interval or self.grace_period):
            raise ValueError("heartbeat_interval and grace_period need an RDB url; a journal's dead workers are "
                             "found by their process id on this machine")
        if self.grace_period is not None and self.heartbeat_interval is None:
            raise ValueError("grace_period needs heartbeat_interval")
        return self

    def __str__(self) -> str:
        return self.url or f"journal {self.journal}"


class TuneConfig(BaseModel):
    """One Optuna study: what it tunes, how it samples, where it is stored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    study_name: str = Field(min_length=1)
    storage: StorageConfig | None = None  # a URL or a mapping; default: SQLite file next to the config
    n_trials: int = Field(ge=1)
    timeout: float | None = Field(None, gt=0)  # seconds for this run, on top of n_trials
    objectives: Literal["metric+macs", "metric"] = "metric+macs"
    sampler: Literal["nsga2", "tpe", "random"] | None = None  # default: nsga2 for metric+macs, tpe for metric
    sampler_args: dict[str, Any] = Field(default_factory=dict)  # e.g. population_size, n_startup_trials
    pruner: Literal["median", "hyperband", "none"] | None = None  # default: median for metric, none otherwise
    pruner_args: dict[str, Any] = Field(default_factory=dict)  # e.g. n_startup_trials, n_warmup_steps
    seed: int = Field(0, ge=0)
    max_macs: Budget = Field(None, gt=0)
    ranges: TuneRanges = TuneRanges()
    objective: str
    objective_args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("storage", mode="before")
    @classmethod
    def _url_as_mapping(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value

    @property
    def multi_objective(self) -> bool:
        return self.objectives == "metric+macs"

    @property
    def sampler_name(self) -> str:
        return self.sampler or ("nsga2" if self.multi_objective else "tpe")

    @property
    def pruner_name(self) -> str:
        return self.pruner or ("none" if self.multi_objective else "median")

    @model_validator(mode="after")
    def _pruner_needs_one_objective(self) -> TuneConfig:
        if self.multi_objective and self.pruner not in (None, "none"):
            raise ValueError("Optuna prunes single-objective studies only; set objectives: metric or pruner: none")
        return self


def tune_search_space(ranges: TuneRanges) -> dict[str, dict[str, Any]]:
    """The nnictl search-space JSON of ``ranges`` (what :class:`~hrnas_automl.nni.optuna_tuner.OptunaTuner`
    turns back into the same Optuna distributions)."""
    def real(r: Range) -> dict[str, Any]:
        return {"_type": "loguniform" if r.log else "uniform", "_value": [r.low, r.high]}

    return {"lam": real(ranges.lam), "threshold": real(ranges.threshold),
            "warmup": {"_type": "randint", "_value": [ranges.warmup.low, ranges.warmup.high + 1]}}  # excludes upper


def default_storage(directory: str | Path = ".") -> str:
    """The SQLite URL used when a config names no storage: ``optuna_studies.db`` in ``directory``."""
    return f"sqlite:///{(Path(directory) / _STORAGE_FILE).resolve()}"


def parse_tune_config(data: Any, source: str = "tune config", directory: str | Path = ".") -> TuneConfig:
    """Validate a mapping (already loaded from YAML) into a :class:`TuneConfig`; fill in the storage."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of keys (study_name, n_trials, objective, ...), "
                          f"got {type(data).__name__}")
    try:
        config = TuneConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(one_line_error(exc, source, TuneConfig)) from None
    from hrnas_automl.tuning.objectives import objective_names

    if config.objective not in objective_names():
        raise ConfigError(f"{source}: objective: unknown objective {config.objective!r}; "
                          f"registered objectives: {', '.join(objective_names())}")
    storage = config.storage or StorageConfig(url=default_storage(directory))
    if storage.journal is not None:
        journal = Path(directory, storage.journal).resolve()
        if not journal.parent.is_dir():
            raise ConfigError(f"{source}: storage.journal: folder {journal.parent} does not exist; create it or "
                              "fix the path")
        storage = storage.model_copy(update={"journal": str(journal)})
    return config.model_copy(update={"storage": storage})


def load_tune_config(path: str | Path) -> TuneConfig:
    """Read and validate a tune YAML file (``yaml.safe_load``); the default storage sits next to it."""
    path = Path(path)
    data = read_yaml_file(path, "tune config")
    return parse_tune_config(data, str(path), path.parent)
