"""DetNAS ShuffleNetV2 one-shot search spaces (Chen et al., "DetNAS: Backbone Search for Object
Detection", NeurIPS 2019, https://arxiv.org/abs/1903.10979; official code megvii-model/DetNAS).

Two spaces, as in the paper (§3.2, "Search space design") and ``Supernet-ImageNet/detnasnet.py``:

* ``detnas-large``: 8+8+16+8 = 40 searchable blocks, stem 48, stages 96/240/480/960 (4^40 ≈ 1.2e24);
* ``detnas-small``: 4+4+8+4 = 20 searchable blocks, stem 16, stages 64/160/320/640 (4^20 ≈ 1.1e12).

Labels: one ``LayerChoice`` per block, labelled ``s{stage}_b{block}`` with stage 1..4 and block 0..n-1
(``s1_b0`` is the first, stride-2 block of the first stage). Candidate values, in the official order
(``shuffle_blocks.py:blocks_key``): ``k3``, ``k5``, ``k7`` (ShuffleNetV2 block with a 3x3/5x5/7x7
depthwise conv) and ``xception`` (three depthwise-separable 3x3 convs). An architecture is therefore a
``{label: op}`` dict such as ``{"s1_b0": "k7", "s1_b1": "k5", ...}``.

Heads: ``classifier`` (last 1x1 conv to 1024, global pool, dropout 0.2, linear; the ImageNet supernet) and
``backbone`` (returns C2-C5 at strides 4/8/16/32 for dense heads, as the official COCO backbone does).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from nni.nas.nn.pytorch import LayerChoice, ModelSpace
from torch import nn

from hrnas_automl.registry import SpaceSpec
from hrnas_automl.spaces.common import channel_shuffle, conv_bn_act, dw_pw, positive_int, probability

__all__ = ["DETNAS_OPS", "DetNASConfig", "DETNAS_CONFIGS", "ShuffleNetV2Block", "DetNASSpace", "detnas_arch"]

DETNAS_OPS: tuple[str, ...] = ("k3", "k5", "k7", "xception")
_KERNEL = {"k3": 3, "k5": 5, "k7": 7, "xception": 3}


@dataclass(frozen=True)
class DetNASConfig:
    """Widths and depths of a DetNAS space (``stage_out_channels`` / ``stage_repeats`` of the official code)."""

    stage_repeats: tuple[int, ...]
    stage_channels: tuple[int, ...]
    stem_channels: int
    last_channels: int = 1024

    def __post_init__(self) -> None:
        if len(self.stage_repeats) != len(self.stage_channels):
            raise ValueError(f"stage_repeats has {len(self.stage_repeats)} stages but stage_channels has "
                             f"{len(self.stage_channels)}; give one width per stage")
        if any(c % 4 for c in self.stage_channels):
            raise ValueError(f"stage_channels {self.stage_channels} must be multiples of 4 (channel split + shuffle)")


# Supernet-ImageNet/detnasnet.py:11-16 (REFERENCE §3.1).
DETNAS_CONFIGS: dict[str, DetNASConfig] = {
    "large": DetNASConfig(stage_repeats=(8, 8, 16, 8), stage_channels=(96, 240, 480, 960), stem_channels=48),
    "small": DetNASConfig(stage_repeats=(4, 4, 8, 4), stage_channels=(64, 160, 320, 640), stem_channels=16),
}


class ShuffleNetV2Block(nn.Module):
    """One candidate op of a DetNAS block (``ShuffleNetV2BlockSearched``), all convs bias-free.

    Stride 1: the input is shuffled and split; one half passes through, the other goes through the op
    (``C/2 -> mid -> C/2``). Stride 2: both branches see the whole input; the projection branch is a
    separable kxk stride-2 unit and the main branch maps ``in -> out - in``. mid = out // 2.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, op: str) -> None:
        super().__init__()
        if op not in _KERNEL:
            raise ValueError(f"unknown DetNAS op {op!r}; choose one of {', '.join(DETNAS_OPS)}")
        if stride == 1 and in_channels != out_channels:
            raise ValueError(f"a stride-1 block keeps its width, got {in_channels} -> {out_channels}")
        self.stride = stride
        k, mid = _KERNEL[op], out_channels // 2
        if stride == 2:
            branch_in, branch_out = in_channels, out_channels - in_channels
            self.proj: nn.Module | None = dw_pw(in_channels, in_channels, k, 2)
        else:
            branch_in, branch_out = in_channels // 2, out_channels // 2
            self.proj = None
        if op == "xception":
            self.main = nn.Sequential(dw_pw(branch_in, mid, 3, stride), dw_pw(mid, mid, 3, 1),
                                      dw_pw(mid, branch_out, 3, 1, act=None))
        else:
            self.main = nn.Sequential(conv_bn_act(branch_in, mid, 1),
                                      conv_bn_act(mid, mid, k, stride, groups=mid, act=None),
                                      conv_bn_act(mid, branch_out, 1, act=None))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj is None:
            x_proj, x = channel_shuffle(x).chunk(2, dim=1)  # the official channel_shuffle1
        else:
            x_proj = self.proj(x)
        return torch.cat((x_proj, self.relu(self.main(x))), dim=1)


