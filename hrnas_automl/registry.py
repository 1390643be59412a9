"""Registry of search spaces and named architectures (presets).

Spaces register themselves when ``hrnas_automl.spaces`` is imported; everything else looks them up by
name, so the CLI, the trial entry point, the NNI tuners and Optuna share one list.
"""
from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from hrnas_automl.cost.tables import CostTable

__all__ = [
    "SpaceSpec", "Preset", "register_space", "get_space", "list_spaces", "get_preset", "list_presets", "lazy_exports",
]

Arch = dict[str, Any]


@dataclass(frozen=True)
class SpaceSpec:
    """A registered search space: how to build it and what it offers.

    Attributes:
        name: public name (``detnas-small``).
        factory: builds the NNI ``ModelSpace``; keyword arguments select head / classes / widths.
        description: one line for ``hrnas-automl spaces``.
        default_input: (C, H, W) used for costs when the user gives none (the paper's input size).
        heads: names accepted by ``factory(head=...)``.
        cost_groups: for the analytic cost (:mod:`hrnas_automl.cost`), ``choices -> groups of labels`` whose
            effects on MACs/params/latency add up independently (one group holding every label: an exhaustive
            table, for small spaces). None: every label is a ``LayerChoice`` and counts on its own.
        cost_compiler: a space's own table compiler, ``(build, choices, input_shape, measure, metrics) ->
            CostTable`` (:mod:`hrnas_automl.cost.tables`), for spaces whose units are not LayerChoices and too many
            for whole networks per group (HR-NAS: each unit counted alone); it wins over ``cost_groups``.
    """

    name: str
    factory: Callable[..., nn.Module]
    description: str
    default_input: tuple[int, int, int]
    heads: tuple[str, ...] = ("classifier",)
    cost_groups: Callable[[Mapping[str, list[Any]]], list[list[str]]] | None = None
    cost_compiler: Callable[..., CostTable] | None = None

    def build(self, **kwargs: Any) -> nn.Module:
        """Build the space (the supernet) with the given constructor arguments."""
        return self.factory(**kwargs)


@dataclass(frozen=True)
class Preset:
    """A published architecture: a sample of ``space`` plus where it comes from."""

    name: str
    space: str
    arch: Mapping[str, Any]
    source: str


_SPACES: dict[str, SpaceSpec] = {}
_PRESETS: dict[str, Preset] = {}


def register_space(spec: SpaceSpec, presets: Mapping[str, tuple[Arch, str]] = MappingProxyType({})) -> SpaceSpec:
    """Add a space (and its presets: name -> (arch, source)) to the registry; names must be new."""
    if spec.name in _SPACES:
        raise ValueError(f"space {spec.name!r} is already registered")
    _SPACES[spec.name] = spec
    for name, (arch, source) in presets.items():
        if name in _PRESETS:
            raise ValueError(f"preset {name!r} is already registered")
        _PRESETS[name] = Preset(name, spec.name, MappingProxyType(dict(arch)), source)
    return spec


def _load_builtin() -> None:
    from hrnas_automl.nni.compat import quiet_nni

    quiet_nni()  # the spaces import nni.nas, which warns about torch 2.13 on first import
    import hrnas_automl.spaces  # noqa: F401  (registers the built-in spaces)


def _lookup(table: Mapping[str, Any], name: str, what: str, listing: str) -> Any:
    _load_builtin()
    try:
        return table[name]
    except KeyError:
        raise KeyError(f"unknown {what} {name!r}; {listing}: {', '.join(sorted(table))}") from None


def get_space(name: str) -> SpaceSpec:
    """Look a space up by name; an unknown name raises ``KeyError`` listing the known ones."""
    return _lookup(_SPACES, name, "space", "registered spaces")


def list_spaces() -> list[SpaceSpec]:
    """All registered spaces, sorted by name."""
    _load_builtin()
    return [_SPACES[k] for k in sorted(_SPACES)]


def get_preset(name: str) -> Preset:
    """Look a preset up by name; an unknown name raises ``KeyError`` listing the known ones."""
    return _lookup(_PRESETS, name, "preset", "presets")


def list_presets(space: str | None = None) -> list[Preset]:
    """Presets, optionally only those of one space."""
    _load_builtin()
    return [p for k, p in sorted(_PRESETS.items()) if space is None or p.space == space]


def space_size(choices: Mapping[str, list[Any]]) -> int:
    """Number of architectures in a space given its choices (product of candidate counts)."""
    return math.prod(len(v) for v in choices.values())


def lazy_exports(package: str, modules: Mapping[str, Sequence[str]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) for ``package``: each name is imported from its submodule on first use
    (``{submodule: names}``), so importing a package costs nothing until a name is used."""
    where = {name: f"{package}.{module}" for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(where[name]), name)

    return __getattr__
