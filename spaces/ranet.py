"""RANet search space (Yang et al., "Resolution Adaptive Networks for Efficient Inference", CVPR 2020,
https://arxiv.org/abs/2003.07326; official code yangle15/RANet-pytorch, ``models/RANet.py``).

A RANet is a chain of dense sub-networks ("flows") from low to high input resolution (scale index 0 = the
lowest). Flow ``s`` first runs *fusion* blocks that read the layer outputs of flow ``s-1``'s blocks, then dense
blocks each followed by an early exit, so ``forward`` returns one logit tensor per exit, in the order they are
computed (``n_blocks + block_step * (n_scales - 1)`` exits: 8 for the official CIFAR network). See
shared/docs/REFERENCE.md §4.2 for the layout and :class:`RANetConfig` for the hyper-parameters.

Because every choice changes the topology (which blocks exist and how wide they are), the space is a set of
top-level ``nni.choice`` values read once in ``RANetSpace.__init__``; the constructor then builds the concrete
network. Labels and candidates (the official ``train_cifar.sh`` value is marked *):

==============  =======================================  ====================================================
label           candidates                               meaning
==============  =======================================  ====================================================
``n_scales``    3, 4*                                    sub-networks; scale list 1-2-3 / 1-2-3-3* on CIFAR
                                                         (three resolutions 32/16/8), 1-2-3-4 on ImageNet
``n_channels``  8, 16*, 32                               base channels (``--nChannels``)
``growth_rate`` 4, 6*, 8                                 base growth rate (``--growthRate``)
``gr_factor``   "4-2-1-1"*, "4-2-2-1"                    width factors per scale, lowest resolution first
``bn_factor``   "4-2-1-1"*, "4-2-2-1"                    bottleneck factors per scale
``block_step``  1, 2*                                    extra blocks per flow (``--block-step``)
``step``        2, 4*                                    layers per block (``--step``)
``step_mode``   "even"*, "lg"                            same layers in every block / ``step`` more per block
==============  =======================================  ====================================================

The factor options are named by their four-scale list; a three-scale network uses the first three entries
("4-2-1-1" -> 4-2-1, the official default of ``args.py:51-52``). "4-2-2-1" is the README's ImageNet setting.
The CIFAR grid holds 2·3·3·2·2·2·2·2 = 576 architectures. On ImageNet only the official 1-2-3-4 layout gives the
7x7 maps the exits need from a 224x224 input, so ``n_scales`` has the single candidate 4 there. The un-frozen
space is built with the first candidate of every label (the smallest network of the grid).

Fixed (not searched), as in the official scripts: ``n_blocks`` 2, ``compress_factor`` 0.25, ``reduction`` 0.5,
``bn_after`` True. Preset ``ranet-cifar`` is ``train_cifar.sh`` for CIFAR-10 (3,261,830 parameters, as the
official model). :class:`RANet` builds any :class:`RANetConfig` without NNI, e.g. the ``train_imagenet.sh``
network (``data='imagenet'``, growth 16, step 8, 1-2-3-4, 4-2-1-1: 87,972,617 parameters, as the official one).
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import torch
import torch.nn.functional as F
from nni.nas.nn.pytorch import ModelSpace
from torch import nn

from hrnas_automl.cost import count_cost
from hrnas_automl.registry import SpaceSpec
from hrnas_automl.spaces.common import TopLevelChoices, conv_bn_act, positive_int

__all__ = ["RANET_GRID", "SCALE_LISTS", "RANetConfig", "DenseBlock", "FusionBlock", "FusionLayer", "RANet",
           "RANetSpace", "ranet_grid", "ranet_config", "exit_macs"]

_DATA = ("cifar", "imagenet")
_STEP_MODES = ("even", "lg")

# Scale list per number of scales: train_cifar.sh uses 1-2-3-3, train_imagenet.sh 1-2-3-4, args.py:54 1-2-3.
SCALE_LISTS: dict[str, dict[int, tuple[int, ...]]] = {
    "cifar": {3: (1, 2, 3), 4: (1, 2, 3, 3)},
    "imagenet": {4: (1, 2, 3, 4)},
}

# The searched labels and their candidates (module docstring); n_scales comes from SCALE_LISTS.
RANET_GRID: dict[str, tuple[Any, ...]] = {
    "n_channels": (8, 16, 32),
    "growth_rate": (4, 6, 8),
    "gr_factor": ("4-2-1-1", "4-2-2-1"),
    "bn_factor": ("4-2-1-1", "4-2-2-1"),
    "block_step": (1, 2),
    "step": (2, 4),
    "step_mode": _STEP_MODES,
}


@dataclass(frozen=True)
class RANetConfig:
    """Hyper-parameters of one RANet (the ``args`` of the official code; defaults are ``args.py:43-58``).

    Attributes:
        scale_list: resolution scale of each flow, lowest first (1 = lowest); starts at 1 and grows by 0 or 1.
        n_channels: base channels; flow ``s`` starts with ``n_channels * gr_factor[s]``.
        growth_rate: base growth; a dense layer of flow ``s`` adds ``growth_rate * gr_factor[s]`` channels.
        gr_factor: width factor per flow.
        bn_factor: bottleneck factor per flow (1x1 width ``min(c_in, bn_factor[s] * growth)``).
        n_blocks: blocks of flow 0; flow ``s`` has ``n_blocks + block_step * s``.
        block_step: extra blocks per flow, i.e. the dense blocks (and exits) of every flow after the first.
        step: layers per block ('even'), or the increment of layers per block position ('lg').
        step_mode: 'even' or 'lg'.
        compress_factor: share of a fusion layer's growth computed from the lower-resolution flow.
        reduction: channel compression of a transition layer.
        bn_after: 1x1-BN-ReLU-3x3-BN-ReLU dense layers (True, the only variant the official model builds:
            RANet.py:109,165 always pass True) or the pre-activation BN-ReLU-1x1-BN-ReLU-3x3 (RANet.py:56-71).
        data: 'cifar' (3x3 stem, exits with 128 channels) or 'imagenet' (7x7/2 stem + max-pool, full-width exits).
        num_classes: outputs of every exit.
        in_channels: image channels.
    """

    scale_list: tuple[int, ...] = (1, 2, 3)
    n_channels: int = 16
    growth_rate: int = 6
    gr_factor: tuple[int, ...] = (4, 2, 1)
    bn_factor: tuple[int, ...] = (4, 2, 1)
    n_blocks: int = 2
    block_step: int = 2
    step: int = 4
    step_mode: str = "even"
    compress_factor: float = 0.25
    reduction: float = 0.5
    bn_after: bool = True
    data: str = "cifar"
    num_classes: int = 10
    in_channels: int = 3

    def __post_init__(self) -> None:
        for name in ("scale_list", "gr_factor", "bn_factor"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("n_channels", "growth_rate", "n_blocks", "block_step", "step", "num_classes", "in_channels"):
            positive_int(name, getattr(self, name))
        scales = self.scale_list
        if not scales or scales[0] != 1 or any(b - a not in (0, 1) for a, b in zip(scales, scales[1:])):
            raise ValueError(f"scale_list must start at 1 and grow by 0 or 1 per flow (e.g. (1, 2, 3, 3)), "
                             f"got {scales}")
        for name in ("gr_factor", "bn_factor"):
            factors = getattr(self, name)
            if len(factors) != len(scales):
                raise ValueError(f"{name} needs one factor per scale: expected {len(scales)} "
                                 f"(scale_list {scales}), got {len(factors)} ({factors})")
            if any(isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in factors):
                raise ValueError(f"{name} entries must be positive integers, got {factors}")
        if self.step_mode not in _STEP_MODES:
            raise ValueError(f"step_mode must be one of {', '.join(_STEP_MODES)}, got {self.step_mode!r}")
        if self.data not in _DATA:
            raise ValueError(f"data must be one of {', '.join(_DATA)}, got {self.data!r}")
        if not 0 < self.reduction <= 1:
            raise ValueError(f"reduction must be in (0, 1], got {self.reduction}")
        if not 0 < self.compress_factor < 1:
            raise ValueError(f"compress_factor must be in (0, 1), got {self.compress_factor}")
        min_growth = self.growth_rate * min(self.gr_factor)
        if math.floor(min_growth * self.compress_factor) < 1:
            raise ValueError(f"compress_factor {self.compress_factor} x the smallest growth {min_growth} "
                             "(growth_rate x min(gr_factor)) must be at least 1 channel")

    @property
    def n_scales(self) -> int:
        """Number of flows (sub-networks)."""
        return len(self.scale_list)

    @property
    def blocks_per_flow(self) -> tuple[int, ...]:
        """Blocks of each flow: ``n_blocks + block_step * s`` (RANet.py:253-255)."""
        return tuple(self.n_blocks + self.block_step * s for s in range(self.n_scales))

    @property
    def n_exits(self) -> int:
        """One exit per dense block: ``n_blocks`` in flow 0, ``block_step`` in every later flow."""
        return self.n_blocks + self.block_step * (self.n_scales - 1)

    def layers_in_block(self, position: int) -> int:
        """Layers of the block at 1-based ``position`` in its flow (RANet.py:262-284: 'lg' adds ``step`` per
        position; the same position has the same depth in every flow, so fusion inputs line up)."""
        return self.step * position if self.step_mode == "lg" else self.step

    def transitions(self, flow: int) -> set[int]:
        """1-based positions of flow ``flow``'s blocks that end with a transition: ``floor((i+1) * blocks /
        scale)`` for ``i < scale - 1`` (RANet.py:360-365)."""
        n_blocks, scale = self.blocks_per_flow[flow], self.scale_list[flow]
        return {(i + 1) * n_blocks // scale for i in range(scale - 1)}

    def downsamples(self, flow: int) -> set[int]:
        """1-based positions of flow ``flow``'s fusion blocks whose last layer downsamples: where lower flows
        end, once per scale step down (RANet.py:286-289)."""
        scale, lower_ends = self.scale_list[flow], self.blocks_per_flow[:flow]
        return set(lower_ends[len(lower_ends) - (scale - 1):]) if scale > 1 else set()


def _bottleneck(c_in: int, c_out: int, bn_width: int, stride: int, bn_after: bool) -> nn.Sequential:
    """``ConvBN`` (RANet.py:26-76): 1x1 to ``min(c_in, bn_width * c_out)`` channels, then 3x3 (stride 1 or 2)."""
    inner = min(c_in, bn_width * c_out)
    if bn_after:
        return nn.Sequential(conv_bn_act(c_in, inner, 1), conv_bn_act(inner, c_out, 3, stride))
    return nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU(inplace=True), nn.Conv2d(c_in, inner, 1, bias=False),
                         nn.BatchNorm2d(inner), nn.ReLU(inplace=True),
                         nn.Conv2d(inner, c_out, 3, stride, 1, bias=False))


def _resize(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Bilinear resize with ``align_corners=True``; applied even at equal size, as the official code does
    (an exact identity then, but ptflops counts it, so the MACs match the official network)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def _transition(channels: int, reduction: float, enabled: bool) -> tuple[nn.Module, int]:
    """1x1 ``ConvBasic`` compressing to ``floor(reduction * channels)`` (RANet.py:134,174), or identity."""
    if not enabled:
        return nn.Identity(), channels
    out = math.floor(reduction * channels)
    return conv_bn_act(channels, out, 1), out


class DenseBlock(nn.Module):
    """``_BlockNormal`` (RANet.py:119-148): ``n_layers`` densely connected bottleneck layers, each adding
    ``growth`` channels, then an optional transition.

    ``forward`` returns the block output and the list of the block input plus every layer output
    (``feature_channels`` wide), which the next flow's fusion block at the same position reads.
    """

    def __init__(self, n_layers: int, c_in: int, growth: int, bn_width: int, *, transition: bool,
                 reduction: float, bn_after: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_bottleneck(c_in + i * growth, growth, bn_width, 1, bn_after)
                                    for i in range(n_layers))
        self.feature_channels = [c_in + i * growth for i in range(n_layers + 1)]
        self.trans, self.out_channels = _transition(self.feature_channels[-1], reduction, transition)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = [x]
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)
            features.append(x)
        return self.trans(x), features


class FusionLayer(nn.Module):
    """``ConvUpNormal`` (RANet.py:79-100): ``floor(growth * compress)`` new channels from the lower-resolution
    feature and the rest from the current one (stride 2 when ``down``), concatenated after the input, all
    resized to the new channels' resolution."""

    def __init__(self, c_in: int, c_low: int, growth: int, bn_width: int, bn_width_low: int, *,
                 compress_factor: float, down: bool, bn_after: bool) -> None:
        super().__init__()
        from_low = math.floor(growth * compress_factor)
        self.conv_low = _bottleneck(c_low, from_low, bn_width_low, 1, bn_after)
        self.conv = _bottleneck(c_in, growth - from_low, bn_width, 2 if down else 1, bn_after)

    def forward(self, x: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        new = self.conv(x)
        size = new.shape[-2:]
        return torch.cat([_resize(x, size), _resize(self.conv_low(low), size), new], dim=1)


class FusionBlock(nn.Module):
    """``_BlockUpNormal`` (RANet.py:151-193): ``n_layers`` fusion layers (layer ``i`` reads the lower flow's
    feature ``i``; only the last may downsample), then ``floor(c * compress)`` channels from the lower flow's
    last feature (1x1 ``ConvBasic``, upsampled) are appended, then an optional transition.

    Args:
        low_channels: widths of the lower flow's block features (``n_layers + 1`` of them).
    """

    def __init__(self, n_layers: int, c_in: int, low_channels: Sequence[int], growth: int, bn_width: int,
                 bn_width_low: int, *, compress_factor: float, down: bool, transition: bool, reduction: float,
                 bn_after: bool) -> None:
        super().__init__()
        if len(low_channels) != n_layers + 1:
            raise ValueError(f"a fusion block of {n_layers} layers reads {n_layers + 1} lower-flow features, "
                             f"got {len(low_channels)} widths")
        self.layers = nn.ModuleList(
            FusionLayer(c_in + i * growth, low_channels[i], growth, bn_width, bn_width_low,
                        compress_factor=compress_factor, down=down and i == n_layers - 1, bn_after=bn_after)
            for i in range(n_layers))
        self.feature_channels = [c_in + i * growth for i in range(n_layers + 1)]
        c_out = self.feature_channels[-1]
        self.conv_last = conv_bn_act(low_channels[-1], math.floor(c_out * compress_factor), 1)
        self.trans, self.out_channels = _transition(c_out + math.floor(c_out * compress_factor), reduction,
                                                    transition)

    def forward(self, x: torch.Tensor, low: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = [x]
        for layer, low_feature in zip(self.layers, low):
            x = layer(x, low_feature)
            features.append(x)
        x = torch.cat([x, _resize(self.conv_last(low[-1]), x.shape[-2:])], dim=1)
        return self.trans(x), features


def _exit_head(c_in: int, config: RANetConfig) -> nn.Sequential:
    """Classifier after a dense block (RANet.py:391-416): two stride-2 3x3 ``ConvBasic`` (128 channels on CIFAR,
    ``c_in`` on ImageNet), 2x2 average pool, linear. Expects 8x8 (CIFAR) / 7x7 (ImageNet) maps."""
    width = 128 if config.data == "cifar" else c_in
    return nn.Sequential(conv_bn_act(c_in, width, 3, 2), conv_bn_act(width, width, 3, 2), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(width, config.num_classes))


def _first_layer(config: RANetConfig) -> nn.ModuleList:
    """``RAFirstLayer`` (RANet.py:196-236), from the highest to the lowest resolution: the stem, then one 3x3
    ``ConvBasic`` per further flow, stride 2 where the scale changes."""
    widths = [config.n_channels * f for f in reversed(config.gr_factor)]
    scales = list(reversed(config.scale_list))
    if config.data == "cifar":
        stem: nn.Module = conv_bn_act(config.in_channels, widths[0], 3)
    else:
        stem = nn.Sequential(*conv_bn_act(config.in_channels, widths[0], 7, 2, bias=True), nn.MaxPool2d(3, 2, 1))
    layers = [stem]
    for i in range(1, config.n_scales):
        layers.append(conv_bn_act(widths[i - 1], widths[i], 3, 1 if scales[i] == scales[i - 1] else 2))
    return nn.ModuleList(layers)


def _official_init(module: nn.Module) -> None:
    """RANet.py:322-330: conv N(0, sqrt(2 / (k*k*c_out))), BN (1, 0), linear bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


class RANet(nn.Module):
    """One fixed RANet built from a :class:`RANetConfig` (plain PyTorch, no NNI).

    Flow ``s`` (``flows[s]``, lowest resolution first) has ``blocks_per_flow[s]`` blocks; its first
    ``blocks_per_flow[s-1]`` are :class:`FusionBlock` s reading flow ``s-1``'s block at the same position, the
    rest are :class:`DenseBlock` s each followed by an exit (``exits``, in computation order). Transitions sit
    at :meth:`RANetConfig.transitions`; a fusion block downsamples in its last layer at
    :meth:`RANetConfig.downsamples`, so every exit of a flow sees the lowest resolution.

    As in RANet.py:314-320, the official initialisation is applied to the flows and exits only; the first
    layer keeps PyTorch's default initialisation.
    """

    def __init__(self, config: RANetConfig) -> None:
        super().__init__()
        self.config = config
        self.first_layer = _first_layer(config)
        self.flows = nn.ModuleList()
        self.exits = nn.ModuleList()
        low_channels: list[list[int]] = []
        for s, n_blocks in enumerate(config.blocks_per_flow):
            c_in = config.n_channels * config.gr_factor[s]
            growth = config.growth_rate * config.gr_factor[s]
            transition_at, down_at = config.transitions(s), config.downsamples(s)
            flow, features = nn.ModuleList(), []
            for position in range(1, n_blocks + 1):
                common: dict[str, Any] = {"transition": position in transition_at, "reduction": config.reduction,
                          "bn_after": config.bn_after}
                n_layers = config.layers_in_block(position)
                if position <= len(low_channels):
                    block: DenseBlock | FusionBlock = FusionBlock(
                        n_layers, c_in, low_channels[position - 1], growth, config.bn_factor[s],
                        config.bn_factor[s - 1], compress_factor=config.compress_factor,
                        down=position in down_at, **common)
                else:
                    block = DenseBlock(n_layers, c_in, growth, config.bn_factor[s], **common)
                    self.exits.append(_exit_head(block.out_channels, config))
                flow.append(block)
                features.append(block.feature_channels)
                c_in = block.out_channels
            self.flows.append(flow)
            low_channels = features
        _official_init(self.flows)
        _official_init(self.exits)

    def exit_features(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """The input of every exit, in order, computed lazily: a consumer that stops after exit ``k`` has
        computed exactly what exit ``k`` needs (anytime prediction; :func:`exit_macs`)."""
        inputs = []
        for layer in self.first_layer:
            x = layer(x)
            inputs.append(x)
        low: list[list[torch.Tensor]] = []
        for flow, h in zip(self.flows, reversed(inputs)):
            features = []
            for position, block in enumerate(flow):
                if isinstance(block, FusionBlock):
                    h, block_features = block(h, low[position])
                else:
                    h, block_features = block(h)
                features.append(block_features)
                if isinstance(block, DenseBlock):
                    yield h
            low = features

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every exit, in order (lowest-resolution flow first)."""
        return [head(f) for head, f in zip(self.exits, self.exit_features(x))]


def ranet_grid(data: str = "cifar") -> dict[str, tuple[Any, ...]]:
    """The space's labels and candidates, in label order: ``n_scales`` (from :data:`SCALE_LISTS`), then
    :data:`RANET_GRID`."""
    if data not in SCALE_LISTS:
        raise ValueError(f"data must be one of {', '.join(SCALE_LISTS)}, got {data!r}")
    return {"n_scales": tuple(SCALE_LISTS[data]), **RANET_GRID}


def _factors(name: str, n_scales: int) -> tuple[int, ...]:
    """'4-2-1-1' -> (4, 2, 1, 1), truncated to the first ``n_scales`` entries."""
    return tuple(int(f) for f in name.split("-"))[:n_scales]


def ranet_config(arch: Mapping[str, Any], *, data: str = "cifar", num_classes: int = 10,
                 in_channels: int = 3) -> RANetConfig:
    """The :class:`RANetConfig` a sample of the space names (the fixed hyper-parameters keep their defaults)."""
    n_scales = arch["n_scales"]
    return RANetConfig(scale_list=SCALE_LISTS[data][n_scales], n_channels=arch["n_channels"],
                       growth_rate=arch["growth_rate"], gr_factor=_factors(arch["gr_factor"], n_scales),
                       bn_factor=_factors(arch["bn_factor"], n_scales), block_step=arch["block_step"],
                       step=arch["step"], step_mode=arch["step_mode"], data=data, num_classes=num_classes,
                       in_channels=in_channels)


class RANetSpace(TopLevelChoices, ModelSpace):
    """The RANet space: top-level choices (module docstring) resolved in ``__init__``, then a :class:`RANet`
    built for them (``self.net``; ``self.config`` is its :class:`RANetConfig`).

    The choices are registered only in the un-frozen space (:class:`~hrnas_automl.spaces.common.TopLevelChoices`),
    so ``simplify()`` lists them; under ``model_context(sample)`` / :meth:`freeze` they read the sample, and the
    result has no mutables.

    Args:
        data: 'cifar' or 'imagenet' (stem, exits and scale lists).
        num_classes: outputs of every exit.
        in_channels: image channels.
        head: only 'exits' (a list of logits, one per exit).

    Example:
        >>> net = RANetSpace().freeze(dict(get_preset("ranet-cifar").arch))
        >>> [y.shape for y in net(torch.randn(2, 3, 32, 32))]  # 8 x (2, 10)
    """

    def __init__(self, *, data: str = "cifar", num_classes: int = 10, in_channels: int = 3,
                 head: str = "exits") -> None:
        super().__init__()
        if head != "exits":
            raise ValueError(f"unknown head {head!r} for the RANet space; it has only 'exits'")
        arch = {label: self.choose(label, values) for label, values in ranet_grid(data).items()}
        self.config = ranet_config(arch, data=data, num_classes=num_classes, in_channels=in_channels)
        self.net = RANet(self.config)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.net(x)


class _UpToExit(nn.Module):
    """Runs a RANet up to exit ``index`` and applies that exit's head only."""

    def __init__(self, net: RANet, index: int) -> None:
        super().__init__()
        self.net, self.index = net, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.exits[self.index](next(islice(self.net.exit_features(x), self.index, None)))


def exit_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> list[int]:
    """Cumulative MACs (ptflops, as :func:`hrnas_automl.cost.count_cost`) of every exit of a RANet.

    Convention: exit ``k`` costs everything the sub-networks compute up to exit ``k``'s input plus exit ``k``'s
    head, but not the heads of earlier exits (an anytime classifier that stops at exit ``k`` runs only that
    head). The official ``op_counter.measure_model`` differs (REFERENCE §5.18): its per-exit FLOPs include the
    earlier exits' heads and leave out BN and interpolation.

    Args:
        model: a :class:`RANet` or a module holding one (a frozen :class:`RANetSpace`).
        input_shape: (C, H, W) of one image.
    """
    net = next((m for m in model.modules() if isinstance(m, RANet)), None)
    if net is None:
        raise ValueError(f"exit_macs needs a RANet (or a module holding one), got {type(model).__name__}")
    # The wrapper takes the network's mode, so count_cost leaves the network in the mode it found it in.
    return [count_cost(_UpToExit(net, k).train(net.training), input_shape).macs for k in range(len(net.exits))]


# train_cifar.sh (REFERENCE §4.1): --step 4 --stepmode even --scale-list 1-2-3-3 --grFactor 4-2-1-1
# --bnFactor 4-2-1-1, with the args.py defaults nChannels 16, growthRate 6, nBlocks 2, block-step 2.
_PRESETS = {
    "ranet-cifar": ({"n_scales": 4, "n_channels": 16, "growth_rate": 6, "gr_factor": "4-2-1-1",
                     "bn_factor": "4-2-1-1", "block_step": 2, "step": 4, "step_mode": "even"},
                    "yangle15/RANet-pytorch train_cifar.sh (+ args.py defaults), CIFAR-10"),
}

SPEC = SpaceSpec(
    name="ranet", factory=RANetSpace,
    description="RANet: dense sub-networks from low to high resolution, with early exits",
    default_input=(3, 32, 32), heads=("exits",),
    # every label changes the topology: the table is exhaustive over the grid, each network counted in closed form
    cost_compiler="hrnas_automl.spaces.ranet_cost:ranet_cost_table",
    presets=_PRESETS,
)
