"""Spaces and their samples: a registered space resolved once (:class:`Space`), its choices, validation, loading and
freezing. This module and ``spaces/`` are the only ones that read NNI's mutables.

An architecture (``arch``) is a plain ``{label: value}`` dict, so it passes unchanged through nnictl
JSON, Optuna categoricals and YAML. Freezing turns it into an ordinary ``nn.Module`` with fresh
weights and no NNI mutables inside.

Example::

    space = resolve_space("detnas-small", num_classes=10)   # resolved once; pass the object on
    arch = {label: values[0] for label, values in space.choices.items()}
    net = space.freeze(arch)                                  # the same as freeze("detnas-small", arch, num_classes=10)
"""
from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Hashable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from hrnas_automl.config import yaml_problem
from hrnas_automl.registry import (DESCRIPTIONS_FILE, SPACES, SpaceSpec, get_preset, get_space, kept_description,
                                   space_size)

if TYPE_CHECKING:  # torch stays out of the import, so pure-Python strategies can validate with this module
    from nni.nas.nn.pytorch import ModelSpace
    from torch import nn

__all__ = ["ArchitectureError", "Space", "resolve_space", "choices_of", "validate_arch", "load_arch", "freeze",
           "build_space", "space_choices", "layer_choices"]

_T = TypeVar("_T")


class ArchitectureError(ValueError):
    """An architecture dict does not fit its space (unknown/missing label, value not a candidate), or the space is
    given an argument it does not take."""


