"""Lite-HRNet space: presets against the official networks, labels, frozen samples with both heads, the conditional
channel weighting block against a hand computation, the paper's fusion, argument errors."""
from __future__ import annotations

import random
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hrnas_automl.arch import choices_of, freeze, resolve_space
from hrnas_automl.cost import count_cost
from hrnas_automl.registry import get_preset, get_space, space_size
from hrnas_automl.spaces.lite_hrnet import (ConditionalChannelWeighting, LiteHRNetSpace, MultiResolutionFusion,
                                            distinct_networks)

# Counted in a scratch directory from the official HRNet/Lite-HRNet models/backbones/litehrnet.py (unchanged source;
# mmcv ConvModule / DepthwiseSeparableConvModule re-implemented with their semantics: bias only without a norm) with
# the extras of configs/top_down/*/coco/*_coco_256x192.py, plus mmpose TopDownSimpleHead(num_deconv_layers=0,
# final_conv_kernel=1) = Conv2d(backbone width -> 17, 1x1, bias): sum(p.numel() for p in model.parameters()).
# Copying those weights into the frozen presets gave bit-identical heatmaps once the official fusion forward was
# replaced by the paper's (each input added once).
OFFICIAL_PARAMS = {
    "lite-hrnet-18": 1_130_769,
    "lite-hrnet-30": 1_763_717,
    "naive-lite-hrnet-18": 760_365,  # head on the 30 channels the backbone gives (the config says 40, REFERENCE §5.8)
    "wider-naive-lite-hrnet-18": 1_318_625,
}
# ptflops 0.7.5 (PyTorch backend) on that official Lite-HRNet-18 at 3x256x192 with the paper's fusion patched in, and
# the part of it that is ptflops counting each official nn.Upsample twice (module hook + F.interpolate patch).
OFFICIAL_18_PAPER_FUSION_MACS = 229_823_488
OFFICIAL_18_UPSAMPLE_DOUBLE_COUNT = 2_519_040

BLOCKS = ["naive", "ccw"]
GRID: dict[str, list[Any]] = {
    "width": [20, 30, 40], "reduce_ratio": [4, 8, 16],
    "s1_modules": [2, 3], **{f"s1_m{i}": BLOCKS for i in range(3)},
    "s2_modules": [4, 5, 6, 7, 8], **{f"s2_m{i}": BLOCKS for i in range(8)},
    "s3_modules": [2, 3], **{f"s3_m{i}": BLOCKS for i in range(3)},
}


@pytest.mark.parametrize("name", list(OFFICIAL_PARAMS))
def test_presets_have_the_official_parameter_counts(name: str) -> None:
    preset = get_preset(name)
    assert preset.space == "lite-hrnet"
    net = freeze("lite-hrnet", preset.arch)
    assert sum(p.numel() for p in net.parameters()) == OFFICIAL_PARAMS[name]


def test_preset_macs_are_the_official_network_with_the_paper_fusion() -> None:
    net = freeze("lite-hrnet", get_preset("lite-hrnet-18").arch)
    cost = count_cost(net, (3, 256, 192))
    assert cost.macs == OFFICIAL_18_PAPER_FUSION_MACS - OFFICIAL_18_UPSAMPLE_DOUBLE_COUNT


def test_labels_and_candidates_are_the_documented_grid() -> None:
    spec = get_space("lite-hrnet")
    assert spec.heads == ("keypoints", "segmentation") and spec.default_input == (3, 256, 192)
    assert choices_of("lite-hrnet") == GRID
    assert choices_of("lite-hrnet", head="segmentation", num_classes=5) == GRID
    assert space_size(GRID) == 2_949_120
    # Networks that differ: block labels past a stage's depth are ignored.
    assert distinct_networks() == 9 * (2**2 + 2**3) * sum(2**d for d in range(4, 9)) * (2**2 + 2**3)


