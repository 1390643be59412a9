"""A weight-sharing supernet from an NNI model space: every ``LayerChoice`` becomes a :class:`PathChoice`
that holds all its candidates and runs the one :func:`set_path` selects (single-path one-shot, as DetNAS's
supernet). The ``LayerChoice`` s are found by :func:`hrnas_automl.arch.layer_choices`; the candidates keep their child
names, so the supernet's state-dict keys are the space's own.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["PathChoice", "to_supernet", "set_path", "path_choices"]


class PathChoice(nn.Module):
    """All candidates of one choice ``label``; ``forward`` runs the ``active`` one."""

    def __init__(self, label: str, candidates: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.label = label
        for name, module in candidates.items():
            self.add_module(name, module)
        self.names = list(candidates)
        self.active = self.names[0]

    def forward(self, x: torch.Tensor) -> Any:
        return self._modules[self.active](x)


def to_supernet(space: nn.Module) -> nn.Module:
    """Replace every ``LayerChoice`` of ``space`` (in place) by a :class:`PathChoice`; returns ``space``.

    Raises:
        ValueError: the space has choices that are not ``LayerChoice`` (e.g. ``nni.choice`` widths), which a
            single-path supernet of whole candidate modules cannot share.
    """
    from hrnas_automl.arch import layer_choices, space_choices

    for path, label, candidates in layer_choices(space):
        parent, _, name = path.rpartition(".")
        space.get_submodule(parent)._modules[name] = PathChoice(label, candidates)
    labels = set(space_choices(space)) if hasattr(space, "simplify") else set()
    missing = labels - {c.label for c in path_choices(space)}
    if missing:
        raise ValueError(f"choices {sorted(missing)} are not LayerChoices; the one-shot supernet shares whole "
                         "candidate modules, so use a space made of LayerChoices (e.g. detnas-small)")
    return space


def path_choices(model: nn.Module) -> list[PathChoice]:
    """The :class:`PathChoice` modules of a supernet, in module order."""
    return [m for m in model.modules() if isinstance(m, PathChoice)]


def set_path(model: nn.Module, arch: Mapping[str, Any]) -> None:
    """Make every :class:`PathChoice` of ``model`` run the candidate ``arch[label]``."""
    for choice in path_choices(model):
        if choice.label not in arch:
            raise ValueError(f"the architecture has no value for {choice.label!r}; give one of {choice.names}")
        value = arch[choice.label]
        if value not in choice.names:
            raise ValueError(f"{choice.label}={value!r} is not a candidate; choose one of {choice.names}")
        choice.active = value
