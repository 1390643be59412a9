"""Lite-HRNet search space (Yu et al., "Lite-HRNet: A Lightweight High-Resolution Network", CVPR 2021,
https://arxiv.org/abs/2104.06403; official code HRNet/Lite-HRNet, ``models/backbones/litehrnet.py``).

The network (shared/docs/REFERENCE.md §2): a shuffle stem to 1/4 resolution (32 channels), then three stages of
*modules* with 2, 3 and 4 parallel branches at 1/4, 1/8, 1/16 and 1/32 resolution. Transitions add one branch per
stage (a stride-2 depthwise-separable unit from the last branch). A module runs two blocks on its branches, then a
multi-resolution fusion. The iterative head folds the branches from 1/32 up to 1/4, and a 1x1 conv gives keypoint
heatmaps or segmentation logits at 1/4 of the input size.

Labels and candidates (the official networks are marked: 18 = Lite-HRNet-18, 30 = Lite-HRNet-30, N = Naive-18):

================  ========================  ==========================================================
label             candidates                meaning
================  ========================  ==========================================================
``width``         20, 30 (N), 40 (18, 30)   branch widths w, 2w, 4w, 8w (30/60/120/240, 40/80/160/320)
``reduce_ratio``  4, 8 (18, 30), 16         channel reduction r of the cross-resolution weighting
``s1_modules``    2 (18, N), 3 (30)         modules in stage 1 (two branches)
``s2_modules``    4 (18, N) ... 8 (30)      modules in stage 2 (three branches)
``s3_modules``    2 (18, N), 3 (30)         modules in stage 3 (four branches)
``s{s}_m{i}``     "naive" (N), "ccw" (18)   block type of module i (0-based) of stage s
================  ========================  ==========================================================

``"naive"`` is two ShuffleNet-v2 blocks per branch (1x1, depthwise 3x3, 1x1 on half the channels); ``"ccw"`` is two
*conditional channel weighting* blocks (cross-resolution weighting, depthwise 3x3, spatial weighting on half the
channels of every branch). Block labels exist for the largest depth (3 + 8 + 3 = 14); a sample gives every label a
value and modules past ``s{s}_modules`` are not built. Samples: 3 x 3 x 2 x 5 x 2 x 2^14 = 2,949,120; different
networks (:func:`distinct_networks`): 3 x 3 x (2^2 + 2^3) x (2^4 + ... + 2^8) x (2^2 + 2^3) = 642,816; samples of one
network share one form (:func:`canonical_arch`), which is what searches compare.

Fusion: output branch i is ``ReLU(sum_j f_ij(x_j))`` with ``f_ii`` the identity, 1x1 conv + BN + nearest upsampling
for lower resolutions and a chain of stride-2 depthwise-separable units for higher ones, as the paper describes
(HRNet's multi-resolution fusion). The official forward (``litehrnet.py:630-640``, REFERENCE §5.7) instead
adds the highest-resolution branch twice to output 0, writes that sum into branch 0 in place, and so runs every
``f_i0`` twice, on the pre-ReLU fused tensor. Measured with ptflops 0.7.5 (PyTorch backend, 1x3x256x192, keypoint
network), the official model as shipped minus the same model with the paper's fusion patched in is 47,289,600 MACs
for Lite-HRNet-18 (277,113,088 -> 229,823,488, -17.1%), 82,899,840 for Lite-HRNet-30 (442,072,052 -> 359,172,212),
28,209,600 for Naive-18 and 47,289,600 for Wider Naive-18. This space counts 227,304,448 / 354,779,252 / 212,482,368
/ 336,907,008 MACs: the remaining 2,519,040 / 4,392,960 / 1,889,280 / 2,519,040 are the official ``nn.Upsample``
layers, which ptflops counts twice (module hook + patched ``F.interpolate``); this module calls ``F.interpolate``
to the target size (any input size works) and is counted once. With the official weights copied in, the presets
give bit-identical heatmaps to the official backbone + head with the paper's fusion patched in.

Presets have exactly the official parameter counts (backbone + ``TopDownSimpleHead`` 1x1 conv to 17 heatmaps):
``lite-hrnet-18`` 1,130,769, ``lite-hrnet-30`` 1,763,717, ``naive-lite-hrnet-18`` 760,365 (the official config's
head declares 40 input channels although the backbone gives 30, REFERENCE §5.8; the runnable network is counted),
``wider-naive-lite-hrnet-18`` 1,318,625.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from nni.nas.nn.pytorch import LayerChoice, ModelSpace, Repeat
from torch import nn

from hrnas_automl.registry import SpaceSpec, space_size
from hrnas_automl.spaces.common import TopLevelChoices, channel_shuffle, conv_bn_act, dw_pw, positive_int, relu

__all__ = ["LITE_HRNET_BLOCKS", "LITE_HRNET_GRID", "LITE_HRNET_DEPTHS", "LITE_HRNET_HEADS", "LiteHRNetSpace",
           "Stem", "SpatialWeighting", "CrossResolutionWeighting", "ConditionalChannelWeighting", "ShuffleBlock",
           "MultiResolutionFusion", "LiteHRModule", "IterativeHead", "lite_hrnet_arch", "distinct_networks",
           "canonical_arch"]

LITE_HRNET_BLOCKS: tuple[str, ...] = ("naive", "ccw")
LITE_HRNET_HEADS: tuple[str, ...] = ("keypoints", "segmentation")
# Top-level choices (module docstring); the first candidate builds the un-frozen space.
LITE_HRNET_GRID: Mapping[str, tuple[int, ...]] = MappingProxyType({"width": (20, 30, 40), "reduce_ratio": (4, 8, 16)})
# Modules per stage: (min, max) covering (2, 4, 2) = Lite-HRNet-18 and (3, 8, 3) = Lite-HRNet-30 (REFERENCE §2.1).
LITE_HRNET_DEPTHS: tuple[tuple[int, int], ...] = ((2, 3), (4, 8), (2, 3))

_STEM_CHANNELS = 32  # stem_channels = out_channels = 32, expand_ratio 1 in every official config (REFERENCE §2.1)
_BLOCKS_PER_MODULE = 2  # num_blocks = (2, 2, 2) in every official config
_SPATIAL_RATIO = 4  # SpatialWeighting ratio, hard-coded in ConditionalChannelWeighting (REFERENCE §5.10)


class Stem(nn.Module):
    """3x3/2 conv to 32 channels, then a stride-2 shuffle unit (``Stem``, litehrnet.py:162-269): 1/4 resolution."""

    def __init__(self, in_channels: int, channels: int = _STEM_CHANNELS) -> None:
        super().__init__()
        half = channels // 2
        self.conv1 = conv_bn_act(in_channels, channels, 3, 2)
        self.branch1 = dw_pw(half, channels - half, 3, 2)
        self.branch2 = nn.Sequential(conv_bn_act(half, channels),
                                     conv_bn_act(channels, channels, 3, 2, groups=channels, act=None),
                                     conv_bn_act(channels, half))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.conv1(x).chunk(2, dim=1)
        return channel_shuffle(torch.cat((self.branch1(x1), self.branch2(x2)), dim=1))


class SpatialWeighting(nn.Module):
    """Per-branch channel weights from global pooling: 1x1 (bias) + ReLU, 1x1 (bias) + Sigmoid, multiply."""

    def __init__(self, channels: int, ratio: int = _SPATIAL_RATIO) -> None:
        super().__init__()
        hidden = int(channels / ratio)
        self.weights = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv_bn_act(channels, hidden, norm=False),
                                     conv_bn_act(hidden, channels, norm=False, act=nn.Sigmoid))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)


class CrossResolutionWeighting(nn.Module):
    """Channel weights computed from all branches at once (``CrossResolutionWeighting``, litehrnet.py:52-95).

    Every branch is average-pooled to the smallest resolution, the maps are concatenated, a 1x1 conv + BN + ReLU
    reduces the channels by ``ratio`` and a 1x1 conv + BN + Sigmoid restores them; each branch is multiplied by its
    slice of the weights, nearest-upsampled to its resolution.
    """

    def __init__(self, channels: Sequence[int], ratio: int) -> None:
        super().__init__()
        self.channels = list(channels)
        total = sum(self.channels)
        self.reduce = conv_bn_act(total, int(total / ratio))
        self.expand = conv_bn_act(int(total / ratio), total, act=nn.Sigmoid)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        size = xs[-1].shape[-2:]
        pooled = torch.cat([F.adaptive_avg_pool2d(x, size) for x in xs[:-1]] + [xs[-1]], dim=1)
        weights = self.expand(self.reduce(pooled)).split(self.channels, dim=1)
        return [x * F.interpolate(a, size=x.shape[-2:], mode="nearest") for x, a in zip(xs, weights)]


class ConditionalChannelWeighting(nn.Module):
    """The Lite-HRNet block (``ConditionalChannelWeighting``, litehrnet.py:98-159).

    Each branch is split in halves; the second halves go through cross-resolution weighting, a depthwise 3x3 + BN
    per branch and spatial weighting; the result is concatenated with the untouched half and channel-shuffled.
    """

    def __init__(self, widths: Sequence[int], reduce_ratio: int) -> None:
        super().__init__()
        halves = [c // 2 for c in widths]
        self.cross_resolution = CrossResolutionWeighting(halves, reduce_ratio)
        self.depthwise = nn.ModuleList(conv_bn_act(c, c, 3, groups=c, act=None) for c in halves)
        self.spatial = nn.ModuleList(SpatialWeighting(c) for c in halves)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        kept, weighted = zip(*(x.chunk(2, dim=1) for x in xs))
        weighted = self.cross_resolution(list(weighted))
        weighted = [sw(dw(x)) for x, dw, sw in zip(weighted, self.depthwise, self.spatial)]
        return [channel_shuffle(torch.cat((a, b), dim=1)) for a, b in zip(kept, weighted)]


class ShuffleBlock(nn.Module):
    """Stride-1 ShuffleNet-v2 unit (``ShuffleUnit``, litehrnet.py:327-439): 1x1, depthwise 3x3, 1x1 on one half."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(conv_bn_act(half, half), conv_bn_act(half, half, 3, groups=half, act=None),
                                    conv_bn_act(half, half))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat((x1, self.branch(x2)), dim=1))


