"""What a network costs: parameters and MACs, counted by ptflops or read from an analytic table.

MACs are multiply-accumulates as ptflops' PyTorch backend (0.7.x) reports them. It counts modules: Conv1/2/3d
and ConvTranspose (``out elements x in/groups x kernel`` + bias), Linear (+ bias), BatchNorm/InstanceNorm/
GroupNorm/LayerNorm (2 per element when affine), ReLU/ReLU6/PReLU/ELU/LeakyReLU/GELU (1 per element),
max/avg/adaptive pooling (1 per input element), Upsample (1 per output element), RNN/LSTM/GRU and
MultiheadAttention; and functionals: F.relu & co., pooling, softmax, F.interpolate (1 per output element),
matmul/mm/bmm/addmm, torch.add/mul. A module that calls a counted functional is counted twice (``nn.ReLU``:
2 per element, ``nn.AvgPool2d``: 2 per input element). Not counted: Identity, Dropout, cat,
view/transpose/slicing (channel shuffle), sigmoid/tanh modules, the ``+`` operator. Parameters are counted
directly from the module.

The analytic cost (:func:`analytic_cost`) never builds a network: it reads a
:class:`~hrnas_automl.cost.tables.CostTable` compiled once per (space, input size, space arguments) *from
ptflops itself*, so it counts exactly the op kinds above. How a space is compiled
(:func:`~hrnas_automl.cost.analytic.space_table`):

* every label a ``LayerChoice`` (DetNAS): each candidate block counted alone at its input shape, plus the rest
  of the network (one network and one small count per candidate);
* ``SpaceSpec.cost_groups`` given: whole networks per group value (one group: every network of a small space);
* ``SpaceSpec.cost_compiler`` given: the space's own compiler (HR-NAS, :mod:`hrnas_automl.spaces.hrnas_cost`:
  the network with every unit at 0, plus each kernel path, Transformer and shared BatchNorm counted alone;
  Lite-HRNet, :mod:`hrnas_automl.spaces.lite_hrnet_cost`: per (width, reduce ratio) one network and its modules
  counted alone; RANet, :mod:`hrnas_automl.spaces.ranet_cost`: all 576 networks, each counted in closed form with
  ptflops' rules).

Counts read shapes only, so the networks a table counts are run on PyTorch's meta device (no arithmetic:
:func:`~hrnas_automl.cost.count.count_cost` with ``meta=True``). Each table is checked against direct counts of
random networks when compiled, and stored on disk (:func:`hrnas_automl.cost.tables.cached_table`) keyed by space,
input, space arguments and package version; the tables of the examples' and presets' default inputs ship inside
the package (:data:`hrnas_automl.cost.analytic.SHIPPED_TABLES`, ``make tables``), so their first use compiles
nothing. A compile that takes over 2 s shows a progress bar on stderr.

Modules: ``count`` (ptflops on a built network), ``tables`` (additive tables, their compilers and disk cache),
``analytic`` (a space's table and the costs read from it), ``latency`` (measured and predicted latency),
``limits`` (budgets for strategies). Names are exported here lazily: importing the package loads no torch.
"""
from __future__ import annotations

from hrnas_automl.registry import lazy_exports

__all__ = ["Cost", "count_cost", "parse_input_shape", "CostTable", "NotAdditiveError", "arch_cost", "space_table",
           "cost_table", "analytic_cost", "cost_bounds", "marginal_cost", "measure_latency",
           "torch_threads", "latency_table", "predicted_latency", "InfeasibleConstraintError", "cost_limit"]

__getattr__ = lazy_exports(__name__, {
    "count": ("Cost", "count_cost", "parse_input_shape"),
    "tables": ("CostTable", "NotAdditiveError"),
    "analytic": ("arch_cost", "space_table", "cost_table", "analytic_cost", "cost_bounds", "marginal_cost"),
    "latency": ("measure_latency", "torch_threads", "latency_table", "predicted_latency"),
    "limits": ("InfeasibleConstraintError", "cost_limit"),
})


def __dir__() -> list[str]:
    return sorted(__all__)
