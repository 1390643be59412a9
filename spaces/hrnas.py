"""HR-NAS multi-branch search space (Ding et al., "HR-NAS: Searching Efficient High-Resolution Neural
Architectures with Lightweight Transformers", CVPR 2021, https://arxiv.org/abs/2106.06560; official code
dingmyu/HR-NAS, ``models/hrnet.py``, ``models/mobilenet_base.py``, ``models/transformer.py``).

Layout (shared/docs/REFERENCE.md §1.1): a stem to 1/4 resolution (two 3x3 stride-2 ConvBNReLU, 24 channels),
then one (fusion module, parallel module) pair per *setting* entry ``[branches, blocks per branch, channels per
branch]``; branches run at 1/4, 1/8, 1/16 and 1/32. The official setting (all five configs of the repo) is
``HRNAS_SETTINGS["official"]`` and the default; ``setting=`` takes another name or a mapping with the fields of
:class:`HRNASSetting`. A fusion module joins neighbouring branches only: output branch ``i`` sums a stride-2
searching block from branch ``i-1``, a searching block from branch ``i`` and a searching block plus nearest
upsampling from branch ``i+1`` (extra terms resized to the first), then ReLU; a new branch grows from the
previous lowest (fused) branch through a stride-2 searching block.

Every block is a :class:`SearchingBlock` (§1.2): a MixConv path (one :class:`KernelPath` per kernel 3/5/7, each
``1x1 expand -> kxk depthwise + BN + ReLU -> 1x1 project`` with its own hidden width, summed, one BN) and a
lightweight Transformer path (:class:`TokenTransformer`: projector to ``n`` tokens with the 2-D positional
mapping, encoder, decoder, reverse projection), both added to the skip path. The official code never builds
its Transformer (REFERENCE §5.1); here it is a real, trainable, searchable path.

Labels (one per searchable unit, ``{block}_{unit}``):

* blocks, in the official construction order (which ``checkpoint.json`` follows): ``e{E}_fuse{j}to{i}`` (fusion
  module of entry E, input branch j -> output branch i), ``e{E}_new{b}`` (new branch b), ``e{E}_b{i}_{k}``
  (parallel module, branch i, block k), then ``head_incre{i}`` / ``head_down{i}`` (classifier head) or
  ``head_transform`` (segmentation / keypoint head). E, i, j, b, k count from 1 (E) and 0 (the others).
* units: ``k3``, ``k5``, ``k7`` (hidden channels of that kernel path, 0 = path absent) and ``tokens``
  (Transformer tokens, 0 = no Transformer). Example: ``e2_b0_1_k5``, ``head_transform_tokens``.

The grid: the official block has ``round(4 * C_in)`` hidden channels per kernel (``expand_ratio: 4``,
``hrnet.py:33-44``), and the official search prunes single channels and tokens (REFERENCE §1.3), so any count
from 0 to that maximum is reachable. The space quantises it: ``channel_steps`` (default 16) equal steps of the
maximum, ``floor(max * s / steps + 0.5)`` for s = 0..steps (``channel_steps=None`` keeps every count); tokens
take ``TOKEN_GRID`` = 0, 4, ..., 64 (64 is the official default token count, ``mobilenet_base.py:381``; the
counts searched in the repo's comments are 0-40, ``:326-330``). The un-frozen space is the widest supernet
(every label at its largest value). ``transformer=False`` drops the token labels (the official configs'
``use_transformer: False``).

Parameter counts checked against the official model built from the repo (tests/test_hrnas_space.py): with
every channel at its maximum and no Transformer, the classifier has 13,243,868 parameters = the official
13,339,772 less its 95,904 unused distillation BatchNorms (REFERENCE §5.3); segmentation (19 classes) 10,110,235
and keypoints (17) 10,110,053 likewise. Deliberate difference: the decoder residual adds the queries, not the
encoder memory (the official ``transformer.py:304`` adds memory, REFERENCE §5.4); parameter counts are equal.

For pruning (REFERENCE §1.3, issue 4): :meth:`SearchingBlock.prunable_units` lists every unit with its label and
importance factors (``KernelPath.dw_bn.weight`` per channel, ``TokenTransformer.token_norm.weight`` per token);
:meth:`SearchingBlock.shrink_unit` keeps the given channels / tokens of a unit (its layers sliced, their optimizer
state with them; none kept removes the unit); :meth:`HRNASNet.arch` reads the current counts back from the module
sizes, and :func:`snap_to_grid` maps counts onto the grid.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from nni.nas.nn.pytorch import ModelSpace
from torch import nn

from hrnas_automl.arch import freeze
from hrnas_automl.registry import SpaceSpec
from hrnas_automl.spaces.common import (OptimizerState, TopLevelChoices, conv_bn_act, positive_int, probability,
                                        sliced_bn, sliced_conv, take_over)

__all__ = ["HEADS", "KERNEL_SIZES", "EXPAND_RATIO", "CHANNEL_STEPS", "TOKEN_GRID", "HRNASSetting", "HRNAS_SETTINGS",
           "BlockSpec", "PrunableUnit", "KernelPath", "TokenTransformer", "SearchingBlock", "HRNASNet", "HRNASSpace",
           "hrnas_setting", "block_specs", "channel_grid", "hrnas_grid", "snap_to_grid", "widest_arch",
           "hrnas_supernet", "hrnas_network", "official_searched_arch"]

HEADS: tuple[str, ...] = ("classifier", "segmentation", "keypoints")
KERNEL_SIZES: tuple[int, ...] = (3, 5, 7)  # kernel_sizes: [3, 5, 7] in every config (REFERENCE §1.1)
EXPAND_RATIO = 4  # expand_ratio: 4 -> at most round(4 * C_in) hidden channels per kernel path
CHANNEL_STEPS = 16
TOKEN_GRID: tuple[int, ...] = tuple(range(0, 65, 4))
_TOKEN_MAP = (8, 8)  # the projector resizes to 8x8, so a token has 64 dimensions (transformer.py:110, :163-167)
# BatchNorm settings (REFERENCE §1.1): search configs use momentum 0.01 / eps 1e-3, keypoint_coco.yml 0.1 / 1e-5.
_BN = {"classifier": {"momentum": 0.01, "eps": 1e-3}, "segmentation": {"momentum": 0.01, "eps": 1e-3},
       "keypoints": {"momentum": 0.1, "eps": 1e-5}}


@dataclass(frozen=True)
class HRNASSetting:
    """Topology of an HR-NAS network (the YAML ``model_kwparams`` of the official configs).

    Attributes:
        entries: ``(branches, blocks per branch, channels per branch)`` per (fusion, parallel) module pair.
        stem_channels: the two stride-2 stem convs (``input_channel``).
        head_channels: classifier head width per branch (``head_channels``).
        last_channel: classifier head's final 1x1 conv (``last_channel`` of ``cls_imagenet.yml``).
        dense_channel: output of the segmentation / keypoint ``transform`` block (90 Cityscapes / COCO, 180 ADE20K).
    """

    entries: tuple[tuple[int, tuple[int, ...], tuple[int, ...]], ...]
    stem_channels: tuple[int, int] = (24, 24)
    head_channels: tuple[int, ...] = (36, 72, 144, 320)
    last_channel: int = 1600
    dense_channel: int = 90

    def __post_init__(self) -> None:
        entries = tuple((int(b), tuple(n), tuple(c)) for b, n, c in self.entries)
        object.__setattr__(self, "entries", entries)
        object.__setattr__(self, "stem_channels", tuple(self.stem_channels))
        object.__setattr__(self, "head_channels", tuple(self.head_channels))
        if not entries:
            raise ValueError("an HR-NAS setting needs at least one [branches, blocks, channels] entry")
        prev = 1
        for e, (branches, blocks, channels) in enumerate(entries, start=1):
            if not len(blocks) == len(channels) == branches:
                raise ValueError(f"setting entry {e} has {branches} branches but {len(blocks)} block counts and "
                                 f"{len(channels)} channel counts; give one per branch")
            if branches < prev:
                raise ValueError(f"setting entry {e} has {branches} branches, fewer than the {prev} before it; "
                                 "branches may only grow")
            if any(n < 0 for n in blocks) or any(c < 1 for c in channels):
                raise ValueError(f"setting entry {e}: block counts must be >= 0 and channels >= 1, "
                                 f"got {blocks} / {channels}")
            prev = branches
        if len(self.stem_channels) != 2 or min(self.stem_channels) < 1:
            raise ValueError(f"stem_channels must be two positive widths, got {self.stem_channels}")
        if len(self.head_channels) != prev:
            raise ValueError(f"head_channels {self.head_channels} needs one width per final branch ({prev})")

    @property
    def out_channels(self) -> tuple[int, ...]:
        """Channels of the branches that reach the head."""
        return self.entries[-1][2]


HRNAS_SETTINGS: dict[str, HRNASSetting] = {
    # configs/*.yml inverted_residual_setting, identical in all five (REFERENCE §1.1).
    "official": HRNASSetting(entries=((1, (1,), (24,)), (2, (2, 2), (18, 36)), (3, (2, 2, 3), (18, 36, 72)),
                                      (4, (2, 2, 3, 4), (18, 36, 72, 144)), (4, (2, 2, 3, 4), (18, 36, 72, 144)))),
    # Not official: the same four-branch layout with one block per branch and half widths, for fast tests and
    # small CPU trials.
    "tiny": HRNASSetting(entries=((1, (1,), (16,)), (2, (1, 1), (8, 16)), (3, (1, 1, 1), (8, 16, 32)),
                                  (4, (1, 1, 1, 1), (8, 16, 32, 64))),
                         stem_channels=(16, 16), head_channels=(16, 32, 64, 128), last_channel=256, dense_channel=32),
}


def hrnas_setting(setting: str | Mapping[str, Any] | HRNASSetting) -> HRNASSetting:
    """A setting from its name, a mapping of :class:`HRNASSetting` fields (JSON/YAML friendly) or itself."""
    if isinstance(setting, HRNASSetting):
        return setting
    if isinstance(setting, str):
        if setting not in HRNAS_SETTINGS:
            raise ValueError(f"unknown HR-NAS setting {setting!r}; choose one of {', '.join(HRNAS_SETTINGS)} "
                             "or give a mapping with 'entries'")
        return HRNAS_SETTINGS[setting]
    if isinstance(setting, Mapping):
        known = {f.name for f in fields(HRNASSetting)}
        if "entries" not in setting or set(setting) - known:
            raise ValueError(f"an HR-NAS setting mapping needs 'entries' and may have {', '.join(sorted(known))}; "
                             f"got keys {', '.join(map(str, setting))}")
        return HRNASSetting(**setting)
    raise ValueError(f"setting must be a name ({', '.join(HRNAS_SETTINGS)}) or a mapping, got {type(setting).__name__}")


class BlockSpec(NamedTuple):
    """One searching block of the network: its label prefix, widths and stride."""

    name: str
    inp: int
    oup: int
    stride: int


def block_specs(setting: HRNASSetting, head: str) -> list[BlockSpec]:
    """Every searching block in the official construction order (fusion, new branches, parallel, head)."""
    specs: list[BlockSpec] = []
    in_channels: tuple[int, ...] = (setting.stem_channels[1],)
    for e, (branches, blocks, channels) in enumerate(setting.entries, start=1):
        for i in range(min(branches, len(in_channels))):
            for j in (i - 1, i, i + 1):
                if 0 <= j < len(in_channels):
                    specs.append(BlockSpec(f"e{e}_fuse{j}to{i}", in_channels[j], channels[i], 2 if j < i else 1))
        for b in range(len(in_channels), branches):
            specs.append(BlockSpec(f"e{e}_new{b}", channels[b - 1], channels[b], 2))
        for i, (n, c) in enumerate(zip(blocks, channels)):
            specs.extend(BlockSpec(f"e{e}_b{i}_{k}", c, c, 1) for k in range(n))
        in_channels = channels
    if head == "classifier":
        heads = setting.head_channels
        specs.extend(BlockSpec(f"head_incre{i}", c, heads[i], 1) for i, c in enumerate(in_channels))
        specs.extend(BlockSpec(f"head_down{i}", heads[i], heads[i + 1], 2) for i in range(len(heads) - 1))
    else:
        specs.append(BlockSpec("head_transform", sum(in_channels), setting.dense_channel, 1))
    return specs


def channel_grid(inp: int, steps: int | None = CHANNEL_STEPS) -> tuple[int, ...]:
    """Candidate hidden widths of one kernel path of a block with ``inp`` input channels (module docstring)."""
    top = int(round(inp * EXPAND_RATIO))
    if steps is None:
        return tuple(range(top + 1))
    if steps < 1:
        raise ValueError(f"channel_steps must be a positive integer or None (every count), got {steps}")
    return tuple(sorted({math.floor(top * s / steps + 0.5) for s in range(steps + 1)}))


def hrnas_grid(setting: HRNASSetting, head: str, *, channel_steps: int | None = CHANNEL_STEPS,
               transformer: bool = True) -> dict[str, tuple[int, ...]]:
    """``{label: candidates}`` of the space, in construction order."""
    grid: dict[str, tuple[int, ...]] = {}
    for spec in block_specs(setting, head):
        for k in KERNEL_SIZES:
            grid[f"{spec.name}_k{k}"] = channel_grid(spec.inp, channel_steps)
        if transformer:
            grid[f"{spec.name}_tokens"] = TOKEN_GRID
    return grid


def snap_to_grid(value: int, candidates: Sequence[int]) -> int:
    """The candidate nearest to ``value`` (ties go to the larger one, which keeps more capacity)."""
    return min(candidates, key=lambda c: (abs(c - value), -c))


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize (``mmseg.utils.resize`` with align_corners=False); a no-op when the size already fits."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class KernelPath(nn.Module):
    """One MixConv kernel path (``mobilenet_base.py:410-452``): 1x1 expand + BN + ReLU, kxk depthwise conv
    (``dw``, carries the stride) + ``dw_bn`` + ReLU, 1x1 projection without BN. ``dw_bn.weight`` holds the
    per-channel importance factors of the HR-NAS search (REFERENCE §1.3)."""

    def __init__(self, inp: int, hidden: int, oup: int, kernel: int, stride: int, bn: Mapping[str, float]) -> None:
        super().__init__()
        self.kernel = kernel
        self.expand = conv_bn_act(inp, hidden, bn_args=bn)
        self.dw = nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False)
        self.dw_bn = nn.BatchNorm2d(hidden, **bn)
        self.act = nn.ReLU(inplace=True)
        self.project = nn.Conv2d(hidden, oup, 1, bias=False)

    @property
    def hidden(self) -> int:
        """Current hidden width (after physical pruning too)."""
        return self.dw.out_channels

    @torch.no_grad()
    def shrink(self, keep: torch.Tensor, state: OptimizerState | None = None) -> None:
        """Keep only the hidden channels ``keep`` (indices, in order): the expand conv + BN and the depthwise conv
        + BN lose the other outputs, the projection the other inputs. ``state`` (an optimizer's ``state``) has the
        sliced parameters' entries (momentum) moved to their replacements, sliced the same way."""
        if len(keep) == 0:
            raise ValueError(f"a k{self.kernel} kernel path must keep at least one channel; remove the path instead "
                             "(SearchingBlock.shrink_unit with no channels)")
        self.expand[0] = sliced_conv(self.expand[0], out_idx=keep, state=state)
        self.expand[1] = sliced_bn(self.expand[1], keep, state)
        self.dw = sliced_conv(self.dw, out_idx=keep, state=state)
        self.dw_bn = sliced_bn(self.dw_bn, keep, state)
        self.project = sliced_conv(self.project, in_idx=keep, state=state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.act(self.dw_bn(self.dw(self.expand(x)))))


def positional_map(height: int, width: int) -> torch.Tensor:
    """The 2-D positional mapping (``get_points_single``): standardised x and y coordinates, shape (2, H, W)."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    points = torch.stack((xs, ys))
    mean = points.mean(dim=(1, 2), keepdim=True)
    std = points.std(dim=(1, 2), keepdim=True, unbiased=False).clamp_min(1e-6)
    return (points - mean) / std


class _EncoderLayer(nn.Module):
    """Post-norm Transformer encoder layer, single head, FFN width = token dimension (``transformer.py:215-270``)."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, 1, dropout=dropout, bias=False, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, dim, bias=False), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(dim, dim, bias=False))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.drop1(self.attn(x, x, x, need_weights=False)[0]))
        return self.norm2(x + self.drop2(self.ffn(x)))


class _DecoderLayer(_EncoderLayer):
    """Cross-attention from learned queries to the encoder memory, then FFN; the residual adds the queries
    (the official code adds the memory, REFERENCE §5.4)."""

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = self.norm1(query + self.drop1(self.attn(query, memory, memory, need_weights=False)[0]))
        return self.norm2(x + self.drop2(self.ffn(x)))


class TokenTransformer(nn.Module):
    """The lightweight Transformer path (``transformer.py:85-211``, REFERENCE §1.2).

    The input is resized to 8x8, the positional mapping is appended (2 channels), a 1x1 conv projects to
    ``tokens`` maps (each an 8x8 = 64-dim token) followed by ``token_norm`` (whose scale is the per-token
    importance factor of the search); one encoder and one decoder layer (learned queries) transform the tokens;
    a 1x1 reverse projection + BN maps them to ``oup`` channels, resized to the block's output size.
    """

    def __init__(self, inp: int, oup: int, tokens: int, bn: Mapping[str, float], dropout: float = 0.1) -> None:
        super().__init__()
        dim = _TOKEN_MAP[0] * _TOKEN_MAP[1]
        self.input_proj = nn.Conv2d(inp + 2, tokens, 1, bias=False)
        self.token_norm = nn.BatchNorm2d(tokens, **bn)
        self.encoder = _EncoderLayer(dim, dropout)
        self.queries = nn.Embedding(tokens, dim)
        self.decoder = _DecoderLayer(dim, dropout)
        self.reverse_proj = nn.Conv2d(tokens, oup, 1, bias=False)
        self.reverse_norm = nn.BatchNorm2d(oup, **bn)
        self.register_buffer("points", positional_map(*_TOKEN_MAP), persistent=False)
        for p in self.parameters():  # transformer.py:_reset_parameters
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    @property
    def tokens(self) -> int:
        """Current token count (after physical pruning too)."""
        return self.input_proj.out_channels

    @torch.no_grad()
    def shrink(self, keep: torch.Tensor, state: OptimizerState | None = None) -> None:
        """Keep only the tokens ``keep`` (indices, in order): the input projection + token norm lose the other
        outputs, the learned queries the other rows, the reverse projection the other inputs. ``state`` as in
        :meth:`KernelPath.shrink`."""
        if len(keep) == 0:
            raise ValueError("a Transformer must keep at least one token; remove it instead "
                             "(SearchingBlock.shrink_unit with no tokens)")
        self.input_proj = sliced_conv(self.input_proj, out_idx=keep, state=state)
        self.token_norm = sliced_bn(self.token_norm, keep, state)
        queries = nn.Embedding(len(keep), self.queries.embedding_dim)
        take_over(state, self.queries.weight, queries.weight, lambda t: t[keep])
        self.queries = queries
        self.reverse_proj = sliced_conv(self.reverse_proj, in_idx=keep, state=state)

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        b = x.shape[0]
        feat = F.interpolate(x, size=_TOKEN_MAP, mode="bilinear", align_corners=False)
        feat = torch.cat((feat, self.points.expand(b, -1, -1, -1).to(feat.dtype)), dim=1)
        tokens = self.token_norm(self.input_proj(feat)).flatten(2)  # (B, n, 64)
        memory = self.encoder(tokens)
        out = self.decoder(self.queries.weight.unsqueeze(0).expand(b, -1, -1), memory)
        out = self.reverse_norm(self.reverse_proj(out.reshape(b, -1, *_TOKEN_MAP)))
        return _resize(out, size)


class PrunableUnit(NamedTuple):
    """A searchable unit of a block: its label, kind ('channels' or 'tokens'), module and importance factors
    (one BatchNorm scale per channel / token; REFERENCE §1.3)."""

    label: str
    kind: str
    module: nn.Module
    alpha: nn.Parameter


class SearchingBlock(nn.Module):
    """The HR-NAS searching block: skip + BN(sum of kernel paths) + Transformer path.

    ``paths`` holds one :class:`KernelPath` per kernel with a non-zero width (keys ``k3``/``k5``/``k7``);
    ``transformer`` is None with 0 tokens. The skip is the identity when stride 1 and widths match, else a
    grouped 1x1 conv with groups = gcd of the widths (``mobilenet_base.py:392-403``).
    """

    def __init__(self, spec: BlockSpec, hidden: Mapping[int, int], tokens: int, bn: Mapping[str, float]) -> None:
        super().__init__()
        self.name, self.stride = spec.name, spec.stride
        self.paths = nn.ModuleDict({f"k{k}": KernelPath(spec.inp, h, spec.oup, k, spec.stride, bn)
                                    for k, h in hidden.items() if h > 0})
        self.pw_bn = nn.BatchNorm2d(spec.oup, **bn) if self.paths else None
        if spec.stride == 1 and spec.inp == spec.oup:
            self.skip: nn.Module = nn.Identity()
        else:
            self.skip = nn.Conv2d(spec.inp, spec.oup, 1, spec.stride, groups=math.gcd(spec.inp, spec.oup), bias=False)
        self.transformer = TokenTransformer(spec.inp, spec.oup, tokens, bn) if tokens > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.skip(x)
        if self.pw_bn is not None:
            out = out + self.pw_bn(sum(path(x) for path in self.paths.values()))
        if self.transformer is not None:
            out = out + self.transformer(x, out.shape[-2:])
        return out

    def prunable_units(self) -> list[PrunableUnit]:
        """Kernel paths and the Transformer with their labels and importance factors (absent units are omitted)."""
        units = [PrunableUnit(f"{self.name}_{key}", "channels", path, path.dw_bn.weight)
                 for key, path in self.paths.items()]
        if self.transformer is not None:
            units.append(PrunableUnit(f"{self.name}_tokens", "tokens", self.transformer,
                                      self.transformer.token_norm.weight))
        return units

    @torch.no_grad()
    def shrink_unit(self, label: str, keep: torch.Tensor, state: OptimizerState | None = None) -> None:
        """Keep the channels / tokens ``keep`` (indices, in order) of unit ``label`` (:meth:`KernelPath.shrink`,
        :meth:`TokenTransformer.shrink`); with none kept the unit is removed, and the block's BN with its last kernel
        path. ``state`` (an optimizer's ``state``) has the sliced parameters' entries moved to their replacements."""
        units = {unit.label: unit.module for unit in self.prunable_units()}
        if label not in units:
            raise ValueError(f"block {self.name} has no unit {label!r}; its units are {', '.join(units) or 'none'}")
        module = units[label]
        if len(keep) > 0:
            module.shrink(keep, state)
        elif isinstance(module, TokenTransformer):
            self.transformer = None
        else:
            del self.paths[f"k{module.kernel}"]
            if not self.paths:
                self.pw_bn = None

    def arch(self, *, tokens: bool = True) -> dict[str, int]:
        """Current widths as labels of the space (0 for absent paths), read from the module sizes."""
        counts = {f"{self.name}_k{k}": self.paths[f"k{k}"].hidden if f"k{k}" in self.paths else 0
                  for k in KERNEL_SIZES}
        if tokens:
            counts[f"{self.name}_tokens"] = self.transformer.tokens if self.transformer is not None else 0
        return counts


class _FuseModule(nn.Module):
    """Neighbour fusion (``hrnet.py:139-353``, defaults only_fuse_neighbor / directly_downsample)."""

    def __init__(self, paths: Mapping[str, SearchingBlock], new: Mapping[str, SearchingBlock], in_branches: int,
                 out_branches: int) -> None:
        super().__init__()
        self.in_branches, self.out_branches = in_branches, out_branches
        self.paths = nn.ModuleDict(paths)  # "{j}to{i}": input branch j -> output branch i
        self.new = nn.ModuleDict(new)  # "{b}": new branch b, grown from fused branch b - 1
        self.relu = nn.ReLU()

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for i in range(min(self.in_branches, self.out_branches)):
            y: torch.Tensor | None = None
            for j in (i - 1, i, i + 1):
                if not 0 <= j < self.in_branches:
                    continue
                z = self.paths[f"{j}to{i}"](xs[j])
                if j > i:
                    z = F.interpolate(z, scale_factor=2 ** (j - i), mode="nearest")
                y = z if y is None else y + _resize(z, y.shape[-2:])
            out.append(self.relu(y))
        for b in range(self.in_branches, self.out_branches):
            out.append(self.new[str(b)](out[b - 1]))
        return out


class _ClassifierHead(nn.Module):
    """``HeadModule`` (``hrnet.py:356-449``) + dropout + linear: per-branch width increase, stride-2 blocks summed
    from high to low resolution, 1x1 ConvBNReLU, global average pool."""

    def __init__(self, blocks: Mapping[str, SearchingBlock], setting: HRNASSetting, num_classes: int, dropout: float,
                 bn: Mapping[str, float]) -> None:
        super().__init__()
        n = len(setting.head_channels)
        self.incre = nn.ModuleList(blocks[f"head_incre{i}"] for i in range(n))
        self.down = nn.ModuleList(blocks[f"head_down{i}"] for i in range(n - 1))
        self.final = conv_bn_act(setting.head_channels[-1], setting.last_channel, bn_args=bn)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(setting.last_channel, num_classes)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        x = self.incre[0](xs[0])
        for i, down in enumerate(self.down):
            x = self.incre[i + 1](xs[i + 1]) + down(x)
        x = self.final(x).mean(dim=(2, 3))
        return self.fc(self.dropout(x))


class _DenseHead(nn.Module):
    """Segmentation / keypoint head (``hrnet.py:570-591``): all branches upsampled to 1/4 and concatenated, a
    searching block (``transform``), a 1x1 conv to the classes / heatmaps."""

    def __init__(self, transform: SearchingBlock, channels: int, outputs: int) -> None:
        super().__init__()
        self.transform = transform
        self.classifier = nn.Conv2d(channels, outputs, 1)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat([_resize(x, xs[0].shape[-2:]) for x in xs], dim=1)
        return self.classifier(self.transform(x))


class HRNASNet(nn.Module):
    """A fixed HR-NAS network: a setting plus the width of every unit (``arch``, labels of the space).

    Args:
        setting: topology.
        arch: ``{label: count}`` for every ``{block}_k{3,5,7}`` label; ``{block}_tokens`` labels are optional (0).
        head: 'classifier' (logits), 'segmentation' (class logits at 1/4) or 'keypoints' (heatmaps at 1/4).
        outputs: classes or keypoints.
        in_channels: image channels.
        dropout: classifier dropout (0.2, ``cls_imagenet.yml``).
        bn_momentum: BatchNorm momentum; None = the official one of the head (see ``HRNASSpace``).
    """

    def __init__(self, setting: HRNASSetting, arch: Mapping[str, int], *, head: str = "classifier",
                 outputs: int = 1000, in_channels: int = 3, dropout: float = 0.2,
                 bn_momentum: float | None = None) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r} for the HR-NAS space; choose one of {', '.join(HEADS)}")
        self.setting, self.head = setting, head
        self.has_tokens = any(label.endswith("_tokens") for label in arch)
        bn = _BN[head] if bn_momentum is None else {**_BN[head], "momentum": bn_momentum}
        blocks = {spec.name: SearchingBlock(spec, {k: arch[f"{spec.name}_k{k}"] for k in KERNEL_SIZES},
                                            arch.get(f"{spec.name}_tokens", 0), bn)
                  for spec in block_specs(setting, head)}
        s0, s1 = setting.stem_channels
        self.stem = nn.Sequential(conv_bn_act(in_channels, s0, 3, 2, bn_args=bn), conv_bn_act(s0, s1, 3, 2, bn_args=bn))
        stages, in_branches = [], 1
        for e, (branches, depths, _) in enumerate(setting.entries, start=1):
            fuse, new = f"e{e}_fuse", f"e{e}_new"
            fuse_module = _FuseModule({k.removeprefix(fuse): v for k, v in blocks.items() if k.startswith(fuse)},
                                      {k.removeprefix(new): v for k, v in blocks.items() if k.startswith(new)},
                                      in_branches, branches)
            parallel = nn.ModuleList(nn.Sequential(*(blocks[f"e{e}_b{i}_{k}"] for k in range(n)))
                                     for i, n in enumerate(depths))
            stages.append(nn.ModuleDict({"fuse": fuse_module, "parallel": parallel}))
            in_branches = branches
        self.stages = nn.ModuleList(stages)
        if head == "classifier":
            self.head_module: nn.Module = _ClassifierHead(blocks, setting, outputs, dropout, bn)
        else:
            self.head_module = _DenseHead(blocks["head_transform"], setting.dense_channel, outputs)
        self._init_weights()

    def _init_weights(self) -> None:
        """``init_weights`` (``hrnet.py:597-611``): convs kaiming (fan_out) or N(0, 0.001) for heatmaps, BN 1/0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if self.head == "keypoints":  # initial_for_heatmap: True (keypoint_coco.yml)
                    nn.init.normal_(m.weight, std=0.001)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                else:
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The branch outputs (1/4, 1/8, ...) before the head."""
        xs = [self.stem(x)]
        for stage in self.stages:
            xs = stage["fuse"](xs)
            xs = [branch(t) for branch, t in zip(stage["parallel"], xs)]
        return xs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_module(self.forward_features(x))

    def searching_blocks(self) -> Iterator[SearchingBlock]:
        """Every searching block, in module order."""
        return (m for m in self.modules() if isinstance(m, SearchingBlock))

    def prunable_units(self) -> list[PrunableUnit]:
        """All units with importance factors (see :meth:`SearchingBlock.prunable_units`)."""
        return [unit for block in self.searching_blocks() for unit in block.prunable_units()]

    def arch(self) -> dict[str, int]:
        """The current widths as a ``{label: count}`` dict (snap with :func:`snap_to_grid` to get a sample)."""
        counts: dict[str, int] = {}
        for block in self.searching_blocks():
            counts.update(block.arch(tokens=self.has_tokens))
        return counts


