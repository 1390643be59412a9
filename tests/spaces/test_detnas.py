"""DetNAS spaces: sizes, labels, block definitions, heads, presets against the official networks."""
from __future__ import annotations

import pytest
import torch

from hrnas_automl.arch import choices_of, freeze
from hrnas_automl.registry import get_preset
from hrnas_automl.spaces.common import channel_shuffle
from hrnas_automl.spaces.detnas import DETNAS_OPS, DetNASSpace, ShuffleNetV2Block

# Parameter counts of the official 1000-class networks, counted by instantiating megvii-model/DetNAS
# Supernet-ImageNet/detnasnet.py (ShuffleNetV2DetNAS) and summing first_conv, the chosen op of every block,
# last_conv and fc for the published architecture lists of maskrcnn_benchmark/.../detnasnet.py.
OFFICIAL_PARAMS = {
    "detnas-coco-fpn-300m": 3_533_112,
    "detnas-coco-retinanet-300m": 3_725_320,
    "detnas-coco-fpn-1.3g": 10_426_328,
}


@pytest.mark.parametrize(("space", "repeats"), [("detnas-large", (8, 8, 16, 8)), ("detnas-small", (4, 4, 8, 4))])
def test_labels_and_size(space: str, repeats: tuple[int, ...]) -> None:
    choices = choices_of(space)
    expected = [f"s{s}_b{b}" for s, n in enumerate(repeats, start=1) for b in range(n)]
    assert list(choices) == expected
    assert all(v == list(DETNAS_OPS) for v in choices.values())
    size = 1
    for v in choices.values():
        size *= len(v)
    assert size == 4 ** sum(repeats)


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_preset_parameter_count_equals_official(name: str) -> None:
    preset = get_preset(name)
    net = freeze(preset.space, preset.arch)
    assert sum(p.numel() for p in net.parameters()) == OFFICIAL_PARAMS[name]


def test_frozen_network_builds_the_chosen_op() -> None:
    net = freeze("detnas-small", get_preset("detnas-coco-fpn-300m").arch)
    # s1_b0 is k7 (official index 2) -> a 7x7 depthwise conv
    dw = [m for m in net.stages[0][0].modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert {m.kernel_size for m in dw} == {(7, 7)}


def test_backbone_head_returns_c2_to_c5() -> None:
    space = DetNASSpace("small", head="backbone")
    feats = space(torch.randn(1, 3, 128, 96))
    assert [f.shape[1] for f in feats] == [64, 160, 320, 640]
    assert [(f.shape[2], f.shape[3]) for f in feats] == [(32, 24), (16, 12), (8, 6), (4, 3)]
    assert [i["reduction"] for i in space.feature_info] == [4, 8, 16, 32]


def test_channel_shuffle_matches_official_order() -> None:
    x = torch.arange(8.0).view(1, 8, 1, 1)
    a, b = channel_shuffle(x).chunk(2, dim=1)  # DetNAS's channel_shuffle1, as ShuffleNetV2Block splits it
    assert a.flatten().tolist() == [0, 4, 1, 5]
    assert b.flatten().tolist() == [2, 6, 3, 7]


@pytest.mark.parametrize("op", DETNAS_OPS)
def test_block_shapes_and_bias_free_convs(op: str) -> None:
    down = ShuffleNetV2Block(16, 64, 2, op)
    same = ShuffleNetV2Block(64, 64, 1, op)
    y = same(down(torch.randn(2, 16, 16, 16)))
    assert y.shape == (2, 64, 8, 8)
    convs = [m for m in (*down.modules(), *same.modules()) if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.bias is None for c in convs)
    # mid = out // 2 on the main branch (official base_mid_channels)
    first = next(m for m in same.main.modules() if isinstance(m, torch.nn.Conv2d) and m.groups == 1)
    assert first.out_channels == 32


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="unknown DetNAS config 'tiny'; choose one of large, small"):
        DetNASSpace("tiny")
    with pytest.raises(ValueError, match="unknown head 'fpn'"):
        DetNASSpace("small", head="fpn")
    with pytest.raises(ValueError, match="stride-1 block keeps its width"):
        ShuffleNetV2Block(32, 64, 1, "k3")
