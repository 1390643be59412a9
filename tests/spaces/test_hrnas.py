"""HR-NAS space: official parameter counts, labels and grid, all heads at several input sizes, the Transformer
path, zero-width units, presets, pruning hooks and argument errors."""
from __future__ import annotations

import copy
import math
import random
from typing import Any

import pytest
import torch
from torch import nn

from hrnas_automl.arch import ArchitectureError, choices_of, freeze
from hrnas_automl.registry import get_preset, get_space, list_presets, space_size
from hrnas_automl.spaces.hrnas import (
    HEADS, HRNAS_SETTINGS, TOKEN_GRID, BlockSpec, HRNASSpace, KernelPath, SearchingBlock, TokenTransformer, block_specs,
    channel_grid, hrnas_grid, hrnas_network, hrnas_supernet, official_searched_arch, positional_map, snap_to_grid,
    widest_arch,
)

# Counted by building the official dingmyu/HR-NAS models/hrnet.py HighResolutionNet in a scratch directory with the
# model_kwparams of configs/cls_imagenet.yml, seg_cityscapes.yml (19 classes) and keypoint_coco.yml (17 joints):
# sum(p.numel() for p in model.parameters()) less the parameters of every InvertedResidualChannels.bns (the unused
# distillation BatchNorms, REFERENCE §5.3).
OFFICIAL_CLS_PARAMS = 13_339_772 - 95_904
OFFICIAL_SEG19_PARAMS = 10_200_091 - 89_856
OFFICIAL_KPT17_PARAMS = 10_199_909 - 89_856
# Same model with hrnet.checkpoint_kwparams = checkpoint.json (the searched network, 3.91M, REFERENCE §5.2): less its
# distillation BNs (13,324) and less the pw_bn of the 9 blocks whose every kernel was pruned (468: the official
# block keeps that BatchNorm although it never runs; ours drops it).
OFFICIAL_SEARCHED_PARAMS = 3_907_476 - 13_324 - 468
# models/transformer.py Transformer(num_tokens, num_channels[, output_channels], downsampling=...) parameters,
# counted the same way (56.4K for 64 tokens at C=18, REFERENCE §1.2).
OFFICIAL_TRANSFORMER_PARAMS = {(18, 18, 64): 56_356, (270, 90, 64): 77_236, (18, 36, 16): 51_688}

SIZES = [(64, 64), (160, 120), (256, 192)]  # 160x120: odd maps at 1/16 and 1/32 (15 -> 8 -> 4 rows)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _random_arch(space: str = "hrnas", seed: int = 0, **space_args: Any) -> dict[str, int]:
    rng = random.Random(seed)
    return {label: rng.choice(values) for label, values in choices_of(space, **space_args).items()}


def _expected_shape(head: str, size: tuple[int, int], batch: int, outputs: int) -> tuple[int, ...]:
    if head == "classifier":
        return (batch, outputs)
    return (batch, outputs, math.ceil(size[0] / 4), math.ceil(size[1] / 4))


def _outputs(head: str) -> dict[str, int]:
    return {"num_keypoints": 5} if head == "keypoints" else {"num_classes": 7}


@pytest.fixture(scope="module")
def supernets() -> dict[str, HRNASSpace]:
    """The widest official supernet (every channel at 4x, 64 tokens per block), one per head."""
    return {head: hrnas_supernet(head=head, **_outputs(head)) for head in HEADS}


def test_official_supernets_have_the_official_parameter_counts() -> None:
    cls_net = freeze("hrnas", get_preset("hrnas-supernet-cls").arch)  # tokens 0: the Transformer is off
    assert _params(cls_net) == OFFICIAL_CLS_PARAMS
    assert _params(HRNASSpace(transformer=False)) == OFFICIAL_CLS_PARAMS
    assert _params(HRNASSpace(head="segmentation", num_classes=19, transformer=False)) == OFFICIAL_SEG19_PARAMS
    assert _params(HRNASSpace(head="keypoints", num_keypoints=17, transformer=False)) == OFFICIAL_KPT17_PARAMS


