"""Everything that touches NNI 3.0 beyond its model-space API, in one place.

NNI is no longer developed upstream: its import-time warnings on torch 2.13, the search-space JSON
format, the trial-side reporting calls and the known landmines (shared/docs/NNI.md §6) are handled
here so that spaces and strategies stay plain PyTorch + NNI mutables (whose reading lives in
:mod:`hrnas_automl.arch`).
"""
from __future__ import annotations

import functools
import importlib
import inspect
import io
import logging
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any, TextIO

__all__ = ["quiet_nni", "import_nas", "check_pins", "init_parameters", "init_defaults", "to_nni_search_space",
           "in_nni_trial", "trial_log_output", "next_parameter", "report_intermediate", "report_final", "STRATEGY_KEY"]

STRATEGY_KEY = "strategy"
"""The parameter with which a tuner hosting several strategies (:class:`hrnas_automl.nni.tuners.MultiStrategyTuner`)
tags each trial: taken out of the parameters before the trial reads them, and added to its final result."""
_tag: dict[str, Any] = {}  # this trial's strategy tag, if its parameters had one

# NNI packages whose ``__init__`` copies in their ``.pytorch`` submodule (``shortcut_framework``): importing
# ``nni.nas.evaluator`` that way imports pytorch-lightning (and torch._dynamo), ~4 s of CPU per process.
_SHORTCUT_PACKAGES = ("nni.nas.evaluator", "nni.nas.nn", "nni.nas.hub", "nni.nas.oneshot")


def quiet_nni() -> None:
    """Silence NNI's harmless import-time noise on torch 2.13 and setuptools<81 (NNI.md §6)."""
    warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"nni(\.|$)")
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    logging.getLogger("nni").setLevel(logging.WARNING)


def import_nas() -> None:
    """Import NNI's model-space API (``nni.nas.nn.pytorch``, ``nni.nas.space``) quietly and without
    pytorch-lightning, which only NNI's evaluators and experiments use.

    NNI's shortcut packages (``nni.nas.evaluator`` = ``nni.nas.evaluator.pytorch``...) are imported with NNI's
    framework set to ``none`` (so they skip the copy, and the lightning import behind it), then the framework is
    restored and each of them copies its ``.pytorch`` submodule on the first name it lacks: code that asks for
    ``nni.nas.evaluator.Lightning`` still gets it, as NNI does it, at that moment. Call it before any
    ``nni.nas`` import (the spaces package and :mod:`hrnas_automl.arch` do).
    """
    quiet_nni()
    if "nni.nas.space" in sys.modules:
        return
    from nni.common import framework

    chosen = framework.get_default_framework()
    fresh = [name for name in _SHORTCUT_PACKAGES if name not in sys.modules]
    framework.set_default_framework("none")
    try:
        importlib.import_module("nni.nas.nn.pytorch")
        importlib.import_module("nni.nas.space")
    finally:
        framework.set_default_framework(chosen)
    if chosen != "none":
        for name in fresh:
            if name in sys.modules:
                _shortcut_later(sys.modules[name], chosen)


def _shortcut_later(package: ModuleType, chosen: str) -> None:
    """Give ``package`` a module ``__getattr__`` (PEP 562) that does NNI's ``shortcut_framework`` on first use."""
    def __getattr__(name: str) -> Any:
        from nni.common.framework import shortcut_module

        del package.__getattr__  # type: ignore[attr-defined]  (once: the copy brings every name)
        shortcut_module(package.__name__, f".{chosen}", package.__name__)
        if name in package.__dict__:
            return package.__dict__[name]
        raise AttributeError(f"module {package.__name__!r} has no attribute {name!r}")

    package.__getattr__ = __getattr__  # type: ignore[attr-defined]


def check_pins() -> None:
    """Fail early, with the fix, where a known-bad dependency version would make NNI hang or crash."""
    from importlib.metadata import version

    from packaging.version import Version

    if Version(version("filelock")) >= Version("3.12"):
        raise RuntimeError(f"filelock {version('filelock')} makes every NNI 3.0 experiment hang; "
                           "install 'filelock<3.12' (pip install 'filelock<3.12')")
    if Version(version("setuptools")) >= Version("81"):
        raise RuntimeError(f"setuptools {version('setuptools')} has no pkg_resources, which nnictl needs; "
                           "install 'setuptools<81'")