class DetNASSpace(ModelSpace):
    """DetNAS ShuffleNetV2 supernet: one ``LayerChoice`` over ``DETNAS_OPS`` per block.

    Args:
        config: ``"large"``, ``"small"`` or a :class:`DetNASConfig`.
        head: ``"classifier"`` (logits) or ``"backbone"`` (list of C2-C5 feature maps).
        num_classes: classifier outputs.
        in_channels: image channels.
        dropout: classifier dropout before the linear layer (0.2 in the official code).

    Example:
        >>> space = DetNASSpace("small", num_classes=10)
        >>> net = space.freeze({f"s{s}_b{b}": "k3" for s, n in enumerate((4, 4, 8, 4), 1) for b in range(n)})
    """

    def __init__(self, config: str | DetNASConfig = "small", *, head: str = "classifier", num_classes: int = 1000,
                 in_channels: int = 3, dropout: float = 0.2) -> None:
        super().__init__()
        if isinstance(config, str):
            if config not in DETNAS_CONFIGS:
                raise ValueError(f"unknown DetNAS config {config!r}; choose one of {', '.join(DETNAS_CONFIGS)}")
            config = DETNAS_CONFIGS[config]
        if head not in ("classifier", "backbone"):
            raise ValueError(f"unknown head {head!r} for a DetNAS space; choose 'classifier' or 'backbone'")
        positive_int("num_classes", num_classes)
        positive_int("in_channels", in_channels)
        probability("dropout", dropout)
        self.config, self.head = config, head
        self.stem = conv_bn_act(in_channels, config.stem_channels, 3, 2, bias=True)
        stages, cin = [], config.stem_channels
        for s, (repeats, cout) in enumerate(zip(config.stage_repeats, config.stage_channels), start=1):
            blocks = []
            for b in range(repeats):
                stride = 2 if b == 0 else 1
                blocks.append(LayerChoice({op: ShuffleNetV2Block(cin, cout, stride, op) for op in DETNAS_OPS},
                                          label=f"s{s}_b{b}"))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        # timm-style description of the feature maps the backbone head returns.
        self.feature_info = [{"num_chs": c, "reduction": 2 ** (i + 2)} for i, c in enumerate(config.stage_channels)]
        if head == "classifier":
            self.last_conv = conv_bn_act(cin, config.last_channels, 1, bias=True)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.dropout = nn.Dropout(dropout)
            self.fc = nn.Linear(config.last_channels, num_classes)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """C2-C5: the output of every stage."""
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        feats = self.forward_features(x)
        if self.head == "backbone":
            return feats
        x = self.pool(self.last_conv(feats[-1])).flatten(1)
        return self.fc(self.dropout(x))


def detnas_arch(config: str, indices: list[int]) -> dict[str, str]:
    """Turn an official architecture (one choice index per block, ``blocks_key`` order) into a sample."""
    cfg = DETNAS_CONFIGS[config]
    labels = [f"s{s}_b{b}" for s, n in enumerate(cfg.stage_repeats, start=1) for b in range(n)]
    if len(indices) != len(labels):
        raise ValueError(f"the {config} DetNAS space has {len(labels)} blocks, got {len(indices)} choices")
    return {label: DETNAS_OPS[i] for label, i in zip(labels, indices)}


# Published architectures: maskrcnn_benchmark/modeling/backbone/detnasnet.py:11-29 (REFERENCE §3.1).
_PRESETS = {
    "detnas-coco-fpn-300m": ("small", [2, 1, 2, 0, 2, 1, 1, 2, 3, 3, 1, 3, 0, 0, 3, 1, 3, 1, 3, 2]),
    "detnas-coco-retinanet-300m": ("small", [2, 3, 1, 1, 3, 2, 1, 3, 3, 1, 1, 1, 3, 3, 2, 0, 3, 3, 3, 3]),
    "detnas-coco-fpn-1.3g": ("large", [0, 0, 3, 1, 2, 1, 0, 2, 0, 3, 1, 2, 3, 3, 2, 0, 2, 1, 1, 3,
                                       2, 0, 2, 2, 2, 1, 3, 1, 0, 3, 3, 3, 1, 3, 3, 3, 3, 3, 3, 3]),
}

_SOURCE = "megvii-model/DetNAS maskrcnn_benchmark/modeling/backbone/detnasnet.py"


def _spec(size: str, description: str) -> SpaceSpec:
    return SpaceSpec(name=f"detnas-{size}", factory=partial(DetNASSpace, size), description=description,
                     default_input=(3, 224, 224), heads=("classifier", "backbone"),
                     presets={name: (detnas_arch(cfg, idx), _SOURCE) for name, (cfg, idx) in _PRESETS.items()
                              if cfg == size})


DETNAS_LARGE = _spec("large", "DetNAS ShuffleNetV2 space, 40 blocks (stem 48, 96/240/480/960), 4^40")
DETNAS_SMALL = _spec("small", "DetNAS ShuffleNetV2 space, 20 blocks (stem 16, 64/160/320/640), 4^20")