class Space:
    """A registered space with its constructor arguments, resolved once: the object the cost model, the strategies,
    the tuners and the trials pass around. Its choices are read on first use and kept, and so is whatever the cost
    model compiles for it (:meth:`memo`), so no layer looks the name up again or keeps a cache of its own.

    What it offers (description, default input, heads, presets, choices) is read from its kept description
    (:func:`~hrnas_automl.registry.kept_description`) when there is one for its arguments, so nothing is imported
    or built; otherwise from its :class:`~hrnas_automl.registry.SpaceSpec` and a build of the space.

    Build one with :func:`resolve_space` (which returns the same object for the same name and arguments).
    """

    def __init__(self, name: str, space_args: Mapping[str, Any], *, source: Any = None,
                 kept: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self.args: Mapping[str, Any] = MappingProxyType(dict(space_args))
        self.source = source  # the registry's source of the name when resolved (a name registered again: anew)
        self._kept = kept
        self._memo: dict[Hashable, Any] = {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.args.items())
        return f"Space({self.name!r}{', ' if args else ''}{args})"

    @cached_property
    def spec(self) -> SpaceSpec:
        """The registered :class:`~hrnas_automl.registry.SpaceSpec` (imports the space's module)."""
        return get_space(self.name)

    @property
    def description(self) -> str:
        """One line saying what the space is."""
        return self._kept["description"] if self._kept else self.spec.description

    @property
    def default_input(self) -> tuple[int, int, int]:
        """The paper's input (C, H, W), used for costs when none is given."""
        return tuple(self._kept["default_input"]) if self._kept else self.spec.default_input  # type: ignore[return-value]

    @property
    def heads(self) -> tuple[str, ...]:
        """The heads its ``head`` argument accepts."""
        return tuple(self._kept["heads"]) if self._kept else self.spec.heads

    @property
    def presets(self) -> list[str]:
        """The names of its presets (published architectures), in declaration order."""
        return list(self._kept["presets"]) if self._kept else list(self.spec.presets)

    def input_shape(self, shape: Sequence[int] | None = None) -> tuple[int, ...]:
        """``shape`` as a tuple, or :attr:`default_input` when None."""
        return tuple(shape) if shape is not None else self.default_input

    def build(self) -> nn.Module:
        """The supernet (the un-frozen space), with NNI's import noise silenced."""
        from hrnas_automl.nni.compat import import_nas

        import_nas()
        return self.spec.build(**self.args)

    @cached_property
    def _choices(self) -> dict[str, list[Any]]:
        kept = self._kept["choices"].get(_choices_key(self._kept, self.args)) if self._kept else None
        if kept is not None:
            return json.loads(json.dumps(kept))  # a copy: the kept data is shared by every Space
        import torch

        with torch.random.fork_rng():  # building draws initial weights: the caller's stream must not depend on this
            return space_choices(self.build())

    @property
    def choices(self) -> dict[str, list[Any]]:
        """``{label: candidates}`` (a copy; kept, or read once from a build of the space)."""
        return {label: list(values) for label, values in self._choices.items()}

    @property
    def size(self) -> int:
        """The number of architectures."""
        return space_size(self._choices)

    def validate(self, arch: Any) -> dict[str, Any]:
        """``arch`` checked against the choices, as a plain dict in choices order (:func:`validate_arch`)."""
        return validate_arch(arch, self._choices, self.name)

    def canonical(self, arch: Mapping[str, Any]) -> dict[str, Any]:
        """``arch`` validated, in the one form every sample of its network shares (the space's
        :attr:`~hrnas_automl.registry.SpaceSpec.canonical`; unchanged when it has none): strategies and tuners compare
        these, so no search trains one network twice."""
        arch = self.validate(arch)
        return arch if self.spec.canonical is None else self.spec.canonical(arch)

    def freeze(self, arch: Mapping[str, Any]) -> nn.Module:
        """Validate ``arch`` and build the fixed network it names (fresh weights, plain torch layers)."""
        from hrnas_automl.nni.compat import import_nas

        arch = self.validate(arch)
        import_nas()
        from nni.nas.space import model_context

        with model_context(arch):
            return self.build()

    def with_args(self, **space_args: Any) -> Space:
        """The same space with more (or other) constructor arguments."""
        return resolve_space(self.name, **{**self.args, **space_args})

    def memo(self, key: Hashable, compute: Callable[[], _T]) -> _T:
        """``compute()`` once per ``key`` for this space (cost tables, latency tables, counts), then kept."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]


_RESOLVED: dict[tuple[str, str], Space] = {}


def resolve_space(space: str | Space, **space_args: Any) -> Space:
    """The :class:`Space` of a registered name with these constructor arguments (the same object every time), or
    ``space`` itself (with ``space_args`` added) when it is already resolved.

    Raises:
        KeyError: an unknown name (the message lists the registered spaces).
        ArchitectureError: an argument the space does not take.
    """
    if isinstance(space, Space):
        return space.with_args(**space_args) if space_args else space
    source, key = SPACES.source(space), (space, json.dumps(space_args, sort_keys=True))
    if key not in _RESOLVED or _RESOLVED[key].source is not source:  # a name registered again resolves anew
        kept = kept_description(space)
        takes = kept["arguments"] if kept else _init_parameters(space)
        unknown = sorted(set(space_args) - set(takes)) if takes is not None else []
        if unknown:
            raise ArchitectureError(f"space {space} takes no argument {', '.join(map(repr, unknown))}; its "
                                    f"arguments: {', '.join(takes)} (--space-arg KEY=VALUE)")
        _RESOLVED[key] = Space(space, space_args, source=source, kept=kept)
    return _RESOLVED[key]


def _init_parameters(name: str) -> list[str] | None:
    """The constructor arguments space ``name`` takes (None: any), read from its factory (imports it)."""
    from hrnas_automl.nni.compat import init_parameters

    return init_parameters(get_space(name).factory)


def _choices_key(kept: Mapping[str, Any], space_args: Mapping[str, Any]) -> str:
    """The key of ``space_args`` among a kept description's choices: the arguments that differ from their defaults
    (as JSON; a value equal to its default builds the same space as leaving it out), sorted."""
    defaults = kept["defaults"]
    changed = {k: v for k, v in space_args.items() if k not in defaults or _json(v) != _json(defaults[k])}
    return _json(changed)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


def describe_space(space: str, kept_args: Sequence[Mapping[str, Any]] = ({},)) -> dict[str, Any]:
    """A fresh description of built-in space ``space`` (builds it once per entry of ``kept_args``): what
    :data:`~hrnas_automl.registry.DESCRIPTIONS_FILE` keeps for it, and what its check compares with."""
    from hrnas_automl.nni.compat import init_defaults, init_parameters

    spec = get_space(space)
    defaults = {k: v for k, v in init_defaults(spec.factory).items() if _is_json(v)}
    kept: dict[str, Any] = {
        "target": SPACES.source(space), "description": spec.description, "default_input": list(spec.default_input),
        "heads": list(spec.heads), "presets": list(spec.presets), "arguments": init_parameters(spec.factory),
        "defaults": defaults, "choices": {}}
    for args in kept_args:
        kept["choices"][_choices_key(kept, args)] = Space(space, args).choices
    return kept


def _is_json(value: Any) -> bool:
    """Whether ``value`` comes back from JSON as itself (not a tuple as a list, not an object as an error)."""
    try:
        return repr(json.loads(json.dumps(value))) == repr(value)
    except (TypeError, ValueError):
        return False


KEPT_SPACE_ARGS: dict[str, list[dict[str, Any]]] = {
    "detnas-large": [{}],
    "detnas-small": [{}, {"num_classes": 10}, {"head": "backbone"}],
    "hrnas": [{}, {"head": "segmentation"}, {"head": "keypoints"},
              {"setting": "tiny", "bn_momentum": 0.1, "head": "segmentation"},
              {"setting": "tiny", "bn_momentum": 0.1, "head": "segmentation", "num_classes": 4},
              {"setting": "tiny", "transformer": False, "head": "segmentation"}],
    "lite-hrnet": [{}],
    "ranet": [{}, {"num_classes": 4}],
}
"""The space arguments whose choices are kept, besides the defaults: those of the examples (their nnictl
experiments' tuners, trials, ``make examples``) and of the presets; any other arguments build the space."""


def write_descriptions(path: str | Path = DESCRIPTIONS_FILE) -> None:
    """Regenerate the kept descriptions of the built-in spaces (``make descriptions``) from the spaces themselves."""
    from hrnas_automl.files import write_json_atomic

    spaces = {name: describe_space(name, KEPT_SPACE_ARGS.get(name, [{}])) for name in SPACES.names()
              if isinstance(SPACES.source(name), str) and SPACES.source(name).startswith("hrnas_automl.")}
    write_json_atomic({"format": 1, "spaces": spaces}, Path(path), indent=1)


def build_space(space: str | Space, **space_args: Any) -> nn.Module:
    """Build the supernet of a registered space, with NNI's import noise silenced."""
    return resolve_space(space, **space_args).build()


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


def choices_of(space: str | Space, **space_args: Any) -> dict[str, list[Any]]:
    """``{label: candidates}`` of a registered space (built once per set of arguments, then kept)."""
    return resolve_space(space, **space_args).choices


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
        raise ArchitectureError(f"architecture file {ref} is not valid JSON/YAML: {yaml_problem(exc)}") from None
    if isinstance(data, Mapping) and "arch" in data:
        if not isinstance(data["arch"], Mapping):
            raise ArchitectureError(f"architecture file {ref}: 'arch' must be a {{label: value}} mapping, got "
                                    f"{type(data['arch']).__name__} {data['arch']!r}")
        return data.get("space"), dict(data["arch"])
    if not isinstance(data, Mapping):
        raise ArchitectureError(f"architecture file {ref} must hold a {{label: value}} mapping, "
                                f"got {type(data).__name__}")
    return None, dict(data)


def freeze(space: str | Space, arch: Mapping[str, Any], **space_args: Any) -> nn.Module:
    """Validate ``arch`` and build the fixed network it names (fresh weights, plain torch layers)."""
    return resolve_space(space, **space_args).freeze(arch)
