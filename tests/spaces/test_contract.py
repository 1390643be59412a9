"""The contract every registered space and preset keeps, checked for each space and each of its heads (as timm's
tests iterate ``list_models``): its choices are what the built space offers and survive nnictl's JSON, a seeded
random sample validates, freezes into plain layers and runs with the output its head promises, seeds reproduce,
bad samples name their label, and every preset is a sample that freezes. A new space gets these checks for free;
its family's own facts (official counts, labels) stay in its own test."""
from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from nni.nas.nn.pytorch import MutableModule
from torch import nn

from hrnas_automl.arch import ArchitectureError, build_space, choices_of, freeze, space_choices, validate_arch
from hrnas_automl.nni.compat import to_nni_search_space
from hrnas_automl.registry import Preset, SpaceSpec, get_space, list_presets, list_spaces
from hrnas_automl.strategies import RandomSearch

SEED = 3
BATCH = 2
OUTPUTS = 5  # classes or keypoints: small, and unlike every default
# What each head needs to build (check_output says what it then promises).
HEAD_ARGS: dict[str, dict[str, int]] = {
    "classifier": {"num_classes": OUTPUTS}, "segmentation": {"num_classes": OUTPUTS},
    "keypoints": {"num_keypoints": OUTPUTS}, "exits": {"num_classes": OUTPUTS}, "backbone": {},
}
# Smaller widths where a space takes them (every other space builds with its defaults).
SMALL_ARGS: dict[str, dict[str, Any]] = {"hrnas": {"setting": "tiny", "transformer": True}}

CASES = [(spec.name, head) for spec in list_spaces() for head in spec.heads]
Sampled = Callable[[str, str], tuple[dict[str, Any], nn.Module]]


def _case_id(case: tuple[str, str]) -> str:
    return "-".join(case)


def space_args(space: str, head: str) -> dict[str, Any]:
    """Constructor arguments of ``space`` with ``head``: the head's outputs, small widths."""
    if head not in HEAD_ARGS:
        raise KeyError(f"space {space} has head {head!r}: add its arguments to HEAD_ARGS and its output to "
                       "check_output in tests/spaces/test_contract.py")
    return {"head": head, **HEAD_ARGS[head], **SMALL_ARGS.get(space, {})}


def tiny_input(spec: SpaceSpec) -> tuple[int, int, int]:
    """The space's default input scaled down to at most 64 pixels a side (multiples of 16), for fast forwards."""
    channels, height, width = spec.default_input
    scale = max(height, width) / 64
    if scale <= 1:
        return spec.default_input
    return channels, round(height / scale / 16) * 16, round(width / scale / 16) * 16


def check_output(head: str, net: nn.Module, out: Any, size: tuple[int, int]) -> None:
    """The output ``head`` promises for a (BATCH, C, *size) input."""
    height, width = size
    if head == "classifier":
        assert out.shape == (BATCH, OUTPUTS)
    elif head in ("segmentation", "keypoints"):  # maps at 1/4 of the input
        assert out.shape == (BATCH, OUTPUTS, math.ceil(height / 4), math.ceil(width / 4))
    elif head == "backbone":  # one map per feature_info entry, with its channels at its reduction
        assert [tuple(f.shape) for f in out] == [
            (BATCH, i["num_chs"], math.ceil(height / i["reduction"]), math.ceil(width / i["reduction"]))
            for i in net.feature_info]
        assert len(out) > 1
    elif head == "exits":  # every early exit classifies
        assert len(out) > 1 and all(y.shape == (BATCH, OUTPUTS) for y in out)
    else:
        pytest.fail(f"head {head!r} has no output check: add it to check_output")


def mutables_left(net: nn.Module) -> list[str]:
    """Names of the NNI mutable modules inside ``net``, and its own labels if it is a model space."""
    inner = [name for name, m in net.named_modules() if m is not net and isinstance(m, MutableModule)]
    own = list(net.simplify()) if isinstance(net, MutableModule) else []
    return inner + own


def _allowed(values: list[Any]) -> str:
    """The candidates as the one-line errors list them: strings bare, other values as JSON."""
    return ", ".join(v if isinstance(v, str) else json.dumps(v) for v in values)


@pytest.fixture(scope="module")
def built() -> Callable[[str, str], nn.Module]:
    """The supernet of each (space, head), built once for the module."""
    return functools.cache(lambda space, head: build_space(space, **space_args(space, head)))


def _seeded_freeze(space: str, head: str, arch: dict[str, Any]) -> nn.Module:
    with torch.random.fork_rng():  # the weights follow the seed; the caller's stream stays as it was
        torch.manual_seed(SEED)
        return freeze(space, arch, **space_args(space, head))


