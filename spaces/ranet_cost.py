"""Analytic cost of the RANet space in closed form: ptflops' MACs and the parameter count of a
:class:`~hrnas_automl.spaces.ranet.RANet` computed from its :class:`RANetConfig`, without building it (issue 7).

Every label changes the topology, so the table is exhaustive (one group, the 576 networks of the CIFAR grid).
Building and counting 576 networks takes minutes; walking each network's layers with ptflops' per-module
rules takes milliseconds for all of them. The rules (ptflops 0.7.x PyTorch backend, ``pytorch_ops.py``; batch 1):

* ``Conv2d``: ``k*k * c_in/groups * c_out`` per output position (+ ``c_out`` per position with a bias);
* ``BatchNorm2d`` (affine): 2 per input element;
* ``ReLU``: 2 per element, ``MaxPool2d`` / ``AvgPool2d``: 2 per input element (the module hook counts 1 and
  the ``F.relu`` / ``F.*_pool2d`` the module calls is patched and counts 1 more);
* ``Linear``: ``in * out + out``;
* ``F.interpolate(x, size)``: ``channels * prod(size)``; ``torch.cat`` and ``Flatten``: nothing.

The walk follows ``RANet.__init__`` / ``RANet.exit_features`` and uses the same :class:`RANetConfig` methods for
the block layout, so the two cannot drift apart silently: :func:`hrnas_automl.cost.space_table` checks the
compiled table against ptflops counts of random networks, and ``tests/test_cost_model.py`` and
``bench/cost_model.py`` compare it with ptflops on samples of the grid. Other measures (latency) are not
closed-form: for them the compiler measures all networks (:func:`~hrnas_automl.cost.tables.grouped_table`).
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from hrnas_automl.cost.tables import Build, CostTable, Measure, grouped_table
from hrnas_automl.spaces.ranet import RANet, RANetConfig, ranet_config

__all__ = ["ranet_cost", "ranet_exit_costs", "ranet_cost_table"]

Size = tuple[int, int]


def _conv_out(size: Size, kernel: int, stride: int) -> Size:
    """Output size of a convolution / pooling with padding ``kernel // 2``."""
    return tuple((n + 2 * (kernel // 2) - kernel) // stride + 1 for n in size)  # type: ignore[return-value]


class _Tally:
    """MACs and parameters, added layer by layer with ptflops' rules (module docstring)."""

    def __init__(self) -> None:
        self.macs = 0
        self.params = 0
        self.exits: list[int] = []  # MACs so far after each exit's head: its early-exit cost

    def conv(self, c_in: int, c_out: int, kernel: int, stride: int, size: Size, *, bias: bool = False) -> Size:
        out = _conv_out(size, kernel, stride)
        positions = out[0] * out[1]
        self.macs += kernel * kernel * c_in * c_out * positions + (c_out * positions if bias else 0)
        self.params += kernel * kernel * c_in * c_out + (c_out if bias else 0)
        return out

    def bn_relu(self, channels: int, size: Size) -> None:
        self.macs += 4 * channels * size[0] * size[1]  # BN 2 + ReLU 2 per element
        self.params += 2 * channels

    def conv_bn_relu(self, c_in: int, c_out: int, kernel: int, stride: int, size: Size) -> Size:
        """``_conv_bn_relu`` (``ConvBasic``)."""
        out = self.conv(c_in, c_out, kernel, stride, size)
        self.bn_relu(c_out, out)
        return out

    def bottleneck(self, c_in: int, c_out: int, bn_width: int, stride: int, size: Size, bn_after: bool) -> Size:
        """``_bottleneck`` (``ConvBN``)."""
        inner = min(c_in, bn_width * c_out)
        if bn_after:
            return self.conv_bn_relu(inner, c_out, 3, stride, self.conv_bn_relu(c_in, inner, 1, 1, size))
        self.bn_relu(c_in, size)
        self.conv(c_in, inner, 1, 1, size)
        self.bn_relu(inner, size)
        return self.conv(inner, c_out, 3, stride, size)

    def resize(self, channels: int, size: Size) -> None:
        """``_resize`` (``F.interpolate`` to ``size``), counted even at the same size."""
        self.macs += channels * size[0] * size[1]


def _first_layer(t: _Tally, config: RANetConfig, size: Size) -> list[tuple[int, Size]]:
    """``ranet._first_layer``: (channels, size) of each first-layer output, highest resolution first."""
    widths = [config.n_channels * f for f in reversed(config.gr_factor)]
    scales = list(reversed(config.scale_list))
    if config.data == "cifar":
        size = t.conv_bn_relu(config.in_channels, widths[0], 3, 1, size)
    else:
        size = t.conv(config.in_channels, widths[0], 7, 2, size, bias=True)
        t.bn_relu(widths[0], size)
        t.macs += 2 * widths[0] * size[0] * size[1]  # MaxPool2d(3, 2, 1): 2 per input element
        size = _conv_out(size, 3, 2)
    outputs = [(widths[0], size)]
    for i in range(1, config.n_scales):
        size = t.conv_bn_relu(widths[i - 1], widths[i], 3, 1 if scales[i] == scales[i - 1] else 2, size)
        outputs.append((widths[i], size))
    return outputs


def _exit_head(t: _Tally, channels: int, size: Size, config: RANetConfig) -> None:
    """``ranet._exit_head``: two stride-2 ``ConvBasic``, AvgPool2d(2), Flatten, Linear."""
    width = 128 if config.data == "cifar" else channels
    size = t.conv_bn_relu(width, width, 3, 2, t.conv_bn_relu(channels, width, 3, 2, size))
    t.macs += 2 * width * size[0] * size[1] + width * config.num_classes + config.num_classes
    t.params += width * config.num_classes + config.num_classes
    t.exits.append(t.macs)


def ranet_cost(config: RANetConfig, input_shape: Sequence[int]) -> tuple[int, int]:
    """``(macs, params)`` of ``RANet(config)`` at ``input_shape`` (C, H, W), as ptflops counts them."""
    t = _tally(config, input_shape)
    return t.macs, t.params


def ranet_exit_costs(config: RANetConfig, input_shape: Sequence[int]) -> list[int]:
    """MACs of a sample leaving at each exit under early exiting, equal to
    :func:`~hrnas_automl.tasks.early_exit.early_exit_costs` of ``RANet(config)``: the walk follows
    ``exit_features``'s order, so the MACs counted after exit ``k``'s head hold exit ``k``'s sub-network and the
    heads of exits ``0..k``."""
    return _tally(config, input_shape).exits


def _tally(config: RANetConfig, input_shape: Sequence[int]) -> _Tally:
    """Every layer of ``RANet(config)`` at ``input_shape`` counted in ``exit_features``'s order."""
    t = _Tally()
    inputs = _first_layer(t, config, (input_shape[1], input_shape[2]))
    low: list[list[tuple[int, Size]]] = []  # (channels, size) of the lower flow's block features
    for s, n_blocks in enumerate(config.blocks_per_flow):
        channels, size = inputs[config.n_scales - 1 - s]
        growth, bn_width = config.growth_rate * config.gr_factor[s], config.bn_factor[s]
        transitions, downsamples = config.transitions(s), config.downsamples(s)
        flow_features = []
        for position in range(1, n_blocks + 1):
            n_layers = config.layers_in_block(position)
            features = [(channels, size)]
            fusion = position <= len(low)
            for i in range(n_layers):
                if fusion:  # FusionLayer: new channels from this flow and the lower one, both resized
                    from_low = math.floor(growth * config.compress_factor)
                    low_channels, low_size = low[position - 1][i]
                    down = position in downsamples and i == n_layers - 1
                    new_size = t.bottleneck(channels, growth - from_low, bn_width, 2 if down else 1, size,
                                            config.bn_after)
                    t.bottleneck(low_channels, from_low, config.bn_factor[s - 1], 1, low_size, config.bn_after)
                    t.resize(channels + from_low, new_size)
                    size = new_size
                else:
                    t.bottleneck(channels, growth, bn_width, 1, size, config.bn_after)
                channels += growth
                features.append((channels, size))
            if fusion:  # FusionBlock.conv_last on the lower flow's last feature, resized
                extra = math.floor(channels * config.compress_factor)
                t.conv_bn_relu(low[position - 1][-1][0], extra, 1, 1, low[position - 1][-1][1])
                t.resize(extra, size)
                channels += extra
            if position in transitions:
                reduced = math.floor(config.reduction * channels)
                t.conv_bn_relu(channels, reduced, 1, 1, size)
                channels = reduced
            if not fusion:
                _exit_head(t, channels, size, config)
            flow_features.append(features)
        low = flow_features
    return t


def ranet_cost_table(build: Build, choices: Mapping[str, Sequence[Any]], input_shape: tuple[int, ...],
                     measure: Measure, metrics: tuple[str, ...]) -> CostTable:
    """The exhaustive table: :func:`ranet_cost` of every network for ptflops' ``(macs, params)``,
    :func:`ranet_exit_costs`'s first exit for ``first_exit_macs``, whole networks measured for any other metric."""
    closed_form = {("macs", "params"): ranet_cost,
                   ("first_exit_macs",): lambda config, shape: ranet_exit_costs(config, shape)[:1]}.get(tuple(metrics))
    if closed_form is None:
        return grouped_table(build, choices, [list(choices)], input_shape, measure, metrics)
    net = next(m for m in build({label: values[0] for label, values in choices.items()}).modules()
               if isinstance(m, RANet))
    fixed = {"data": net.config.data, "num_classes": net.config.num_classes, "in_channels": net.config.in_channels}
    delta = {}
    for combo in itertools.product(*choices.values()):
        delta[combo] = tuple(map(float, closed_form(ranet_config(dict(zip(choices, combo)), **fixed), input_shape)))
    return CostTable(tuple(metrics), (tuple(choices),), (0.0,) * len(metrics), (delta,))