class HRNASSpace(TopLevelChoices, ModelSpace):
    """The HR-NAS space: one ``nni.choice`` per unit (module docstring), read once in ``__init__``
    (:class:`~hrnas_automl.spaces.common.TopLevelChoices`), then an :class:`HRNASNet` (``self.net``) built with those
    widths. Un-frozen, every choice takes its largest value, so the space itself is the widest supernet;
    :meth:`freeze` rebuilds it for a sample with no mutables left.

    Args:
        setting: a name of :data:`HRNAS_SETTINGS` ('official', 'tiny') or a mapping of :class:`HRNASSetting` fields.
        head: 'classifier', 'segmentation' or 'keypoints'.
        num_classes: classifier / segmentation outputs.
        num_keypoints: keypoint heatmaps.
        in_channels: image channels.
        dense_channel: width of the dense heads' transform block (default: the setting's, 90; 180 for ADE20K).
        dropout: classifier dropout.
        channel_steps: grid resolution of the hidden widths (None: every count).
        transformer: search the Transformer token counts (False: no Transformer, as in the official configs).
        bn_momentum: BatchNorm momentum; None = the official one (0.01 for classification / segmentation,
            tuned for 100+ epoch schedules). Trials of a few epochs need about 0.1: at 0.01 the running
            statistics barely move in a few hundred steps, and a tiny-setting segmentation trial scored below
            the majority class in eval mode (10 epochs: mIoU 0.13 at 0.01 vs 0.37 at 0.1).

    Example:
        >>> space = HRNASSpace("tiny", head="segmentation", num_classes=5)
        >>> grid = hrnas_grid(space.setting, "segmentation")
        >>> net = space.freeze({label: values[1] for label, values in grid.items()})  # the narrowest non-zero
    """

    def __init__(self, setting: str | Mapping[str, Any] = "official", *, head: str = "classifier",
                 num_classes: int = 1000, num_keypoints: int = 17, in_channels: int = 3,
                 dense_channel: int | None = None, dropout: float = 0.2, channel_steps: int | None = CHANNEL_STEPS,
                 transformer: bool = True, bn_momentum: float | None = None) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r} for the HR-NAS space; choose one of {', '.join(HEADS)}")
        for name, value in (("num_classes", num_classes), ("num_keypoints", num_keypoints),
                            ("in_channels", in_channels)):
            positive_int(name, value)
        probability("dropout", dropout)
        if bn_momentum is not None:
            probability("bn_momentum", bn_momentum)
        if dense_channel is not None:
            positive_int("dense_channel", dense_channel)
        self.setting = hrnas_setting(setting)
        if dense_channel is not None:
            self.setting = replace(self.setting, dense_channel=dense_channel)
        grid = hrnas_grid(self.setting, head, channel_steps=channel_steps, transformer=transformer)
        arch = {label: self.choose(label, values, default=max(values)) for label, values in grid.items()}
        outputs = num_keypoints if head == "keypoints" else num_classes
        self.net = HRNASNet(self.setting, arch, head=head, outputs=outputs, in_channels=in_channels, dropout=dropout,
                            bn_momentum=bn_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def prunable_units(self) -> list[PrunableUnit]:
        """Units with importance factors, see :meth:`HRNASNet.prunable_units`."""
        return self.net.prunable_units()


def widest_arch(setting: str | Mapping[str, Any] = "official", head: str = "classifier", *,
                channel_steps: int | None = CHANNEL_STEPS, transformer: bool = True, tokens: bool = True,
                ) -> dict[str, int]:
    """Every channel label at its maximum; token labels (present unless ``transformer=False``) at 64, or at 0 with
    ``tokens=False``, which is the official supernet (``use_transformer: False``)."""
    grid = hrnas_grid(hrnas_setting(setting), head, channel_steps=channel_steps, transformer=transformer)
    return {label: (max(v) if tokens or not label.endswith("_tokens") else 0) for label, v in grid.items()}


def hrnas_supernet(**space_args: Any) -> HRNASSpace:
    """The widest supernet: the un-frozen space (every choice at its maximum, mutables exposed)."""
    return HRNASSpace(**space_args)


def hrnas_network(arch: Mapping[str, Any], **space_args: Any) -> HRNASSpace:
    """The fixed network of a sample; a sample off the grid raises a one-line ``ArchitectureError``."""
    return freeze("hrnas", arch, **space_args)  # type: ignore[return-value]


# checkpoint.json of dingmyu/HR-NAS (the searched ImageNet network, REFERENCE §5.2): per block in construction
# order (oup, stride, {kernel: hidden channels}); kernels left out were pruned to 0.
_OFFICIAL_SEARCHED: tuple[tuple[int, int, dict[int, int]], ...] = tuple(
    (oup, stride, dict(zip(kernels, hidden))) for oup, stride, kernels, hidden in (
        (24, 1, (3, 5, 7), (32, 12, 1)), (24, 1, (3, 5, 7), (28, 7, 5)), (18, 1, (3, 5, 7), (28, 8, 1)),
        (36, 2, (3, 5, 7), (31, 29, 30)), (18, 1, (3, 5), (11, 4)), (18, 1, (3,), (1,)),
        (36, 1, (3, 5, 7), (14, 19, 17)), (36, 1, (3, 5, 7), (18, 12, 7)), (18, 1, (3, 5), (8, 1)),
        (18, 1, (3, 7), (3, 1)), (36, 2, (3, 5, 7), (15, 17, 17)), (36, 1, (3, 5, 7), (24, 19, 8)),
        (72, 2, (3, 5, 7), (62, 82, 86)), (18, 1, (), ()), (18, 1, (), ()), (36, 1, (3, 5, 7), (14, 15, 6)),
        (36, 1, (3, 5, 7), (14, 8, 3)), (72, 1, (3, 5, 7), (39, 42, 58)), (72, 1, (3, 5, 7), (53, 21, 30)),
        (72, 1, (3, 5, 7), (66, 49, 52)), (18, 1, (3,), (1,)), (18, 1, (3, 7), (1, 1)),
        (36, 2, (3, 5, 7), (3, 6, 2)), (36, 1, (3, 5, 7), (8, 2, 2)), (36, 1, (3, 5, 7), (20, 9, 19)),
        (72, 2, (3, 5, 7), (62, 65, 42)), (72, 1, (3, 5, 7), (71, 52, 45)), (144, 2, (3, 5, 7), (180, 142, 158)),
        (18, 1, (), ()), (18, 1, (), ()), (36, 1, (3, 5, 7), (2, 1, 3)), (36, 1, (3, 5, 7), (1, 4, 1)),
        (72, 1, (3, 5, 7), (36, 26, 17)), (72, 1, (3, 5, 7), (21, 22, 7)), (72, 1, (3, 5, 7), (20, 16, 15)),
        (144, 1, (3, 5, 7), (66, 48, 124)), (144, 1, (3, 5, 7), (74, 61, 136)), (144, 1, (3, 5, 7), (76, 48, 123)),
        (144, 1, (3, 5, 7), (128, 59, 128)), (18, 1, (), ()), (18, 1, (7,), (1,)), (36, 2, (5,), (1,)),
        (36, 1, (7,), (1,)), (36, 1, (3, 5, 7), (8, 3, 5)), (72, 2, (3, 5, 7), (17, 23, 20)),
        (72, 1, (3, 5, 7), (39, 9, 9)), (72, 1, (3, 5, 7), (92, 33, 105)), (144, 2, (3, 5, 7), (145, 142, 153)),
        (144, 1, (3, 5, 7), (147, 75, 82)), (18, 1, (), ()), (18, 1, (), ()), (36, 1, (5, 7), (1, 3)),
        (36, 1, (3, 7), (1, 1)), (72, 1, (3, 5, 7), (27, 13, 15)), (72, 1, (3, 5, 7), (18, 6, 22)),
        (72, 1, (3, 5, 7), (22, 10, 19)), (144, 1, (3, 5, 7), (158, 83, 98)), (144, 1, (3, 5, 7), (178, 110, 124)),
        (144, 1, (3, 5, 7), (175, 122, 158)), (144, 1, (3, 5, 7), (127, 96, 143)), (36, 1, (), ()),
        (72, 1, (5, 7), (2, 7)), (144, 1, (3, 5, 7), (25, 40, 20)), (320, 1, (3, 5, 7), (45, 44, 170)),
        (72, 2, (), ()), (144, 2, (3, 5, 7), (3, 14, 11)), (320, 2, (3, 5, 7), (29, 22, 108)),
    ))


def official_searched_arch(*, channel_steps: int | None = CHANNEL_STEPS, transformer: bool = True) -> dict[str, int]:
    """``checkpoint.json`` as a sample of the official classifier space: each hidden width snapped to the grid
    (exact with ``channel_steps=None``), tokens 0 (the searched network has no Transformer)."""
    specs = block_specs(HRNAS_SETTINGS["official"], "classifier")
    if len(specs) != len(_OFFICIAL_SEARCHED):
        raise ValueError(f"the checkpoint table has {len(_OFFICIAL_SEARCHED)} blocks but the official classifier "
                         f"has {len(specs)}; give one (oup, stride, kernels, hidden) row per block of block_specs")
    arch: dict[str, int] = {}
    for spec, (oup, stride, hidden) in zip(specs, _OFFICIAL_SEARCHED):
        if (spec.oup, spec.stride) != (oup, stride):  # guards the construction order against the checkpoint
            raise ValueError(f"checkpoint block {spec.name} has oup {oup} / stride {stride} where the official "
                             f"setting builds oup {spec.oup} / stride {spec.stride}; order the checkpoint rows as "
                             "block_specs builds the blocks")
        grid = channel_grid(spec.inp, channel_steps)
        arch.update({f"{spec.name}_k{k}": snap_to_grid(hidden.get(k, 0), grid) for k in KERNEL_SIZES})
        if transformer:
            arch[f"{spec.name}_tokens"] = 0
    return arch


_SOURCE = "dingmyu/HR-NAS configs/{} (use_transformer: False; every hidden width at round(4 * C_in))"
_DENSE = widest_arch(head="segmentation", tokens=False)
SPEC = SpaceSpec(
    name="hrnas", factory=HRNASSpace,
    description="HR-NAS: multi-branch 1/4-1/32 supernet, MixConv widths + Transformer tokens per block",
    default_input=(3, 224, 224), heads=HEADS,
    cost_compiler="hrnas_automl.spaces.hrnas_cost:hrnas_cost_table",  # each kernel path / Transformer alone
    presets={
        "hrnas-supernet-cls": (widest_arch(head="classifier", tokens=False), _SOURCE.format("cls_imagenet.yml")),
        "hrnas-supernet-seg": (_DENSE, _SOURCE.format("seg_cityscapes.yml") + "; head segmentation"),
        "hrnas-supernet-kpt": (_DENSE, _SOURCE.format("keypoint_coco.yml") + "; head keypoints"),
        "hrnas-searched-cls": (official_searched_arch(),
                               "dingmyu/HR-NAS checkpoint.json (searched ImageNet classifier); hidden widths snapped "
                               "to the nearest grid value (channel_steps=None maps them exactly); the retraining "
                               "recipe's SE modules, Swish and dropout 0.28 (REFERENCE §5.2) are not in the space"),
    },
)