def _keyword_parameters(factory: Callable[..., Any]) -> tuple[list[inspect.Parameter], dict[str, Any]]:
    """The parameters a space factory (a ``ModelSpace`` class, or a ``functools.partial`` of one) still takes by
    keyword, and the keywords its partials bind. NNI replaces a ModelSpace's ``__init__`` by a
    ``(*args, **kwargs)`` wrapper without ``__wrapped__``; the original is found in the wrapper's closures."""
    bound, keywords = 0, {}
    while isinstance(factory, functools.partial):
        bound += len(factory.args)
        keywords = {**factory.keywords, **keywords}
        factory = factory.func
    init: Any = getattr(factory, "__init__", factory)
    stack, seen = [init], set()
    while stack:
        fn = stack.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        if getattr(fn, "__qualname__", "") == f"{getattr(factory, '__qualname__', '')}.__init__":
            init = fn
            break
        stack += [c.cell_contents for c in getattr(fn, "__closure__", None) or () if callable(c.cell_contents)]
    params = list(inspect.signature(init).parameters.values())[1 if init is not factory else 0:]
    positional = [p for p in params if p.kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                  inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    skipped = {p.name for p in positional[:bound]}
    return [p for p in params if p.name not in skipped and p.kind is not inspect.Parameter.VAR_POSITIONAL], keywords


def init_parameters(factory: Callable[..., Any]) -> list[str] | None:
    """The keyword parameters a space factory (a ``ModelSpace`` class, or a ``functools.partial`` of one) takes, or
    None when it takes any (``**kwargs``)."""
    params, _ = _keyword_parameters(factory)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params]


def init_defaults(factory: Callable[..., Any]) -> dict[str, Any]:
    """``{parameter: default}`` of the keyword parameters of a space factory that have one (a partial's bound
    keywords included): the values that build the same space as leaving the argument out."""
    params, keywords = _keyword_parameters(factory)
    return {**{p.name: p.default for p in params if p.default is not inspect.Parameter.empty}, **keywords}


def to_nni_search_space(choices: Mapping[str, list[Any]], *, strategies: Sequence[str] = ()
                        ) -> dict[str, dict[str, Any]]:
    """nnictl's search-space JSON (``{"label": {"_type": "choice", "_value": [...]}}``); with ``strategies`` (the tags
    of a multi-strategy tuner) also the :data:`STRATEGY_KEY` parameter, which the web UI's filter then offers."""
    space = {label: {"_type": "choice", "_value": list(values)} for label, values in choices.items()}
    return {**space, STRATEGY_KEY: {"_type": "choice", "_value": list(strategies)}} if strategies else space


def in_nni_trial() -> bool:
    """True inside a trial launched by the NNI manager (nnictl sets NNI_PLATFORM for its trials)."""
    return os.environ.get("NNI_PLATFORM", "unittest") not in ("", "unittest")


class _Tee(io.TextIOBase):
    """A text stream writing to each of ``streams``."""

    def __init__(self, *streams: TextIO) -> None:
        super().__init__()
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def trial_log_output() -> None:
    """Make what an nnictl trial prints reach its log in the web UI ("View trial log" shows ``trial.log``): NNI's
    import points ``sys.stdout`` of a local trial at ``trial.log`` (one ``PRINT`` line per printed line), and
    ``sys.stderr`` (a failing trial's error line and traceback, warnings) is copied there too, while still going
    to ``trial.stderr`` ("View trial error")."""
    import nni  # noqa: F401  (imported for its side effect: a local trial's stdout goes to trial.log)

    if not isinstance(sys.stderr, _Tee) and sys.stdout is not sys.__stdout__:
        sys.stderr = _Tee(sys.stderr, sys.stdout)


def next_parameter() -> dict[str, Any]:
    """The architecture the tuner chose for this trial (without a :data:`STRATEGY_KEY` tag, kept for
    :func:`report_final`)."""
    import nni

    params = dict(nni.get_next_parameter() or {})
    if STRATEGY_KEY in params:
        _tag[STRATEGY_KEY] = params.pop(STRATEGY_KEY)
    return params


def report_intermediate(metrics: Mapping[str, float]) -> None:
    """Send a per-epoch result; ``metrics['default']`` is what the web UI plots."""
    import nni

    nni.report_intermediate_result(dict(metrics))


def report_final(metrics: Mapping[str, float]) -> None:
    """Send the final result dict (with the strategy tag of the trial's parameters, if any); the web UI sorts trials
    by ``default`` and shows the other keys."""
    import nni

    nni.report_final_result({**metrics, **_tag})
