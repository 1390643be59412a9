"""The one registry: search spaces (with their presets), tasks, data kinds, tuning objectives and strategies.

Every kind is a :class:`Registry`: built-ins are declared below as ``name -> "module:attribute"`` and imported on
first lookup (a space module imports NNI and torch, so listing names stays cheap); a third-party package adds its
own through the entry-point group ``hrnas_automl.<kind>`` (``[project.entry-points."hrnas_automl.spaces"]``,
``my-space = "my_pkg.spaces:SPEC"``) or at run time with :meth:`Registry.register`. The CLI, the trial entry point,
the NNI tuners and Optuna all look names up here, so they share one list.

What a built-in space offers (description, default input, heads, presets, arguments, and its choices for the
space arguments of the defaults, examples and presets) is also kept as data, :data:`DESCRIPTIONS_FILE`
(:func:`kept_description`), generated from the spaces by ``make descriptions`` and checked against them by
``tests/test_descriptions.py``: listing, describing and sampling a space then imports neither NNI nor torch.
"""
from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from torch import nn

    from hrnas_automl.cost.tables import CostTable

__all__ = ["Registry", "SpaceSpec", "Preset", "SPACES", "TASKS", "DATA", "OBJECTIVES", "STRATEGIES", "get_space",
           "list_spaces", "get_preset", "list_presets", "space_size", "lazy_exports", "DESCRIPTIONS_FILE",
           "kept_description"]

T = TypeVar("T")
Arch = dict[str, Any]
DESCRIPTIONS_FILE = Path(__file__).with_name("space_descriptions.json")
"""The kept descriptions of the built-in spaces (package data; ``make descriptions`` writes it)."""


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


class Registry(Generic[T]):
    """Named objects of one ``kind``, looked up by name; unknown names raise a ``KeyError`` listing the known ones.

    Args:
        kind: what the objects are (``space``, ``task``...), for messages.
        builtins: ``name -> "module:attribute"``, imported on first lookup.
        plural: the plural of ``kind`` (default ``kind + "s"``); the entry-point group is ``hrnas_automl.<plural>``.
    """

    def __init__(self, kind: str, builtins: Mapping[str, str], *, plural: str | None = None) -> None:
        self.kind, self.plural = kind, plural or f"{kind}s"
        self.group = f"hrnas_automl.{self.plural}"
        self._targets: dict[str, str] = dict(builtins)
        self._objects: dict[str, T] = {}
        self._imported: dict[str, T] = {}  # what get() imported from a target (not registered at run time)
        self._plugins_read = False

    def _read_plugins(self) -> None:
        if not self._plugins_read:
            self._plugins_read = True
            for ep in entry_points(group=self.group):
                self._targets.setdefault(ep.name, ep.value)

    def register(self, name: str, obj: T) -> T:
        """Add ``obj`` under a new ``name``; returns it (usable as a decorator's body)."""
        self._read_plugins()
        if name in self._targets or name in self._objects:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._objects[name] = obj
        return obj

    def names(self) -> list[str]:
        """Every registered name: built-ins in declaration order, then plugins (nothing is imported)."""
        self._read_plugins()
        return [*self._targets, *(n for n in self._objects if n not in self._targets)]

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def get(self, name: str) -> T:
        """The object registered as ``name``, imported on first use.

        Raises:
            KeyError: no such name (the message lists the registered ones).
            ValueError: its module cannot be imported (a plugin whose package is missing).
        """
        if name not in self._objects:
            self._read_plugins()
            if name not in self._targets:
                raise KeyError(f"unknown {self.kind} {name!r}; registered {self.plural}: {', '.join(self.names())}")
            try:
                self._objects[name] = self._imported[name] = _load(self._targets[name])
            except ImportError as exc:
                raise ValueError(f"{self.kind} {name!r} ({self._targets[name]}) cannot be imported: {exc}; install "
                                 "the package that provides it") from None
        return self._objects[name]

    def source(self, name: str) -> str | T:
        """Where ``name`` comes from, without importing it: its ``"module:attribute"`` target while the name is
        served by it (imported or not), else the object registered under it at run time.

        Raises:
            KeyError: no such name (the message lists the registered ones).
        """
        self._read_plugins()
        if name in self._objects and self._imported.get(name) is not self._objects[name]:
            return self._objects[name]
        if name not in self._targets:
            raise KeyError(f"unknown {self.kind} {name!r}; registered {self.plural}: {', '.join(self.names())}")
        return self._targets[name]

    def items(self) -> list[tuple[str, T]]:
        """``(name, object)`` of every entry, in :meth:`names` order (imports them all)."""
        return [(name, self.get(name)) for name in self.names()]


