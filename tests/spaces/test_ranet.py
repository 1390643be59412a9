"""RANet space: the train_cifar.sh preset against the official network, labels, samples, per-exit MACs, config
checks."""
from __future__ import annotations

import random
from typing import Any

import pytest
import torch
from torch import nn

import hrnas_automl.spaces.ranet  # noqa: F401  (registers the space until spaces/__init__ imports it)
from hrnas_automl.arch import choices_of, freeze
from hrnas_automl.cost import count_cost
from hrnas_automl.arch import space_choices
from hrnas_automl.registry import get_preset, get_space
from hrnas_automl.spaces.ranet import RANet, RANetConfig, RANetSpace, exit_macs

# Counted by instantiating the official yangle15/RANet-pytorch models/RANet.py (RANet(args) with the train_cifar.sh
# arguments --step 4 --stepmode even --scale-list 1-2-3-3 --grFactor 4-2-1-1 --bnFactor 4-2-1-1 and the args.py
# defaults, data cifar10) in a scratch directory: sum(p.numel() for p in model.parameters()), and ptflops 0.7.5
# get_model_complexity_info(model, (3, 32, 32), backend="pytorch"). Loading that model's state_dict into the frozen
# preset (same tensor shapes, in the official registration order) gave bit-identical logits at all 8 exits.
OFFICIAL_CIFAR10_PARAMS = 3_261_830
OFFICIAL_CIFAR10_PTFLOPS_MACS = 98_689_232

# The documented grid (module docstring of spaces/ranet.py), in label order.
CIFAR_GRID: dict[str, list[Any]] = {
    "n_scales": [3, 4],
    "n_channels": [8, 16, 32],
    "growth_rate": [4, 6, 8],
    "gr_factor": ["4-2-1-1", "4-2-2-1"],
    "bn_factor": ["4-2-1-1", "4-2-2-1"],
    "block_step": [1, 2],
    "step": [2, 4],
    "step_mode": ["even", "lg"],
}


@pytest.fixture(scope="module")
def preset_net() -> nn.Module:
    net = freeze("ranet", get_preset("ranet-cifar").arch)
    return net.eval()


def test_preset_is_the_official_cifar10_network(preset_net: nn.Module) -> None:
    assert get_preset("ranet-cifar").space == "ranet"
    assert preset_net.config == RANetConfig(scale_list=(1, 2, 3, 3), n_channels=16, growth_rate=6,
                                            gr_factor=(4, 2, 1, 1), bn_factor=(4, 2, 1, 1), n_blocks=2,
                                            block_step=2, step=4, step_mode="even", data="cifar", num_classes=10)
    cost = count_cost(preset_net, (3, 32, 32))
    assert cost.params == OFFICIAL_CIFAR10_PARAMS
    assert cost.macs == OFFICIAL_CIFAR10_PTFLOPS_MACS
    with torch.no_grad():
        logits = preset_net(torch.randn(3, 3, 32, 32))
    assert len(logits) == 8
    assert all(y.shape == (3, 10) for y in logits)


def test_labels_and_candidates_are_the_documented_grid() -> None:
    assert choices_of("ranet") == CIFAR_GRID
    assert get_space("ranet").default_input == (3, 32, 32)
    # ImageNet: only the official 1-2-3-4 layout gives the exits 7x7 maps from 224x224 inputs.
    assert choices_of("ranet", data="imagenet") == {**CIFAR_GRID, "n_scales": [4]}


def _train_step(net: nn.Module, n_exits: int) -> None:
    """One forward + backward at 32x32: every exit gives (batch, classes) and every parameter gets a gradient."""
    net.train()
    logits = net(torch.randn(2, 3, 32, 32))
    assert len(logits) == n_exits
    assert all(y.shape == (2, 10) for y in logits)
    sum(nn.functional.cross_entropy(y, torch.tensor([1, 7])) for y in logits).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize("pick", ["first", "last", "random"])
def test_sample_freezes_and_trains(pick: str) -> None:
    space = RANetSpace()
    choices = space_choices(space)
    rng = random.Random(7)
    sample = {label: {"first": values[0], "last": values[-1], "random": rng.choice(values)}[pick]
              for label, values in choices.items()}
    assert space.contains(sample)
    net = space.freeze(sample)
    assert net.config.n_scales == sample["n_scales"]
    # 2 exits (n_blocks) in the lowest flow, block_step in every later one: 2 per scale with the official block_step 2.
    _train_step(net, 2 + sample["block_step"] * (sample["n_scales"] - 1))


def test_pre_activation_variant_runs() -> None:
    net = RANet(RANetConfig(bn_after=False, step=2))
    assert isinstance(net.flows[0][0].layers[0][0], nn.BatchNorm2d)  # BN-ReLU-1x1-BN-ReLU-3x3, RANet.py:56-71
    _train_step(net, 6)


def test_exit_macs_is_cumulative_without_other_heads(preset_net: nn.Module) -> None:
    macs = exit_macs(preset_net, (3, 32, 32))
    assert len(macs) == 8 and not preset_net.training  # counting keeps the network in eval mode
    assert all(a < b for a, b in zip(macs, macs[1:]))
    # Independent count: ptflops over the whole network (every head runs), minus each earlier head counted alone
    # at the input shape it sees in that forward pass.
    heads = preset_net.net.exits
    shapes: list[tuple[int, ...]] = []
    hooks = [h.register_forward_hook(lambda _m, inp, _out: shapes.append(tuple(inp[0].shape[1:]))) for h in heads]
    with torch.no_grad():
        preset_net(torch.randn(1, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    head_macs = [count_cost(h, shape).macs for h, shape in zip(heads, shapes)]
    assert macs[-1] == count_cost(preset_net, (3, 32, 32)).macs - sum(head_macs[:-1])
    with pytest.raises(ValueError, match="exit_macs needs a RANet"):
        exit_macs(nn.Linear(2, 2), (3, 32, 32))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"scale_list": (1, 2, 3, 3)}, r"gr_factor needs one factor per scale: expected 4 .*got 3"),
    ({"bn_factor": (4, 2)}, r"bn_factor needs one factor per scale: expected 3 .*got 2"),
    ({"scale_list": (1, 3, 4), "gr_factor": (4, 2, 1)}, r"scale_list must start at 1 and grow by 0 or 1"),
    ({"step_mode": "log"}, r"step_mode must be one of even, lg, got 'log'"),
    ({"data": "svhn"}, r"data must be one of cifar, imagenet, got 'svhn'"),
    ({"growth_rate": 0}, r"growth_rate must be a positive integer, got 0"),
    ({"growth_rate": 3, "gr_factor": (4, 2, 1)}, r"compress_factor 0.25 x the smallest growth 3"),
    ({"reduction": 0.0}, r"reduction must be in \(0, 1\], got 0.0"),
])
def test_config_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RANetConfig(**kwargs)


def test_space_argument_errors() -> None:
    with pytest.raises(ValueError, match="unknown head 'classifier' for the RANet space"):
        RANetSpace(head="classifier")
    with pytest.raises(ValueError, match="data must be one of cifar, imagenet, got 'svhn'"):
        RANetSpace(data="svhn")
