"""Tasks: what a trial trains a frozen network on, and how it scores it.

A :class:`Task` names the space head it needs, builds its data from the trial config's ``data`` block,
tells the space what to build for that data (classes, channels, keypoints) and trains + scores the
network with the package's one trainer (:mod:`hrnas_automl.tasks.training`, its loss and evaluation plugged
in), returning a metric dict whose ``task.metric`` key becomes NNI's ``default``. The trial entry
point (:mod:`hrnas_automl.trial`) is the same for every task; a new task is one class plus one line in
:data:`hrnas_automl.registry.TASKS` (or an entry point of the group ``hrnas_automl.tasks``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from hrnas_automl.config import TrainSettings

__all__ = ["Task", "EpochCallback", "get_task", "task_names"]

EpochCallback = Callable[[int, dict[str, Any]], None]


class Task(ABC):
    """One kind of trial: data, the head it trains and its metric.

    Attributes:
        name: the trial config's ``task:`` value.
        head: the space head it trains (``SpaceSpec.heads`` must list it).
        metric: the metric key reported as ``default`` (higher is better).
        data_family: the family of data kinds it reads (:func:`hrnas_automl.data.build_data`); default its name.
    """

    name: str
    head: str
    metric: str
    data_family: str = ""

    @property
    def data_kinds(self) -> tuple[str, ...]:
        """The ``data.kind`` values it accepts (the registered kinds of its data family)."""
        from hrnas_automl.data import data_kinds

        return data_kinds(self.data_family or self.name)

    def build_data(self, kind: str, options: Mapping[str, Any]) -> Any:
        """The dataset of ``kind`` with the trial config's data options; it has ``input_shape`` (C, H, W)."""
        from hrnas_automl.data import build_data

        return build_data(self.data_family or self.name, kind, options)

    @abstractmethod
    def model_args(self, data: Any) -> dict[str, Any]:
        """Space constructor arguments this data fixes (``num_classes``, ``in_channels``, ...)."""

    @abstractmethod
    def fit(self, model: nn.Module, data: Any, settings: TrainSettings, options: Mapping[str, Any],
            on_epoch: EpochCallback) -> dict[str, Any]:
        """Train ``model`` and return the final metrics (``self.metric`` among them).

        ``options`` are the trial config's ``task_args``; ``on_epoch(index, metrics)`` is called after
        every epoch with a dict that also holds ``self.metric``.
        """

    def deployed(self, model: nn.Module, data: Any, options: Mapping[str, Any]) -> nn.Module:
        """The network that ships around the searched ``model`` (default: ``model`` itself; detection: the backbone
        inside its FPN + head), whose MACs, params and latency a trial reports."""
        return model

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Raise a one-line ``ValueError`` for ``task_args`` this task does not take (default: none)."""
        if options:
            raise ValueError(f"task {self.name!r} takes no task_args (got {', '.join(sorted(options))}); "
                             "remove task_args")


def task_names() -> list[str]:
    """The registered task names."""
    from hrnas_automl.registry import TASKS

    return TASKS.names()


def get_task(name: str) -> Task:
    """The task called ``name``; an unknown name raises a ``KeyError`` listing the known ones."""
    from hrnas_automl.registry import TASKS

    return TASKS.get(name)