def test_searched_checkpoint_maps_exactly_on_the_fine_grid() -> None:
    arch = official_searched_arch(channel_steps=None, transformer=False)
    net = HRNASSpace(channel_steps=None, transformer=False).freeze(arch)
    assert _params(net) == OFFICIAL_SEARCHED_PARAMS
    assert not net.mutables
    # spot checks against checkpoint.json: block 0 [3,5,7] -> [32,12,1]; block 41 (e5_fuse0to1) keeps only 5x5 x1
    assert [arch[f"e1_fuse0to0_k{k}"] for k in (3, 5, 7)] == [32, 12, 1]
    assert [arch[f"e5_fuse0to1_k{k}"] for k in (3, 5, 7)] == [0, 1, 0]


def test_a_checkpoint_table_out_of_construction_order_names_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    import hrnas_automl.spaces.hrnas as hrnas

    rows = list(hrnas._OFFICIAL_SEARCHED)
    monkeypatch.setattr(hrnas, "_OFFICIAL_SEARCHED", (rows[0], rows[3], *rows[1:3], *rows[4:]))
    with pytest.raises(ValueError, match=r"^checkpoint block e1_b0_0 has oup 36 / stride 2 where the official "
                                         r"setting builds oup 24 / stride 1; order the checkpoint rows as block_specs"):
        official_searched_arch()
    monkeypatch.setattr(hrnas, "_OFFICIAL_SEARCHED", tuple(rows[:-1]))
    with pytest.raises(ValueError, match=r"^the checkpoint table has 66 blocks but the official classifier has 67; "
                                         r"give one \(oup, stride, kernels, hidden\) row per block"):
        official_searched_arch()


def test_searched_preset_is_the_checkpoint_snapped_to_the_default_grid() -> None:
    preset = get_preset("hrnas-searched-cls")
    exact = official_searched_arch(channel_steps=None, transformer=False)
    specs = {s.name: s for s in block_specs(HRNAS_SETTINGS["official"], "classifier")}
    for label, value in preset.arch.items():
        block, unit = label.rsplit("_", 1)
        if unit == "tokens":
            assert value == 0
            continue
        grid = channel_grid(specs[block].inp)
        assert value in grid
        assert all(abs(value - exact[label]) <= abs(g - exact[label]) for g in grid)
    net = freeze("hrnas", preset.arch)
    assert 3_000_000 < _params(net) < 5_000_000


@pytest.mark.parametrize(("inp", "oup", "tokens"), list(OFFICIAL_TRANSFORMER_PARAMS))
def test_transformer_has_the_official_parameter_count(inp: int, oup: int, tokens: int) -> None:
    assert _params(TokenTransformer(inp, oup, tokens, {})) == OFFICIAL_TRANSFORMER_PARAMS[(inp, oup, tokens)]


def test_positional_map_is_standardised_x_then_y() -> None:
    points = positional_map(4, 6)
    assert points.shape == (2, 4, 6)
    assert torch.allclose(points.mean(dim=(1, 2)), torch.zeros(2), atol=1e-6)
    assert torch.allclose(points.std(dim=(1, 2), unbiased=False), torch.ones(2), atol=1e-5)
    assert torch.equal(points[0, 0], points[0, 3]) and bool((points[0, :, 1:] > points[0, :, :-1]).all())
    assert torch.equal(points[1, :, 0], points[1, :, 5]) and bool((points[1, 1:] > points[1, :-1]).all())


