"""The analytic cost: MACs and params of an architecture read from an additive table compiled once per
(space, input size, space arguments) from ptflops itself, so it counts exactly what ptflops counts."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import astuple
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hrnas_automl.arch import Space, resolve_space
from hrnas_automl.cost.count import Cost, count_conv_macs, count_cost
from hrnas_automl.cost.tables import CostTable, Measure, shape_count

if TYPE_CHECKING:  # torch is imported where a table is compiled: reading a shipped or cached one needs none
    from torch import nn

__all__ = ["arch_cost", "compile_space_table", "space_table_key", "space_table", "MEASURES", "SHIPPED_TABLES",
           "shipped_tables", "ship_tables", "cost_table", "conv_macs_table", "first_exit_macs_table", "analytic_cost",
           "cost_bounds", "marginal_cost"]


def arch_cost(space: str | Space, arch: Mapping[str, Any], input_shape: Sequence[int] | None = None,
              **space_args: Any) -> Cost:
    """ptflops cost of an architecture of a registered space (frozen and counted once, then kept by the space):
    the reference :func:`analytic_cost` is checked against."""
    space = resolve_space(space, **space_args)
    shape = space.input_shape(input_shape)

    def count() -> Cost:
        import torch

        with torch.random.fork_rng():  # as in compile_space_table: the caller's random stream is kept
            return count_cost(space.freeze(arch), shape)

    return space.memo(("ptflops-count", json.dumps(dict(arch), sort_keys=True), shape), count)


def compile_space_table(space: Space, input_shape: tuple[int, ...], measure: Measure, metrics: tuple[str, ...], *,
                        verify: bool) -> CostTable:
    """Compile ``space``'s additive table of ``measure`` (module docstring of :mod:`hrnas_automl.cost.tables`), with no
    cache: the space's ``cost_compiler``, else its ``cost_groups``, else one group per LayerChoice. A
    :func:`~hrnas_automl.cost.tables.shape_count` measure counts networks built on the meta device.

    ``verify`` checks the table against two random networks (for exact measures only).

    Raises:
        ValueError: the space has no analytic model (labels that are not LayerChoices, no cost_groups
            and no cost_compiler).
        NotAdditiveError: the space's groups interact, so the table would be wrong.
    """
    import torch

    # Compiling builds and runs networks, which draws from torch's RNG: forked, so that a seeded search gives the
    # same result on a cold cache as on a warm one.
    with torch.random.fork_rng():
        return _compile_space_table(space, input_shape, measure, metrics, verify=verify)


def _compile_space_table(space: Space, input_shape: tuple[int, ...], measure: Measure, metrics: tuple[str, ...], *,
                         verify: bool) -> CostTable:
    from hrnas_automl.cost.tables import grouped_table, is_shape_count, layer_choice_table, verify_additive

    spec, choices = space.spec, space.choices
    on_meta = is_shape_count(measure)

    def build(arch: Mapping[str, Any]) -> nn.Module:
        net = space.freeze(arch)  # built on the CPU, then moved: faster than building under torch.device("meta")
        return net.to("meta") if on_meta else net

    compiler = spec.compiler()
    if compiler is not None:
        table = compiler(build, choices, input_shape, measure, metrics)
    elif spec.cost_groups is not None:
        table = grouped_table(build, choices, spec.cost_groups(choices), input_shape, measure, metrics)
    else:
        supernet = space.build()
        try:
            table = layer_choice_table(supernet.to("meta") if on_meta else supernet, build, choices, input_shape,
                                       measure, metrics)
        except ValueError as exc:
            raise ValueError(f"space {space.name} has no analytic cost model ({exc}); register it with "
                             "SpaceSpec(cost_groups=...) or cost_compiler=..., see hrnas_automl/cost/__init__.py"
                             ) from None
    if verify:
        verify_additive(table, build, choices, input_shape, measure)
    return table


def space_table_key(space: Space, input_shape: Sequence[int], kind: str) -> dict[str, Any]:
    """What a compiled table is stored under: space, input, space arguments, measure kind and package version."""
    from hrnas_automl import __version__

    return {"space": space.name, "input": list(input_shape), "space_args": dict(space.args), "kind": kind,
            "version": __version__}


def space_table(space: Space, input_shape: tuple[int, ...], measure: Measure, metrics: tuple[str, ...], *, kind: str,
                verify: bool) -> CostTable:
    """Compile (:func:`compile_space_table`) or load from the shipped tables or the disk cache ``space``'s additive
    table of ``measure``, once per ``kind`` and input shape for this space.

    ``kind`` names the measure in the cache key (``ptflops``, ``latency-cpu-1t``...); ``verify`` checks the
    table against two random networks (for exact measures only). A compile that takes over 2 s shows a progress
    bar on stderr.

    Raises:
        ValueError: the space has no analytic model (labels that are not LayerChoices, no cost_groups
            and no cost_compiler).
        NotAdditiveError: the space's groups interact, so the table would be wrong.
    """
    from hrnas_automl.cost.tables import cached_table, measure_progress

    def compile_table() -> CostTable:
        what = f"the {kind} table of {space.name} at {'x'.join(map(str, input_shape))}"
        with measure_progress(measure, what) as counted:
            return compile_space_table(space, input_shape, counted, metrics, verify=verify)

    def load_or_compile() -> CostTable:
        return cached_table(space_table_key(space, input_shape, kind), compile_table)

    return space.memo(("table", kind, tuple(input_shape)), load_or_compile)


@shape_count
def _ptflops_measure(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[float, ...]:
    """ptflops' (macs, params), counted on the meta device (the module is built for this count)."""
    return astuple(count_cost(module, input_shape, meta=True))


