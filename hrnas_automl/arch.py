"""Architecture samples: the choices of a registered space, validation, loading and freezing.

An architecture (``arch``) is a plain ``{label: value}`` dict, so it passes unchanged through nnictl
JSON, Optuna categoricals and YAML. Freezing turns it into an ordinary ``nn.Module`` with fresh
weights and no NNI mutables inside.
"""
from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from hrnas_automl.registry import get_preset, get_space

if TYPE_CHECKING:  # torch stays out of the import, so pure-Python strategies can validate with this module
    from nni.nas.nn.pytorch import ModelSpace
    from torch import nn

__all__ = ["ArchitectureError", "choices_of", "validate_arch", "load_arch", "freeze", "build_space", "space_choices",
           "layer_choices"]


class ArchitectureError(ValueError):
    """An architecture dict does not fit its space (unknown/missing label, value not a candidate)."""


def _freeze_kwargs(kwargs: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in kwargs.items()))


def build_space(space: str, **space_args: Any) -> nn.Module:
    """Build the supernet of a registered space, with NNI's import noise silenced."""
    from hrnas_automl.nni.compat import quiet_nni

    quiet_nni()
    return get_space(space).build(**space_args)


def space_choices(space: ModelSpace) -> dict[str, list[Any]]:
    """The search space of a model space as ``{label: candidate values}``, in NNI's label order.

    An ``InputChoice`` (``CategoricalMultiple``) becomes the list of its combinations, so every label
    is a plain choice that nnictl JSON, Optuna categoricals and YAML all accept (NNI.md §1).
    """
    from nni.mutable import Categorical, CategoricalMultiple

    choices: dict[str, list[Any]] = {}
    for label, mutable in space.simplify().items():
        if isinstance(mutable, CategoricalMultiple):
            n = mutable.n_chosen or 1
            choices[label] = [list(c) for c in itertools.combinations(mutable.values, n)]
        elif isinstance(mutable, Categorical):
            choices[label] = list(mutable.values)
        else:
            raise TypeError(f"label {label!r} is a {type(mutable).__name__}; hrnas-automl spaces use discrete "
                            "choices only (nni.choice / LayerChoice / InputChoice)")
    return choices


def layer_choices(space: nn.Module) -> list[tuple[str, str, dict[str, nn.Module]]]:
    """``(module path, label, {candidate name: module})`` of every NNI ``LayerChoice`` of ``space``, in module order
    (the one-shot supernet shares these candidates; the cost model measures each alone)."""
    from nni.nas.nn.pytorch import LayerChoice

    return [(name, m.label, {n: m[n] for n in m.names}) for name, m in space.named_modules()
            if isinstance(m, LayerChoice)]


@lru_cache(maxsize=64)
def _choices(space: str, frozen_args: tuple[tuple[str, Any], ...]) -> dict[str, list[Any]]:
    import torch

    with torch.random.fork_rng():  # building draws initial weights: the caller's stream must not depend on this cache
        return space_choices(build_space(space, **{k: json.loads(v) for k, v in frozen_args}))


def choices_of(space: str, **space_args: Any) -> dict[str, list[Any]]:
    """``{label: candidates}`` of a registered space (built once per set of arguments, then cached)."""
    return {k: list(v) for k, v in _choices(space, _freeze_kwargs(space_args)).items()}


def _fmt(values: list[Any]) -> str:
    return ", ".join(json.dumps(v) if not isinstance(v, str) else v for v in values)


def validate_arch(arch: Any, choices: Mapping[str, list[Any]], space: str | None = None) -> dict[str, Any]:
    """Check an architecture against a space's choices; return it as a plain dict in choices order.

    ``space`` names the registered space in the messages (and points to ``hrnas-automl describe``).

    Raises:
        ArchitectureError: one line naming the first bad label and its allowed values.
    """
    where = f"space {space}" if space else "these choices"
    if not isinstance(arch, Mapping):
        raise ArchitectureError(f"an architecture for {where} must be a {{label: value}} mapping, "
                                f"got {type(arch).__name__}")
    for label in arch:
        if label not in choices:
            known = list(choices)
            shown = ", ".join(known[:6]) + (f", ... ({len(known)} labels)" if len(known) > 6 else "")
            hint = f"; see `hrnas-automl describe {space}`" if space else ""
            raise ArchitectureError(f"unknown label {label!r} for {where} (labels: {shown}){hint}")
    for label, values in choices.items():
        if label not in arch:
            raise ArchitectureError(f"architecture for {where} is missing label {label!r} "
                                    f"(allowed values: {_fmt(values)})")
        if arch[label] not in values:
            raise ArchitectureError(f"label {label!r} of {where} has value {arch[label]!r}; "
                                    f"allowed values: {_fmt(values)}")
    return {label: arch[label] for label in choices}


def load_arch(ref: str) -> tuple[str | None, dict[str, Any]]:
    """Read an architecture from ``preset:NAME`` or a JSON/YAML file; return (space or None, arch).

    A file may hold the bare ``{label: value}`` dict or ``{"space": ..., "arch": {...}}``.
    """
    if ref.startswith("preset:"):
        preset = get_preset(ref.removeprefix("preset:"))
        return preset.space, dict(preset.arch)
    path = Path(ref)
    if not path.is_file():
        raise ArchitectureError(f"architecture file {ref} does not exist; give a JSON file or preset:NAME "
                                "(`hrnas-automl spaces` lists the presets)")
    try:
        data = yaml.safe_load(path.read_text())  # JSON is YAML, so one loader reads both
    except yaml.YAMLError as exc:
        raise ArchitectureError(f"architecture file {ref} is not valid JSON/YAML: {str(exc).splitlines()[0]}") from None
    if isinstance(data, Mapping) and "arch" in data:
        return data.get("space"), dict(data["arch"])
    if not isinstance(data, Mapping):
        raise ArchitectureError(f"architecture file {ref} must hold a {{label: value}} mapping, "
                                f"got {type(data).__name__}")
    return None, dict(data)


def freeze(space: str, arch: Mapping[str, Any], **space_args: Any) -> nn.Module:
    """Validate ``arch`` and build the fixed network it names (fresh weights, plain torch layers)."""
    from nni.nas.space import model_context

    arch = validate_arch(arch, choices_of(space, **space_args), space)
    with model_context(arch):
        return build_space(space, **space_args)