def test_labels_follow_the_official_block_order_and_grid() -> None:
    cls_choices, seg_choices = choices_of("hrnas"), choices_of("hrnas", head="segmentation")
    # 67 searching blocks in the classifier, 61 with the dense head (REFERENCE §1.1), 4 labels each.
    assert len(cls_choices) == 67 * 4 and len(seg_choices) == 61 * 4
    assert choices_of("hrnas", head="keypoints") == seg_choices
    assert list(cls_choices)[:8] == ["e1_fuse0to0_k3", "e1_fuse0to0_k5", "e1_fuse0to0_k7", "e1_fuse0to0_tokens",
                                     "e1_b0_0_k3", "e1_b0_0_k5", "e1_b0_0_k7", "e1_b0_0_tokens"]
    assert list(cls_choices)[-1] == "head_down2_tokens" and list(seg_choices)[-1] == "head_transform_tokens"
    # checkpoint.json block 3 is the new 1/8 branch (36 channels, stride 2) grown from the fused 18-channel branch
    spec = block_specs(HRNAS_SETTINGS["official"], "classifier")[3]
    assert spec == ("e2_new1", 18, 36, 2)
    assert cls_choices["e2_new1_k3"] == [0, 5, 9, 14, 18, 23, 27, 32, 36, 41, 45, 50, 54, 59, 63, 68, 72]
    assert cls_choices["e5_b3_3_k7"][-1] == 4 * 144 and len(cls_choices["e5_b3_3_k7"]) == 17
    assert seg_choices["head_transform_k5"][-1] == 4 * 270
    assert cls_choices["e4_fuse2to1_tokens"] == list(TOKEN_GRID) == list(range(0, 65, 4))
    assert space_size(cls_choices) == 17 ** 268
    assert len(choices_of("hrnas", transformer=False)) == 67 * 3
    assert channel_grid(18, None) == tuple(range(73))
    assert {label: list(v) for label, v in hrnas_grid(HRNAS_SETTINGS["official"], "classifier").items()} == cls_choices


def test_snap_to_grid_prefers_the_nearest_then_the_larger() -> None:
    assert snap_to_grid(1, (0, 5, 9)) == 0
    assert snap_to_grid(3, (0, 5, 9)) == 5
    assert snap_to_grid(7, (0, 5, 9)) == 9  # tie 5 / 9 -> 9
    assert snap_to_grid(100, (0, 5, 9)) == 9