class _NaiveBranches(nn.Module):
    """The "naive" module body: ``_BLOCKS_PER_MODULE`` shuffle blocks on every branch, branches independent."""

    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(nn.Sequential(*(ShuffleBlock(c) for _ in range(_BLOCKS_PER_MODULE)))
                                      for c in widths)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [branch(x) for branch, x in zip(self.branches, xs)]


class _WeightingBlocks(nn.Sequential):
    """The "ccw" module body: ``_BLOCKS_PER_MODULE`` conditional channel weighting blocks over all branches."""

    def __init__(self, widths: Sequence[int], reduce_ratio: int) -> None:
        super().__init__(*(ConditionalChannelWeighting(widths, reduce_ratio) for _ in range(_BLOCKS_PER_MODULE)))


class MultiResolutionFusion(nn.Module):
    """Every output branch i is ``ReLU(sum_j f_ij(x_j))`` (the paper's fusion, not the official forward; see the
    module docstring): ``f_ii`` identity; j > i: 1x1 conv + BN, nearest upsampling; j < i: i - j stride-2
    depthwise-separable units, ReLU after all but the last (``_make_fuse_layers``, litehrnet.py:533-616)."""

    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__()
        self.paths = nn.ModuleList(nn.ModuleList(self._path(widths, j, i) for j in range(len(widths)))
                                   for i in range(len(widths)))
        self.relu = nn.ReLU()

    @staticmethod
    def _path(widths: Sequence[int], j: int, i: int) -> nn.Module:
        if j == i:
            return nn.Identity()
        if j > i:
            return conv_bn_act(widths[j], widths[i], act=None)
        steps = i - j
        return nn.Sequential(*(dw_pw(widths[j], widths[i] if k == steps - 1 else widths[j], 3, 2,
                                     act=relu if k < steps - 1 else None) for k in range(steps)))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        outs = []
        for i, paths in enumerate(self.paths):
            size = xs[i].shape[-2:]
            total = xs[i]
            for j, (path, x) in enumerate(zip(paths, xs)):
                if j > i:
                    total = total + F.interpolate(path(x), size=size, mode="nearest")
                elif j < i:
                    total = total + path(x)
            outs.append(self.relu(total))
        return outs