@shape_count
def _conv_macs_measure(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[float, ...]:
    """DetNAS's Conv2d MACs, counted on the meta device (the module is built for this count)."""
    return (count_conv_macs(module.to("meta"), input_shape),)


def _first_exit_measure(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[float, ...]:
    """MACs of a RANet's first exit (its sub-network and head: the least a sample costs under early exiting)."""
    from hrnas_automl.spaces.ranet import exit_macs  # a RANet space's own count

    return (float(exit_macs(module, input_shape)[0]),)


MEASURES: dict[str, tuple[Measure, tuple[str, ...]]] = {"ptflops": (_ptflops_measure, ("macs", "params")),
                                                         "conv-macs": (_conv_macs_measure, ("conv_macs",)),
                                                         "first-exit-macs": (_first_exit_measure, ("first_exit_macs",))}
"""The exact counts a table is compiled from, by kind: (measure, metrics)."""

# (kind, space, space arguments, input; None: the space's default): the tables the examples and the presets ask for,
# shipped inside the package so that their first use compiles nothing (`make tables` writes them).
SHIPPED_TABLES: tuple[tuple[str, str, Mapping[str, Any], tuple[int, int, int] | None], ...] = (
    # `hrnas-automl cost SPACE --arch preset:NAME` and the preset tests: every space at its default input
    ("ptflops", "detnas-small", {}, None),
    ("ptflops", "detnas-large", {}, None),
    ("ptflops", "lite-hrnet", {}, None),
    ("ptflops", "ranet", {}, None),
    # examples/detnas/{evolution,random}.yml: max_macs at 3x32x32
    ("ptflops", "detnas-small", {"num_classes": 10}, (3, 32, 32)),
    # examples/detnas/oneshot_*.yml: the backbone's Conv2d MACs at macs_input (oneshot/supernet.py's space)
    ("conv-macs", "detnas-small", {"in_channels": 3, "head": "backbone"}, (3, 224, 224)),
    # examples/hrnas/{evolution,random}.yml: max_macs at 3x64x64
    ("ptflops", "hrnas", {"setting": "tiny", "bn_momentum": 0.1, "head": "segmentation", "num_classes": 4},
     (3, 64, 64)),
    # examples/hrnas/{prune,tune}.yml: the fine-grained search's table (space_args + the shapes task's model_args)
    ("ptflops", "hrnas", {"setting": "tiny", "transformer": False, "num_classes": 4, "in_channels": 3,
                          "head": "segmentation"}, (3, 64, 64)),
    # examples/lite_hrnet/*.yml and examples/ranet/*.yml: their tuners' space arguments at the default input
    ("ptflops", "lite-hrnet", {"head": "keypoints", "num_keypoints": 17}, None),
    ("ptflops", "ranet", {"num_classes": 4}, None),
)


def shipped_tables() -> list[tuple[str, Space, tuple[int, ...]]]:
    """(kind, space, input) of every entry of :data:`SHIPPED_TABLES`."""
    entries = []
    for kind, name, space_args, shape in SHIPPED_TABLES:
        space = resolve_space(name, **space_args)
        entries.append((kind, space, space.input_shape(shape)))
    return entries


def ship_tables(folder: Path | None = None) -> list[Path]:
    """Compile every table of :data:`SHIPPED_TABLES` into ``folder`` (default: the package's
    :data:`~hrnas_automl.cost.tables.SHIPPED_DIR`), sealed and named by key as the user cache is, and remove the
    files no entry names (tables of an older version): ``make tables``."""
    from hrnas_automl.cost.tables import SHIPPED_DIR, table_key, table_path
    from hrnas_automl.files import sealed_json

    folder = folder or SHIPPED_DIR
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for kind, space, shape in shipped_tables():
        measure, metrics = MEASURES[kind]
        key = space_table_key(space, shape, kind)
        table = compile_space_table(space, shape, measure, metrics, verify=True)
        written.append(table_path(folder, key))
        sealed_json({"key": table_key(key), "table": table.to_json()}, written[-1])
        written[-1].chmod(0o644)  # package data, readable by every user of an installed copy
    for stale in set(folder.glob("*.json")) - set(written):
        stale.unlink()
    return written


def cost_table(space: str | Space, input_shape: Sequence[int] | None = None, **space_args: Any) -> CostTable:
    """The compiled (macs, params) table of a space at ``input_shape`` (default: the space's paper input)."""
    space = resolve_space(space, **space_args)
    return space_table(space, space.input_shape(input_shape), *MEASURES["ptflops"], kind="ptflops", verify=True)


def conv_macs_table(space: str | Space, input_shape: Sequence[int] | None = None, **space_args: Any) -> CostTable:
    """The compiled table of Conv2d-only MACs (:func:`~hrnas_automl.cost.count.count_conv_macs`, DetNAS's budget
    count, metric ``conv_macs``) of a space at ``input_shape``."""
    space = resolve_space(space, **space_args)
    return space_table(space, space.input_shape(input_shape), *MEASURES["conv-macs"], kind="conv-macs", verify=True)


def first_exit_macs_table(space: str | Space, input_shape: Sequence[int] | None = None, **space_args: Any
                          ) -> CostTable:
    """The compiled table of a multi-exit space's first-exit MACs (metric ``first_exit_macs``, RANet's
    :func:`~hrnas_automl.tasks.early_exit.early_exit_costs` ``[0]``): a budget below it fails every sample."""
    space = resolve_space(space, **space_args)
    return space_table(space, space.input_shape(input_shape), *MEASURES["first-exit-macs"], kind="first-exit-macs",
                       verify=True)


def analytic_cost(space: str | Space, arch: Mapping[str, Any], input_shape: Sequence[int] | None = None,
                  **space_args: Any) -> Cost:
    """MACs and params of ``arch``, equal to ptflops' count of the frozen network, without building it."""
    macs, params = cost_table(space, input_shape, **space_args).evaluate(arch)
    return Cost(int(macs), int(params))


def cost_bounds(space: str | Space, input_shape: Sequence[int] | None = None, **space_args: Any
                ) -> tuple[Cost, Cost]:
    """Exact smallest and largest MACs and params over the space (each metric on its own)."""
    lo, hi = cost_table(space, input_shape, **space_args).bounds()
    return Cost(int(lo[0]), int(lo[1])), Cost(int(hi[0]), int(hi[1]))


def marginal_cost(space: str | Space, arch: Mapping[str, Any], label: str, value: Any,
                  input_shape: Sequence[int] | None = None, **space_args: Any) -> Cost:
    """How MACs and params change when ``label`` of ``arch`` becomes ``value`` (negative when cheaper).

    This is the per-unit cost a penalty weighs (the fine-grained strategy's Δi): for a channel-count label,
    ``-marginal_cost(..., label, c - 1)`` is the cost of one channel of that path.
    """
    macs, params = cost_table(space, input_shape, **space_args).marginal(arch, label, value)
    return Cost(int(macs), int(params))
