"""Everything that touches NNI 3.0 beyond its model-space API, in one place.

NNI is no longer developed upstream: its import-time warnings on torch 2.13, the search-space JSON
format, the trial-side reporting calls and the known landmines (shared/docs/NNI.md §6) are handled
here so that spaces and strategies stay plain PyTorch + NNI mutables (whose reading lives in
:mod:`hrnas_automl.arch`).
"""
from __future__ import annotations

import functools
import inspect
import logging
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["quiet_nni", "check_pins", "init_parameters", "to_nni_search_space", "in_nni_trial", "next_parameter",
           "report_intermediate", "report_final"]


def quiet_nni() -> None:
    """Silence NNI's harmless import-time noise on torch 2.13 and setuptools<81 (NNI.md §6)."""
    warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"nni(\.|$)")
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    logging.getLogger("nni").setLevel(logging.WARNING)


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


def init_parameters(factory: Callable[..., Any]) -> list[str] | None:
    """The keyword parameters a space factory (a ``ModelSpace`` class, or a ``functools.partial`` of one) takes, or
    None when it takes any. NNI replaces a ModelSpace's ``__init__`` by a ``(*args, **kwargs)`` wrapper without
    ``__wrapped__``; the original is found in the wrapper's closures."""
    bound = 0
    while isinstance(factory, functools.partial):
        bound += len(factory.args)
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
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params[bound:] if p.kind is not inspect.Parameter.VAR_POSITIONAL]


def to_nni_search_space(choices: Mapping[str, list[Any]]) -> dict[str, dict[str, Any]]:
    """nnictl's search-space JSON (``{"label": {"_type": "choice", "_value": [...]}}``)."""
    return {label: {"_type": "choice", "_value": list(values)} for label, values in choices.items()}


def in_nni_trial() -> bool:
    """True inside a trial launched by the NNI manager (nnictl sets NNI_PLATFORM for its trials)."""
    return os.environ.get("NNI_PLATFORM", "unittest") not in ("", "unittest")


def next_parameter() -> dict[str, Any]:
    """The architecture the tuner chose for this trial."""
    import nni

    return dict(nni.get_next_parameter() or {})


def report_intermediate(metrics: Mapping[str, float]) -> None:
    """Send a per-epoch result; ``metrics['default']`` is what the web UI plots."""
    import nni

    nni.report_intermediate_result(dict(metrics))


def report_final(metrics: Mapping[str, float]) -> None:
    """Send the final result dict; the web UI sorts trials by ``default`` and shows the other keys."""
    import nni

    nni.report_final_result(dict(metrics))