@pytest.fixture(scope="module")
def sampled() -> Sampled:
    """A seeded random sample of each (space, head) and its frozen network, made once for the module."""
    @functools.cache
    def sample(space: str, head: str) -> tuple[dict[str, Any], nn.Module]:
        arch = RandomSearch(choices_of(space, **space_args(space, head)), seed=SEED).ask()
        return arch, _seeded_freeze(space, head, arch)

    return sample


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_choices_are_the_built_space_and_none_is_empty(case: tuple[str, str],
                                                       built: Callable[[str, str], nn.Module]) -> None:
    space, head = case
    choices = choices_of(space, **space_args(space, head))
    assert choices and all(values for values in choices.values())
    assert list(choices.items()) == list(space_choices(built(space, head)).items())  # same labels, same order


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_nni_search_space_json_round_trips(case: tuple[str, str]) -> None:
    space, head = case
    choices = choices_of(space, **space_args(space, head))
    exported = to_nni_search_space(choices)
    read_back = json.loads(json.dumps(exported))
    assert read_back == exported
    assert {label: spec["_value"] for label, spec in read_back.items()} == choices
    assert all(spec["_type"] == "choice" for spec in read_back.values())


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_seeded_sample_freezes_into_plain_layers_and_runs(case: tuple[str, str], sampled: Sampled) -> None:
    space, head = case
    arch, net = sampled(space, head)
    assert validate_arch(arch, choices_of(space, **space_args(space, head)), space) == arch
    assert json.loads(json.dumps(arch)) == arch  # travels through nnictl / YAML unchanged
    assert mutables_left(net) == []
    channels, *size = tiny_input(get_space(space))
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(BATCH, channels, *size))
    check_output(head, net, out, tuple(size))


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_same_seed_same_sample_and_weights(case: tuple[str, str], sampled: Sampled) -> None:
    space, head = case
    arch, net = sampled(space, head)
    choices = choices_of(space, **space_args(space, head))
    assert RandomSearch(choices, seed=SEED).ask() == arch
    assert any(RandomSearch(choices, seed=SEED + s).ask() != arch for s in range(1, 4))  # the seed matters
    again = _seeded_freeze(space, head, arch).state_dict()
    weights = net.state_dict()
    assert list(again) == list(weights)
    assert all(torch.equal(again[k], weights[k]) for k in weights)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_bad_samples_name_the_label(case: tuple[str, str], sampled: Sampled) -> None:
    space, head = case
    args = space_args(space, head)
    choices = choices_of(space, **args)
    arch, _ = sampled(space, head)
    for label, values in choices.items():  # every label: a value off its list
        message = f"label {label!r} of space {space} has value 'off-grid'; allowed values: {_allowed(values)}"
        with pytest.raises(ArchitectureError, match=f"^{re.escape(message)}$"):
            validate_arch({**arch, label: "off-grid"}, choices, space)
    first, last = next(iter(choices)), list(choices)[-1]
    with pytest.raises(ArchitectureError, match=re.escape(f"label {last!r} of space {space} has value 'off-grid'")):
        freeze(space, {**arch, last: "off-grid"}, **args)
    with pytest.raises(ArchitectureError, match=f"^unknown label 'bogus' for space {re.escape(space)} "):
        freeze(space, {**arch, "bogus": choices[first][0]}, **args)
    missing = f"architecture for space {space} is missing label {first!r} (allowed values: {_allowed(choices[first])})"
    with pytest.raises(ArchitectureError, match=f"^{re.escape(missing)}$"):
        freeze(space, {k: v for k, v in arch.items() if k != first}, **args)


def preset_args(preset: Preset) -> dict[str, Any] | None:
    """The space arguments ``preset`` is a sample for: the space's defaults, else the first head whose labels it has
    (HR-NAS's dense presets); None if no head has them."""
    for args in ({}, *({"head": head} for head in get_space(preset.space).heads)):
        if set(preset.arch) == set(choices_of(preset.space, **args)):
            return args
    return None


@pytest.mark.parametrize("preset", list_presets(), ids=lambda p: p.name)
def test_preset_is_a_sample_of_its_space_and_freezes(preset: Preset) -> None:
    args = preset_args(preset)
    assert args is not None, f"preset {preset.name} has the labels of no head of space {preset.space}"
    assert preset.source
    assert validate_arch(preset.arch, choices_of(preset.space, **args), preset.space) == dict(preset.arch)
    assert mutables_left(freeze(preset.space, preset.arch, **args)) == []