@dataclass(frozen=True)
class Preset:
    """A published architecture: a sample of ``space`` plus where it comes from."""

    name: str
    space: str
    arch: Mapping[str, Any]
    source: str


@dataclass(frozen=True)
class SpaceSpec:
    """A search space: how to build it and what it offers; a space module defines one as data (no side effects).

    Attributes:
        name: public name (``detnas-small``).
        factory: builds the NNI ``ModelSpace``; keyword arguments select head / classes / widths.
        description: one line for ``hrnas-automl spaces``.
        default_input: (C, H, W) used for costs when the user gives none (the paper's input size).
        heads: names accepted by ``factory(head=...)``.
        presets: ``{name: (arch, source)}`` of published architectures (read-only :class:`Preset` s once built).
        cost_groups: for the analytic cost (:mod:`hrnas_automl.cost`), ``choices -> groups of labels`` whose
            effects on MACs/params/latency add up independently (one group holding every label: an exhaustive
            table, for small spaces). None: every label is a ``LayerChoice`` and counts on its own.
        cost_compiler: a space's own table compiler, ``(build, choices, input_shape, measure, metrics) ->
            CostTable`` (:mod:`hrnas_automl.cost.tables`), or its ``"module:attribute"`` (imported when a table is
            compiled), for spaces whose units are not LayerChoices and too many for whole networks per group
            (HR-NAS: each unit counted alone); it wins over ``cost_groups``.
        canonical: ``sample -> sample`` giving every sample of one network the same form (Lite-HRNet: the block
            labels of modules past a stage's depth set to the first block type), so searches compare networks, not
            samples; None: every sample is a different network (DetNAS, HR-NAS, RANet).
    """

    name: str
    factory: Callable[..., nn.Module]
    description: str
    default_input: tuple[int, int, int]
    heads: tuple[str, ...] = ("classifier",)
    presets: Mapping[str, Any] = field(default_factory=dict)
    cost_groups: Callable[[Mapping[str, list[Any]]], list[list[str]]] | None = None
    cost_compiler: Callable[..., CostTable] | str | None = None
    canonical: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        presets = {name: p if isinstance(p, Preset) else Preset(name, self.name, MappingProxyType(dict(p[0])), p[1])
                   for name, p in self.presets.items()}
        object.__setattr__(self, "presets", MappingProxyType(presets))

    def build(self, **kwargs: Any) -> nn.Module:
        """Build the space (the supernet) with the given constructor arguments."""
        return self.factory(**kwargs)

    def compiler(self) -> Callable[..., CostTable] | None:
        """:attr:`cost_compiler`, imported if it is given as ``"module:attribute"``."""
        return _load(self.cost_compiler) if isinstance(self.cost_compiler, str) else self.cost_compiler