class LiteHRModule(nn.Module):
    """One module: a block-type ``LayerChoice`` (``"naive"`` / ``"ccw"``) over the branches, then fusion."""

    def __init__(self, widths: Sequence[int], reduce_ratio: int, label: str) -> None:
        super().__init__()
        self.blocks = LayerChoice({"naive": _NaiveBranches(widths), "ccw": _WeightingBlocks(widths, reduce_ratio)},
                                  label=label)
        self.fuse = MultiResolutionFusion(widths)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.fuse(self.blocks(xs))


class _Transition(nn.Module):
    """Stage entry (``_make_transition_layer``, litehrnet.py:755-821): an existing branch whose width changes gets a
    depthwise-separable unit; the new branch is a stride-2 unit from the last previous branch."""

    def __init__(self, widths_in: Sequence[int], widths_out: Sequence[int]) -> None:
        super().__init__()
        if len(widths_out) != len(widths_in) + 1:
            raise ValueError(f"a transition adds one branch: {len(widths_in)} -> {len(widths_out)} branches")
        self.existing = nn.ModuleList(nn.Identity() if a == b else dw_pw(a, b) for a, b in zip(widths_in, widths_out))
        self.new = dw_pw(widths_in[-1], widths_out[-1], 3, 2)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [t(x) for t, x in zip(self.existing, xs)] + [self.new(xs[-1])]