@pytest.mark.parametrize("head", HEADS)
def test_random_sample_runs_forward_and_backward_at_all_sizes(head: str) -> None:
    torch.manual_seed(0)
    net = hrnas_network(_random_arch(head=head, **_outputs(head), seed=1), head=head, **_outputs(head))
    assert not net.mutables
    outputs = next(iter(_outputs(head).values()))
    for size in SIZES:
        batch = 2 if size == (64, 64) else 1
        net.zero_grad()
        y = net(torch.randn(batch, 3, *size))
        assert y.shape == _expected_shape(head, size, batch, outputs)
        y.square().mean().backward()
        assert net.net.stem[0][0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("head", HEADS)
def test_widest_supernet_runs_forward_and_backward(head: str, supernets: dict[str, HRNASSpace]) -> None:
    net = supernets[head]
    assert len(net.mutables) == (67 if head == "classifier" else 61) * 4
    outputs = next(iter(_outputs(head).values()))
    y = net(torch.randn(2, 3, 64, 64))
    assert y.shape == _expected_shape(head, (64, 64), 2, outputs)
    y.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    if head == "keypoints":  # the full keypoint input once, backward included
        net.zero_grad()
        y = net(torch.randn(1, 3, 256, 192))
        assert y.shape == (1, outputs, 64, 48)
        y.square().mean().backward()
    else:
        with torch.no_grad():
            assert net(torch.randn(1, 3, 256, 192)).shape == _expected_shape(head, (256, 192), 1, outputs)


def test_transformer_path_receives_gradients() -> None:
    arch = widest_arch("tiny", "segmentation")
    net = HRNASSpace("tiny", head="segmentation", num_classes=3).freeze(arch)
    transformers = [m for m in net.modules() if isinstance(m, TokenTransformer)]
    assert len(transformers) == len(block_specs(HRNAS_SETTINGS["tiny"], "segmentation"))
    assert all(t.tokens == 64 for t in transformers)
    net(torch.randn(2, 3, 64, 64)).square().mean().backward()
    for t in transformers:
        for name, p in t.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_zero_width_paths_and_tokens_build_and_run() -> None:
    grid = hrnas_grid(HRNAS_SETTINGS["tiny"], "classifier")
    empty = {label: 0 for label in grid}
    net = HRNASSpace("tiny", num_classes=4).freeze(empty)
    blocks = list(net.net.searching_blocks())
    assert all(not b.paths and b.pw_bn is None and b.transformer is None for b in blocks)
    assert any(isinstance(b.skip, nn.Conv2d) and b.stride == 2 for b in blocks)  # grouped 1x1 stride-2 skips
    y = net(torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 4)
    y.sum().backward()
    # one kernel and a few tokens per block
    mixed = {label: (values[1] if label.endswith(("_k5", "_tokens")) else 0) for label, values in grid.items()}
    net = HRNASSpace("tiny", num_classes=4).freeze(mixed)
    assert all(list(b.paths) == ["k5"] and b.transformer.tokens == 4 for b in net.net.searching_blocks())
    net(torch.randn(2, 3, 64, 64)).sum().backward()


def test_prunable_units_expose_alphas_and_arch_reads_back_the_sample() -> None:
    arch = _random_arch(setting="tiny", head="segmentation", num_classes=3, seed=3)
    net = hrnas_network(arch, setting="tiny", head="segmentation", num_classes=3)
    units = net.prunable_units()
    assert {u.label for u in units} == {label for label, value in arch.items() if value > 0}
    for unit in units:
        assert arch[unit.label] == unit.alpha.numel()
        if unit.kind == "channels":
            assert isinstance(unit.module, KernelPath) and unit.alpha is unit.module.dw_bn.weight
        else:
            assert isinstance(unit.module, TokenTransformer) and unit.alpha is unit.module.token_norm.weight
    assert net.net.arch() == arch
    assert all(isinstance(b, SearchingBlock) for b in net.net.searching_blocks())


BN = {"momentum": 0.1, "eps": 1e-5}
NONE = torch.tensor([], dtype=torch.long)


def _trained_step(module: nn.Module, *inputs: Any) -> tuple[torch.optim.SGD, dict[str, torch.Tensor],
                                                             dict[str, torch.Tensor]]:
    """One SGD step with momentum on ``module``; its optimizer, parameters and momentum buffers (copies) after it."""
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
    module(*inputs).square().mean().backward()
    optimizer.step()
    return (optimizer, {n: p.detach().clone() for n, p in module.named_parameters()},
            {n: optimizer.state[p]["momentum_buffer"].clone() for n, p in module.named_parameters()})


def test_kernel_path_shrink_equals_the_path_without_the_dropped_channels() -> None:
    torch.manual_seed(0)
    path, x = KernelPath(6, 8, 5, 3, 2, BN), torch.randn(2, 6, 9, 9)
    optimizer, weights, momentum = _trained_step(path, x)
    keep = torch.tensor([1, 4, 6])
    reference = copy.deepcopy(path).eval()
    with torch.no_grad():  # the dropped hidden channels contribute nothing
        reference.project.weight[:, [i for i in range(8) if i not in keep]] = 0
    path.shrink(keep, optimizer.state)
    assert (path.hidden, path.dw.groups, path.expand[0].out_channels, path.project.in_channels) == (3, 3, 3, 3)
    torch.testing.assert_close(path.eval()(x), reference(x))
    params = dict(path.named_parameters())
    assert {id(p) for p in optimizer.state} == {id(p) for p in params.values()}  # old entries moved, none left
    for name, take in (("expand.0.weight", lambda t: t[keep]), ("dw.weight", lambda t: t[keep]),
                       ("dw_bn.weight", lambda t: t[keep]), ("project.weight", lambda t: t[:, keep])):
        assert torch.equal(params[name], take(weights[name]))
        assert torch.equal(optimizer.state[params[name]]["momentum_buffer"], take(momentum[name]))
    with pytest.raises(ValueError, match=r"^a k3 kernel path must keep at least one channel; remove the path"):
        path.shrink(NONE)


def test_token_transformer_shrink_keeps_its_tokens_and_their_momentum() -> None:
    torch.manual_seed(0)
    transformer, x = TokenTransformer(6, 5, 8, BN), torch.randn(2, 6, 9, 9)
    optimizer, weights, momentum = _trained_step(transformer, x, (9, 9))
    keep = torch.tensor([0, 3, 7])
    transformer.shrink(keep, optimizer.state)
    assert transformer.tokens == 3 and transformer.queries.num_embeddings == 3
    params = dict(transformer.named_parameters())
    assert {id(p) for p in optimizer.state} == {id(p) for p in params.values()}
    for name, take in (("input_proj.weight", lambda t: t[keep]), ("token_norm.bias", lambda t: t[keep]),
                       ("queries.weight", lambda t: t[keep]), ("reverse_proj.weight", lambda t: t[:, keep]),
                       ("encoder.attn.in_proj_weight", lambda t: t)):
        assert torch.equal(params[name], take(weights[name]))
        assert torch.equal(optimizer.state[params[name]]["momentum_buffer"], take(momentum[name]))
    assert transformer.eval()(x, (9, 9)).shape == (2, 5, 9, 9)
    with pytest.raises(ValueError, match=r"^a Transformer must keep at least one token; remove it instead"):
        transformer.shrink(NONE)


def test_searching_block_removes_an_emptied_unit_and_its_bn_with_the_last_path() -> None:
    block = SearchingBlock(BlockSpec("b", 6, 6, 1), {3: 4, 5: 4, 7: 0}, 8, BN)
    with pytest.raises(ValueError, match=r"^block b has no unit 'b_k7'; its units are b_k3, b_k5, b_tokens$"):
        block.shrink_unit("b_k7", NONE)
    block.shrink_unit("b_k3", torch.tensor([0, 2]))
    block.shrink_unit("b_k5", NONE)
    block.shrink_unit("b_tokens", NONE)
    assert block.arch() == {"b_k3": 2, "b_k5": 0, "b_k7": 0, "b_tokens": 0}
    assert list(block.paths) == ["k3"] and block.pw_bn is not None and block.transformer is None
    block.shrink_unit("b_k3", NONE)
    assert not block.paths and block.pw_bn is None
    x = torch.randn(1, 6, 5, 5)
    assert torch.equal(block(x), x)  # only the identity skip is left
    with pytest.raises(ValueError, match=r"^block b has no unit 'b_k3'; its units are none$"):
        block.shrink_unit("b_k3", NONE)


def test_custom_setting_grows_two_branches_at_once() -> None:
    setting = {"entries": [[1, [1], [8]], [3, [1, 0, 1], [8, 16, 32]]], "stem_channels": [8, 8],
               "head_channels": [16, 32, 64], "last_channel": 64, "dense_channel": 16}
    labels = choices_of("hrnas", setting=setting, head="segmentation")
    assert {"e2_new1_k3", "e2_new2_k3"} <= set(labels) and "e2_b1_0_k3" not in labels
    for head in HEADS:
        net = HRNASSpace(setting, head=head, **_outputs(head))
        y = net(torch.randn(2, 3, 96, 80))
        assert y.shape == _expected_shape(head, (96, 80), 2, next(iter(_outputs(head).values())))


def test_registry_presets_and_heads() -> None:
    spec = get_space("hrnas")
    assert spec.heads == HEADS
    assert {p.name for p in list_presets("hrnas")} == {"hrnas-supernet-cls", "hrnas-supernet-seg",
                                                        "hrnas-supernet-kpt", "hrnas-searched-cls"}
    seg = get_preset("hrnas-supernet-seg").arch
    assert seg == get_preset("hrnas-supernet-kpt").arch
    assert seg["head_transform_k3"] == 4 * 270 and seg["head_transform_tokens"] == 0
    with pytest.raises(ArchitectureError, match="head_transform_k3"):
        freeze("hrnas", get_preset("hrnas-supernet-seg").arch)  # a dense preset with the classifier head


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"head": "detector"}, "unknown head 'detector'.*classifier, segmentation, keypoints"),
    ({"setting": "huge"}, "unknown HR-NAS setting 'huge'.*official, tiny"),
    ({"setting": {"blocks": [1]}}, "needs 'entries'"),
    ({"setting": {"entries": [[2, [1], [8, 16]]], "head_channels": [8, 16]}}, "2 branches but 1 block counts"),
    ({"setting": {"entries": [[2, [1, 1], [8, 16]], [1, [1], [8]]], "head_channels": [8]}}, "branches may only grow"),
    ({"num_classes": 0}, "num_classes must be a positive integer"),
    ({"channel_steps": 0}, "channel_steps must be a positive integer or None"),
])
def test_bad_arguments_name_the_problem(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HRNASSpace(**kwargs)


def test_sample_off_the_grid_is_rejected() -> None:
    arch = widest_arch("tiny")
    arch["e2_b1_0_k3"] = 7
    with pytest.raises(ArchitectureError, match="e2_b1_0_k3.*allowed values: 0, 4, 8"):
        hrnas_network(arch, setting="tiny")
