"""Additive cost tables: a network metric as ``base + sum of per-group deltas``, compiled once per space.

A space's labels are split into *groups* whose effects on a metric do not interact: the metric of an
architecture is ``base + Σ_g delta_g[values of g's labels]``. Compiling measures the networks (or modules)
once; evaluating is a few dict look-ups, so strategies can ask for the cost of thousands of candidates.

Two compilers, both measuring with the caller's ``measure(module, input_shape) -> tuple of floats`` (ptflops
MACs and params in :mod:`hrnas_automl.cost`, latency in :mod:`hrnas_automl.cost.latency`), so the table counts
exactly what the measure counts:

* :func:`layer_choice_table`: every label is an NNI ``LayerChoice`` whose candidates map the same input shape
  to the same output shape (DetNAS). One group per label; each candidate module of the supernet is measured
  alone at the input shape it sees in the network; ``base`` is the network minus its chosen candidates.
* :func:`grouped_table`: any space and any grouping; ``delta_g[v]`` is the measure of the network with group
  ``g`` set to ``v`` (all other labels at their first candidate) minus the base network. One group holding
  every label is the exhaustive table of a small space.

Min and max over the space are exact for an additive table: each group's deltas are chosen independently.

A measure marked :func:`shape_count` (ptflops, Conv2d MACs) reads shapes only: compilers may then measure on the meta
device and split networks into modules measured alone (exact), which other measures (latency) must not.

Compiled tables are kept sealed on disk (:func:`cached_table`): those of the examples' and presets' default inputs
ship inside the package (``shipped_tables/``, written by ``make tables``), the others in the per-user cache.
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import random
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hrnas_automl.cost.count import meta_counting
from hrnas_automl.files import read_sealed_json, sealed_json, user_cache_dir

__all__ = ["Measure", "Build", "CostTable", "NotAdditiveError", "shape_count", "is_shape_count", "measure_progress",
           "layer_choice_table", "grouped_table", "verify_additive", "io_shapes", "SHIPPED_DIR", "table_key",
           "table_path", "cache_dir", "cached_table"]

if TYPE_CHECKING:  # torch is imported where a table is compiled: reading a kept one needs none
    from torch import nn

Measure = Callable[["nn.Module", tuple[int, ...]], tuple[float, ...]]
"""Measures a module at an input shape (C, H, W), e.g. ``(macs, params)``."""

Build = Callable[[Mapping[str, Any]], "nn.Module"]
"""Builds the frozen network of an architecture."""


SHIPPED_DIR = Path(__file__).parent / "shipped_tables"
"""Tables compiled ahead and installed with the package (``make tables``), looked up before the user cache."""


def shape_count(measure: Measure) -> Measure:
    """Mark ``measure`` as a count read from shapes alone (the same on the meta device, exact, additive over modules
    run on their own inputs), and return it."""
    measure.shape_count = True  # type: ignore[attr-defined]
    return measure


def is_shape_count(measure: Measure) -> bool:
    """Whether ``measure`` is marked by :func:`shape_count`."""
    return getattr(measure, "shape_count", False)


@contextlib.contextmanager
def measure_progress(measure: Measure, what: str) -> Iterator[Measure]:
    """``measure`` counting its calls on a tqdm bar on stderr, shown once compiling ``what`` takes over 2 s (and not
    when stderr is no terminal); the mark of :func:`shape_count` is kept."""
    from tqdm.auto import tqdm

    with tqdm(desc=f"compiling {what}", unit=" measurements", delay=2, leave=False, file=sys.stderr,
              disable=None) as bar:
        def counted(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[float, ...]:
            value = measure(module, input_shape)
            bar.update()
            return value

        yield shape_count(counted) if is_shape_count(measure) else counted


class NotAdditiveError(ValueError):
    """A compiled table disagrees with a direct measurement: the space's groups interact."""