class IterativeHead(nn.Module):
    """From the lowest resolution up: add the bilinearly upsampled previous output, then a depthwise-separable unit
    mapping 8w -> 4w -> 2w -> w -> w (``IterativeHead``, litehrnet.py:272-324). Returns the 1/4-resolution map."""

    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__()
        rev = list(widths)[::-1]
        self.projects = nn.ModuleList(dw_pw(c, rev[min(k + 1, len(rev) - 1)]) for k, c in enumerate(rev))

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        xs = xs[::-1]
        y = self.projects[0](xs[0])
        for project, x in zip(self.projects[1:], xs[1:]):
            y = project(x + F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=True))
        return y


def _official_init(module: nn.Module) -> None:
    """``LiteHRNet.init_weights`` / ``TopDownSimpleHead.init_weights``: conv N(0, 0.001), bias 0, BN weight 1."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.001)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class LiteHRNetSpace(TopLevelChoices, ModelSpace):
    """The Lite-HRNet space (https://arxiv.org/abs/2104.06403): labels in the module docstring.

    ``width`` and ``reduce_ratio`` shape every layer, so they are top-level ``nni.choice`` values read once in
    ``__init__`` (:class:`~hrnas_automl.spaces.common.TopLevelChoices`); depths are ``Repeat`` choices and block types
    ``LayerChoice`` s, so a frozen sample (:meth:`freeze` / ``model_context``) holds only plain torch modules.

    Args:
        head: ``"keypoints"`` (heatmaps) or ``"segmentation"`` (logits); both at 1/4 of the input size.
        num_keypoints: heatmap channels of the keypoint head (17 for COCO).
        num_classes: logit channels of the segmentation head.
        in_channels: image channels.

    Example:
        >>> net = freeze("lite-hrnet", get_preset("lite-hrnet-18").arch)
        >>> net(torch.randn(1, 3, 256, 192)).shape  # (1, 17, 64, 48)
    """

    def __init__(self, *, head: str = "keypoints", num_keypoints: int = 17, num_classes: int = 19,
                 in_channels: int = 3) -> None:
        super().__init__()
        if head not in LITE_HRNET_HEADS:
            raise ValueError(f"unknown head {head!r} for the Lite-HRNet space; choose one of "
                             f"{', '.join(LITE_HRNET_HEADS)}")
        outputs = positive_int("num_keypoints" if head == "keypoints" else "num_classes",
                                num_keypoints if head == "keypoints" else num_classes)
        self.head = head
        width = self.choose("width", list(LITE_HRNET_GRID["width"]))
        reduce_ratio = self.choose("reduce_ratio", list(LITE_HRNET_GRID["reduce_ratio"]))
        self.stem = Stem(positive_int("in_channels", in_channels))
        widths_in = [_STEM_CHANNELS]
        transitions, stages = [], []
        for s, depth in enumerate(LITE_HRNET_DEPTHS, start=1):
            widths = [width * 2 ** b for b in range(s + 1)]
            transitions.append(_Transition(widths_in, widths))
            stages.append(Repeat(lambda i, _w=widths, _s=s: LiteHRModule(_w, reduce_ratio, f"s{_s}_m{i}"), depth,
                                 label=f"s{s}_modules"))
            widths_in = widths
        self.transitions = nn.ModuleList(transitions)
        self.stages = nn.ModuleList(stages)
        self.head_layer = IterativeHead(widths_in)
        self.final_layer = nn.Conv2d(width, outputs, 1)  # TopDownSimpleHead, num_deconv_layers=0, final kernel 1
        _official_init(self)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four branches after the last stage (1/4 ... 1/32 resolution)."""
        xs = [self.stem(x)]
        for transition, stage in zip(self.transitions, self.stages):
            xs = stage(transition(xs))
        return xs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_layer(self.head_layer(self.forward_features(x)))


def lite_hrnet_arch(*, width: int, modules: Sequence[int], block: str, reduce_ratio: int = 8) -> dict[str, Any]:
    """A sample of the space with one block type everywhere (also for the labels of modules past the depth)."""
    arch: dict[str, Any] = {"width": width, "reduce_ratio": reduce_ratio}
    for s, ((_, high), n) in enumerate(zip(LITE_HRNET_DEPTHS, modules), start=1):
        arch[f"s{s}_modules"] = n
        arch.update({f"s{s}_m{i}": block for i in range(high)})
    return arch


def canonical_arch(arch: Mapping[str, Any]) -> dict[str, Any]:
    """``arch`` with the block label of every module past its stage's depth set to the first block type: samples
    that differ only there build one network, and map to one form (the space's ``canonical``)."""
    canonical = dict(arch)
    for s, (_, high) in enumerate(LITE_HRNET_DEPTHS, start=1):
        canonical.update({f"s{s}_m{i}": LITE_HRNET_BLOCKS[0] for i in range(arch[f"s{s}_modules"], high)})
    return canonical


def distinct_networks() -> int:
    """Different networks in the space: block labels of modules past a stage's depth do not change the network."""
    per_stage = [sum(len(LITE_HRNET_BLOCKS) ** d for d in range(low, high + 1)) for low, high in LITE_HRNET_DEPTHS]
    return space_size(LITE_HRNET_GRID) * math.prod(per_stage)


# configs/top_down/{lite_hrnet,naive_litehrnet}/coco/*_coco_256x192.py (REFERENCE §2.1).
_SOURCE = "HRNet/Lite-HRNet configs/top_down/{}/coco/{}_coco_256x192.py"
_PRESETS = {
    "lite-hrnet-18": (lite_hrnet_arch(width=40, modules=(2, 4, 2), block="ccw"),
                      _SOURCE.format("lite_hrnet", "litehrnet_18")),
    "lite-hrnet-30": (lite_hrnet_arch(width=40, modules=(3, 8, 3), block="ccw"),
                      _SOURCE.format("lite_hrnet", "litehrnet_30")),
    "naive-lite-hrnet-18": (lite_hrnet_arch(width=30, modules=(2, 4, 2), block="naive"),
                            _SOURCE.format("naive_litehrnet", "naive_litehrnet_18")),
    "wider-naive-lite-hrnet-18": (lite_hrnet_arch(width=40, modules=(2, 4, 2), block="naive"),
                                  _SOURCE.format("naive_litehrnet", "wider_naive_litehrnet_18")),
}

SPEC = SpaceSpec(
    name="lite-hrnet", factory=LiteHRNetSpace,
    description="Lite-HRNet: block type per module, modules per stage, widths, reduce ratio",
    default_input=(3, 256, 192), heads=LITE_HRNET_HEADS,
    cost_compiler="hrnas_automl.spaces.lite_hrnet_cost:lite_hrnet_cost_table",  # module costs per width/ratio
    presets=_PRESETS, canonical=canonical_arch,
)
