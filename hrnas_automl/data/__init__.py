"""Datasets the tasks train on: generated, bundled (scikit-learn digits) and a user's image folder.

Every kind is registered in :data:`hrnas_automl.registry.DATA` as ``"<family>/<kind>"`` (the family is what a task
reads: classification, segmentation, keypoints, detection) and built through :func:`build_data`; the kinds share
:func:`call_builder` and :func:`check_size`. Every
classification kind returns a :class:`ClassificationData` whose datasets yield ``(float tensor CxHxW, int label)``,
so the classification task and the cost/latency probes never look at where the images came from.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

__all__ = ["ClassificationData", "TensorImageDataset", "data_kinds", "build_data", "build_classification_data",
           "call_builder", "check_size"]


@dataclass(frozen=True)
class ClassificationData:
    """A train/val split of labelled images plus what a model needs to be built for it."""

    train: Dataset
    val: Dataset
    num_classes: int
    classes: tuple[str, ...]
    input_shape: tuple[int, int, int]  # (C, H, W)


class TensorImageDataset(Dataset):
    """In-memory images ``(N, C, H, W)`` with integer labels ``(N,)``; items are ``(image, int label)``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.ndim != 4 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(f"TensorImageDataset needs images (N, C, H, W) and labels (N,), "
                             f"got {tuple(images.shape)} and {tuple(labels.shape)}")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


def _check_option(kind: str, name: str, value: Any, need: str, test: Callable[[Any], bool], *,
                  integer: bool = False) -> None:
    """Raise the one-line error of an option that is not a number (an int if ``integer``) passing ``test``."""
    numeric = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    if not (numeric and test(value)):
        raise ValueError(f"{kind} data: option {name}={value!r} is invalid; it must be {need}")


def data_kinds(family: str) -> tuple[str, ...]:
    """The registered data kinds of a data ``family`` (``classification``, ``segmentation``, ...)."""
    from hrnas_automl.registry import DATA

    return tuple(name.partition("/")[2] for name in DATA.names() if name.startswith(f"{family}/"))


def build_data(family: str, kind: str, options: Mapping[str, Any]) -> Any:
    """The dataset of ``kind`` in ``family`` built with that kind's ``options`` (registry ``DATA``, entries
    ``"<family>/<kind>"``). Unknown kinds, unknown options and a missing required option raise a one-line
    ``ValueError`` that lists what is accepted."""
    from hrnas_automl.registry import DATA

    if f"{family}/{kind}" not in DATA:
        raise ValueError(f"unknown {family} data kind {kind!r}; use one of: {', '.join(data_kinds(family))}")
    return call_builder(kind, DATA.get(f"{family}/{kind}"), options)


def build_classification_data(kind: str, **options: Any) -> ClassificationData:
    """Build the classification dataset of ``kind`` ("synthetic" | "digits" | "folder") with its options."""
    return build_data("classification", kind, options)


def call_builder(kind: str, build: Callable[..., Any], options: Mapping[str, Any]) -> Any:
    """``build(**options)`` after checking ``options`` against its keyword parameters (one-line errors)."""
    params = inspect.signature(build).parameters
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for data kind {kind!r}; "
                         f"valid options: {', '.join(params)}")
    missing = [name for name, p in params.items() if p.default is inspect.Parameter.empty and name not in options]
    if missing:
        raise ValueError(f"data kind {kind!r} needs option(s) {', '.join(missing)}; "
                         f"valid options: {', '.join(params)}")
    return build(**options)


def check_size(kind: str, name: str, value: Any, minimum: int = 8) -> tuple[int, int]:
    """An image size option given as ``S`` or ``[H, W]`` as ``(H, W)``; each side an integer >= ``minimum``."""
    sides = [value, value] if isinstance(value, int) else value
    ok = (isinstance(sides, (list, tuple)) and len(sides) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in sides))
    if not ok:
        raise ValueError(f"{kind} data: option {name}={value!r} is invalid; give an integer >= {minimum} or "
                         f"[height, width] of such integers")
    return int(sides[0]), int(sides[1])