@dataclass(frozen=True)
class CostTable:
    """``metrics`` of an architecture as ``base + Σ_g deltas[g][tuple(arch[label] for label in groups[g])]``."""

    metrics: tuple[str, ...]
    groups: tuple[tuple[str, ...], ...]
    base: tuple[float, ...]
    deltas: tuple[dict[tuple[Any, ...], tuple[float, ...]], ...]

    def evaluate(self, arch: Mapping[str, Any]) -> tuple[float, ...]:
        """The metrics of ``arch`` (a valid sample of the space)."""
        total = list(self.base)
        for group, delta in zip(self.groups, self.deltas):
            for i, value in enumerate(delta[tuple(arch[label] for label in group)]):
                total[i] += value
        return tuple(total)

    def bounds(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Exact (smallest, largest) value of each metric over the whole space (each metric on its own).

        Groups are independent except through labels they share (Lite-HRNet's width): those are enumerated.
        """
        count = Counter(label for group in self.groups for label in group)
        shared = [label for label in count if count[label] > 1]
        values = {label: sorted({key[group.index(label)] for group, delta in zip(self.groups, self.deltas)
                                 if label in group for key in delta}, key=repr) for label in shared}
        lo: list[float] = [math.inf] * len(self.metrics)
        hi: list[float] = [-math.inf] * len(self.metrics)
        for combo in itertools.product(*values.values()):
            fixed = dict(zip(shared, combo))
            lo_c, hi_c = list(self.base), list(self.base)
            for group, delta in zip(self.groups, self.deltas):
                rows = [v for k, v in delta.items() if all(fixed.get(lab, x) == x for lab, x in zip(group, k))]
                for i in range(len(self.metrics)):
                    lo_c[i] += min(v[i] for v in rows)
                    hi_c[i] += max(v[i] for v in rows)
            lo, hi = [min(a, b) for a, b in zip(lo, lo_c)], [max(a, b) for a, b in zip(hi, hi_c)]
        return tuple(lo), tuple(hi)

    def marginal(self, arch: Mapping[str, Any], label: str, value: Any) -> tuple[float, ...]:
        """Change of every metric when ``label`` of ``arch`` is set to ``value`` (the Δ a penalty weighs); only
        the groups holding ``label`` are read, so a strategy can weigh every unit of a large space per step."""
        changed = {**arch, label: value}
        total = (0.0,) * len(self.metrics)
        for group, delta in zip(self.groups, self.deltas):
            if label in group:
                step = _sub(delta[tuple(changed[lab] for lab in group)], delta[tuple(arch[lab] for lab in group)])
                total = tuple(t + d for t, d in zip(total, step))
        return total

    def to_json(self) -> dict[str, Any]:
        return {"metrics": list(self.metrics), "groups": [list(g) for g in self.groups], "base": list(self.base),
                "deltas": [[[list(k), list(v)] for k, v in d.items()] for d in self.deltas]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CostTable:
        return cls(tuple(data["metrics"]), tuple(tuple(g) for g in data["groups"]), tuple(data["base"]),
                   tuple({tuple(k): tuple(v) for k, v in d} for d in data["deltas"]))


def _sub(a: Sequence[float], b: Sequence[float]) -> tuple[float, ...]:
    return tuple(x - y for x, y in zip(a, b))


def layer_choice_table(supernet: nn.Module, build: Build, choices: Mapping[str, Sequence[Any]],
                       input_shape: tuple[int, ...], measure: Measure, metrics: tuple[str, ...]) -> CostTable:
    """One group per ``LayerChoice`` label: each candidate measured alone at the input shape it sees.

    Raises:
        ValueError: a label is not a LayerChoice, or its module runs other than once on one tensor.
    """
    from hrnas_automl.arch import layer_choices

    paths = {label: name for name, label, _ in layer_choices(supernet)}
    missing = [label for label in choices if label not in paths]
    if missing:
        raise ValueError(f"labels {missing} are not LayerChoices; give the space a cost_groups function instead")
    net = build({label: values[0] for label, values in choices.items()})
    try:
        shapes = io_shapes(net, [net.get_submodule(paths[label]) for label in choices], input_shape)
    except ValueError as exc:
        raise ValueError(f"{exc}; give the space cost_groups") from None
    in_shapes = {label: shapes[net.get_submodule(paths[label])][0] for label in choices}
    total = measure(net, input_shape)
    base, deltas = total, []
    for label, values in choices.items():
        layer = supernet.get_submodule(paths[label])
        delta = {(v,): measure(layer[v], in_shapes[label]) for v in values}
        base = _sub(base, delta[(values[0],)])
        deltas.append(delta)
    return CostTable(metrics, tuple((label,) for label in choices), base, tuple(deltas))


def io_shapes(net: nn.Module, modules: Sequence[nn.Module], input_shape: tuple[int, ...]
              ) -> dict[nn.Module, tuple[tuple[int, ...], tuple[int, ...]]]:
    """``{module: (input shape, output shape)}`` (without the batch) of one forward of ``net`` at ``input_shape``.

    Raises:
        ValueError: a module does not run exactly once on one tensor input (its cost has no single shape).
    """
    import torch

    seen: dict[nn.Module, list[tuple[tuple[int, ...], tuple[int, ...]]]] = {m: [] for m in modules}

    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        one = len(args) == 1 and isinstance(args[0], torch.Tensor) and isinstance(output, torch.Tensor)
        seen[module].append((tuple(args[0].shape[1:]), tuple(output.shape[1:])) if one else ((), ()))

    hooks = [m.register_forward_hook(hook) for m in modules]
    device = next(net.parameters()).device
    try:
        with torch.no_grad(), meta_counting() if device.type == "meta" else contextlib.nullcontext():
            net.eval()(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in hooks:
            h.remove()
    bad = [type(m).__name__ for m, runs in seen.items() if len(runs) != 1 or not runs[0][0]]
    if bad:
        raise ValueError(f"modules {bad} do not run exactly once on one tensor")
    return {m: runs[0] for m, runs in seen.items()}


def grouped_table(build: Build, choices: Mapping[str, Sequence[Any]], groups: Sequence[Sequence[str]],
                  input_shape: tuple[int, ...], measure: Measure, metrics: tuple[str, ...]) -> CostTable:
    """Deltas of whole networks: ``delta_g[v] = measure(base with g := v) - measure(base)``.

    Costs ``1 + Σ_g (combinations of g - 1)`` network measurements.
    """
    covered = [label for group in groups for label in group]
    if sorted(covered) != sorted(choices):
        raise ValueError(f"cost groups must hold every label exactly once; got {covered} for {list(choices)}")
    base_arch = {label: values[0] for label, values in choices.items()}
    base = measure(build(base_arch), input_shape)
    deltas = []
    for group in groups:
        delta = {}
        for combo in itertools.product(*(choices[label] for label in group)):
            arch = {**base_arch, **dict(zip(group, combo))}
            delta[combo] = _sub(measure(build(arch), input_shape), base) if arch != base_arch else (0.0,) * len(base)
        deltas.append(delta)
    return CostTable(metrics, tuple(tuple(g) for g in groups), base, tuple(deltas))


def verify_additive(table: CostTable, build: Build, choices: Mapping[str, Sequence[Any]],
                    input_shape: tuple[int, ...], measure: Measure, *, samples: int = 2, seed: int = 0) -> None:
    """Compare the table with direct measurements of ``samples`` random networks (exact equality).

    Raises:
        NotAdditiveError: the groups interact, so the table would be wrong.
    """
    rng = random.Random(seed)
    for _ in range(samples):
        arch = {label: rng.choice(list(values)) for label, values in choices.items()}
        direct, table_value = measure(build(arch), input_shape), table.evaluate(arch)
        if direct != table_value:
            raise NotAdditiveError(f"the cost table gives {table_value} but the network measures {direct} for "
                                   f"{arch}: its labels interact; group the interacting labels in cost_groups")


def cache_dir() -> Path:
    """Where compiled tables are kept: the per-user ``user_cache_dir("tables")`` (``$HRNAS_AUTOML_CACHE/tables``,
    else ``~/.cache/hrnas-automl/tables``), created ``0700``."""
    return user_cache_dir("tables")


def table_key(key: Mapping[str, Any]) -> dict[str, Any]:
    """``key`` as stored (a canonical JSON mapping, keys sorted)."""
    return json.loads(json.dumps(key, sort_keys=True))


def table_path(folder: Path, key: Mapping[str, Any]) -> Path:
    """The file of the table stored under ``key`` in ``folder``: named by the key's SHA-256."""
    return folder / f"{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]}.json"


def _stored_table(path: Path, key: dict[str, Any]) -> CostTable | None:
    """The table sealed in ``path`` under ``key``; None when there is none, and a warning naming an unusable file."""
    if not path.is_file():
        return None
    try:
        data = read_sealed_json(path)
        if data["key"] == key:
            return CostTable.from_json(data["table"])
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        reason = str(exc).splitlines()[0] if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        warnings.warn(f"cost table cache {path} is unusable ({reason}); recompiling it", stacklevel=3)
    return None


def cached_table(key: Mapping[str, Any], compile_table: Callable[[], CostTable]) -> CostTable:
    """Load the table stored under ``key`` (any JSON mapping), shipped (:data:`SHIPPED_DIR`) or in the user cache,
    or compile it and store it in the user cache.

    Tables are stored sealed (:func:`hrnas_automl.files.sealed_json`, atomically); a stored file that is
    truncated, altered or unreadable is reported in a warning naming it, then recompiled and overwritten.
    Processes that miss the same table at once (two nnictl trials starting together) compile it once: the
    first compiles under a lock (``<file>.lock``), the others wait, then read it, so a latency table is timed
    while they idle and every process predicts from the same table.
    """
    import fcntl

    canonical = table_key(key)
    shipped = _stored_table(table_path(SHIPPED_DIR, key), canonical)
    if shipped is not None:
        return shipped
    path = table_path(cache_dir(), key)
    with open(path.with_name(f"{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released on close, or by the kernel when the holder dies
        table = _stored_table(path, canonical)  # perhaps compiled by the process this one waited for
        if table is None:
            table = compile_table()
            sealed_json({"key": canonical, "table": table.to_json()}, path)
    return table