SPACES: Registry[SpaceSpec] = Registry("space", {
    "detnas-large": "hrnas_automl.spaces.detnas:DETNAS_LARGE",
    "detnas-small": "hrnas_automl.spaces.detnas:DETNAS_SMALL",
    "hrnas": "hrnas_automl.spaces.hrnas:SPEC",
    "lite-hrnet": "hrnas_automl.spaces.lite_hrnet:SPEC",
    "ranet": "hrnas_automl.spaces.ranet:SPEC",
})
TASKS: Registry[Any] = Registry("task", {
    "classification": "hrnas_automl.tasks.classification:TASK",
    "detection": "hrnas_automl.tasks.detection:TASK",
    "early-exit": "hrnas_automl.tasks.early_exit_task:TASK",
    "keypoints": "hrnas_automl.tasks.keypoints:TASK",
    "segmentation": "hrnas_automl.tasks.segmentation:TASK",
})
# Data kinds are named "<data family>/<kind>" (a task reads one family): the same user-facing kind can exist for
# two families (generated `shapes` for segmentation and for detection).
DATA: Registry[Callable[..., Any]] = Registry("data kind", plural="data", builtins={
    "classification/synthetic": "hrnas_automl.data.synthetic:build_synthetic",
    "classification/digits": "hrnas_automl.data.digits:build_digits",
    "classification/folder": "hrnas_automl.data.image_folder:build_image_folder",
    "segmentation/cityscapes": "hrnas_automl.data.segmentation:build_cityscapes",
    "segmentation/ade20k": "hrnas_automl.data.segmentation:build_ade20k",
    "segmentation/shapes": "hrnas_automl.data.shapes:build_shapes",
    "keypoints/coco-keypoints": "hrnas_automl.data.coco_keypoints:build_coco_keypoints",
    "keypoints/stick-figures": "hrnas_automl.data.stick_figures:build_stick_figures",
    "detection/shapes": "hrnas_automl.data.coco_detection:build_shapes",
    "detection/coco": "hrnas_automl.data.coco_detection:build_coco",
})
OBJECTIVES: Registry[Callable[..., Any]] = Registry("objective", {
    "fine-grained": "hrnas_automl.trial.prune:tuning_objective",  # the HR-NAS search as a prune trial (§1.3)
    "network-slimming": "hrnas_automl.tuning.slimming:tuning_objective",
})
STRATEGIES: Registry[Any] = Registry("strategy", plural="strategies", builtins={
    "evolution": "hrnas_automl.strategies.evolution:Evolution",
    "random": "hrnas_automl.strategies.random_search:RandomSearch",
})


def _import_nas() -> None:
    from hrnas_automl.nni.compat import import_nas

    import_nas()  # the spaces import nni.nas: quietly (it warns on torch 2.13) and without pytorch-lightning


def get_space(name: str) -> SpaceSpec:
    """Look a space up by name (importing its module); an unknown name raises ``KeyError`` listing the known ones."""
    if name in SPACES:
        _import_nas()
    return SPACES.get(name)


def list_spaces() -> list[SpaceSpec]:
    """All registered spaces, in registry order (built-ins by name)."""
    _import_nas()
    return [spec for _, spec in SPACES.items()]


@cache
def _kept_descriptions() -> dict[str, Any]:
    try:
        return json.loads(DESCRIPTIONS_FILE.read_text())["spaces"]
    except FileNotFoundError:  # not generated yet (`make descriptions`): every space is built to be described
        return {}


def kept_description(name: str) -> Mapping[str, Any] | None:
    """The kept description of space ``name`` (:data:`DESCRIPTIONS_FILE`), or None when there is none or the name
    is no longer served by the target it was generated from (a space registered at run time).

    Raises:
        KeyError: an unknown name (the message lists the registered spaces).
    """
    kept = _kept_descriptions().get(name)
    return kept if kept is not None and kept["target"] == SPACES.source(name) else None


def list_presets(space: str | None = None) -> list[Preset]:
    """Presets, optionally only those of one space, sorted by name."""
    specs = [get_space(space)] if space is not None else list_spaces()
    return sorted((p for spec in specs for p in spec.presets.values()), key=lambda p: p.name)


def get_preset(name: str) -> Preset:
    """Look a preset up by name; an unknown name raises ``KeyError`` listing the known ones."""
    presets = {p.name: p for p in list_presets()}
    if name not in presets:
        raise KeyError(f"unknown preset {name!r}; presets: {', '.join(sorted(presets))}")
    return presets[name]


def space_size(choices: Mapping[str, Sequence[Any]]) -> int:
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