def _random_arch(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    return {label: rng.choice(values) for label, values in GRID.items()}


def _modules_per_stage(net: nn.Module) -> list[list[str]]:
    """The block type each built module of each stage runs (class of the chosen LayerChoice candidate)."""
    kinds = {"_NaiveBranches": "naive", "_WeightingBlocks": "ccw"}
    return [[kinds[type(m.blocks).__name__] for m in stage] for stage in net.stages]


@pytest.mark.parametrize(("head", "size", "seed"), [
    ("keypoints", (64, 64), 1), ("keypoints", (256, 192), 2),
    ("segmentation", (64, 64), 3), ("segmentation", (256, 192), 4),
])
def test_random_sample_builds_its_modules_and_trains(head: str, size: tuple[int, int], seed: int) -> None:
    arch = _random_arch(seed)
    net = freeze("lite-hrnet", arch, head=head, num_keypoints=5, num_classes=3)
    assert _modules_per_stage(net) == [[arch[f"s{s}_m{i}"] for i in range(arch[f"s{s}_modules"])] for s in (1, 2, 3)]
    assert net.final_layer.in_channels == arch["width"]
    net.train()
    out = net(torch.randn(2, 3, *size))
    assert out.shape == (2, 5 if head == "keypoints" else 3, size[0] // 4, size[1] // 4)
    if head == "keypoints":
        loss = F.mse_loss(out, torch.rand_like(out))
    else:
        loss = F.cross_entropy(out, torch.randint(0, 3, (2, size[0] // 4, size[1] // 4)))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_unfrozen_space_runs_its_dry_run_network_at_any_input_size() -> None:
    space = LiteHRNetSpace()
    with torch.no_grad():
        assert space(torch.randn(1, 3, 64, 96)).shape == (1, 17, 16, 24)
        # Not a multiple of 32: branches at 25x19, 13x10, 7x5, 4x3; fusion resizes to each target size.
        assert space(torch.randn(1, 3, 100, 76)).shape == (1, 17, 25, 19)
        ccw = freeze("lite-hrnet", get_preset("lite-hrnet-18").arch).eval()  # the dry run has naive blocks only
        assert ccw(torch.randn(1, 3, 100, 76)).shape == (1, 17, 25, 19)


def _randomize(module: nn.Module, seed: int) -> None:
    """Fixed, non-trivial weights and BN statistics (eval mode uses the running statistics)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    module.eval()


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    shape = (1, -1, 1, 1)
    return ((x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
            * bn.weight.view(shape) + bn.bias.view(shape))


def _pointwise(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    y = torch.einsum("oc,nchw->nohw", conv.weight[:, :, 0, 0], x)
    return y if conv.bias is None else y + conv.bias.view(1, -1, 1, 1)


def _depthwise3x3(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1))
    return sum(conv.weight[:, 0, dy, dx].view(1, -1, 1, 1) * padded[:, :, dy:dy + h, dx:dx + w]
               for dy in range(3) for dx in range(3))


def test_conditional_channel_weighting_matches_a_hand_computation() -> None:
    """Two branches of 8 and 16 channels (halves 4 and 8) at 4x4 and 2x2, reduce ratio 2 (12 -> 6 -> 12 channels)."""
    block = ConditionalChannelWeighting([8, 16], reduce_ratio=2)
    _randomize(block, seed=0)
    gen = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(1, 8, 4, 4, generator=gen), torch.randn(1, 16, 2, 2, generator=gen)
    with torch.no_grad():
        y0, y1 = block([x0, x1])

        kept, halves = [x0[:, :4], x1[:, :8]], [x0[:, 4:], x1[:, 8:]]
        # Cross-resolution weights: 2x2 average pooling of branch 0 to branch 1's size, concatenate, 1x1+BN+ReLU,
        # 1x1+BN+Sigmoid, split 4/8, nearest upsampling of branch 0's weights back to 4x4.
        pooled0 = halves[0].reshape(1, 4, 2, 2, 2, 2).mean(dim=(3, 5))
        cr = block.cross_resolution
        z = torch.relu(_bn(_pointwise(torch.cat([pooled0, halves[1]], 1), cr.reduce[0]), cr.reduce[1]))
        a = torch.sigmoid(_bn(_pointwise(z, cr.expand[0]), cr.expand[1]))
        weights = [a[:, :4].repeat_interleave(2, dim=2).repeat_interleave(2, dim=3), a[:, 4:]]
        expected = []
        for b, (half, w) in enumerate(zip(halves, weights)):
            dw = block.depthwise[b]
            h = _bn(_depthwise3x3(half * w, dw[0]), dw[1])
            # Spatial weights: global average, 1x1 (bias) + ReLU, 1x1 (bias) + Sigmoid.
            sw = block.spatial[b].weights
            s = torch.sigmoid(_pointwise(torch.relu(_pointwise(h.mean(dim=(2, 3), keepdim=True), sw[1][0])), sw[2][0]))
            out = torch.empty_like(torch.cat([kept[b], h], 1))
            out[:, 0::2], out[:, 1::2] = kept[b], h * s  # concat + channel shuffle(2) interleaves the halves
            expected.append(out)
    assert block.spatial[0].weights[1][0].out_channels == 1  # int(4 / 4): spatial ratio 4, as the official block
    torch.testing.assert_close(y0, expected[0])
    torch.testing.assert_close(y1, expected[1])


def test_fusion_adds_every_branch_once() -> None:
    """With all cross-resolution paths zeroed, output i is ReLU(x_i) (the official forward gives ReLU(2 x_0))."""
    fusion = MultiResolutionFusion([4, 8, 16])
    with torch.no_grad():
        for p in fusion.parameters():
            p.zero_()
    fusion.eval()
    xs = [torch.randn(1, 4, 8, 8), torch.randn(1, 8, 4, 4), torch.randn(1, 16, 2, 2)]
    with torch.no_grad():
        outs = fusion(xs)
    for x, y in zip(xs, outs):
        torch.testing.assert_close(y, torch.relu(x))


def test_space_argument_errors() -> None:
    with pytest.raises(ValueError, match="unknown head 'classifier' for the Lite-HRNet space; choose one of "
                                         "keypoints, segmentation"):
        LiteHRNetSpace(head="classifier")
    with pytest.raises(ValueError, match="num_classes must be a positive integer, got 0"):
        LiteHRNetSpace(head="segmentation", num_classes=0)


def test_canonical_form_is_one_per_network_and_builds_that_network() -> None:
    space = resolve_space("lite-hrnet", num_keypoints=5)
    arch = {**_random_arch(5), "s1_modules": 2, "s2_modules": 4, "s3_modules": 3}
    dead = ["s1_m2", *(f"s2_m{i}" for i in range(4, 8))]  # modules past the stage's depth: not built
    twin = {**arch, **{label: "ccw" if arch[label] == "naive" else "naive" for label in dead}}
    canonical = space.canonical(arch)
    assert canonical == space.canonical(twin) == space.canonical(canonical)
    assert {label: canonical[label] for label in dead} == dict.fromkeys(dead, "naive")
    assert {k: v for k, v in canonical.items() if k not in dead} == {k: v for k, v in arch.items() if k not in dead}
    assert space.canonical({**arch, "s3_m2": "ccw"}) != space.canonical({**arch, "s3_m2": "naive"})  # a built module
    nets = [space.freeze(a) for a in (arch, twin, canonical)]
    shapes = [[(k, tuple(v.shape)) for k, v in net.state_dict().items()] for net in nets]
    assert shapes[0] == shapes[1] == shapes[2]
    costs = [count_cost(net, (3, 64, 48)) for net in nets]  # measured on the built networks, not the analytic model
    assert costs[0].macs == costs[1].macs == costs[2].macs and costs[0].params == costs[1].params == costs[2].params
