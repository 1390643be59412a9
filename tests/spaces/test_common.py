"""spaces/common: the conv unit every family builds from, and the choice/freeze mixin of the spaces whose
constructor reads choices (HR-NAS, Lite-HRNet, RANet): labels exposed once, frozen the same way by
``space.freeze`` and ``hrnas_automl.arch.freeze``."""
from __future__ import annotations

import random
from typing import Any

import pytest
import torch
from nni.nas.nn.pytorch import ModelSpace
from torch import nn

from hrnas_automl.arch import build_space, choices_of, freeze
from hrnas_automl.spaces.common import TopLevelChoices, conv_bn_act, dw_pw


def test_conv_bn_act_keeps_the_sequential_layout_and_its_options() -> None:
    unit = conv_bn_act(4, 8, 3, 2, groups=2, bn_args={"momentum": 0.01, "eps": 1e-3})
    assert list(unit.state_dict()) == ["0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                                       "1.num_batches_tracked"]
    conv, bn, act = unit
    assert (conv.kernel_size, conv.stride, conv.padding, conv.groups, conv.bias) == ((3, 3), (2, 2), (1, 1), 2, None)
    assert (bn.momentum, bn.eps) == (0.01, 1e-3) and isinstance(act, nn.ReLU) and act.inplace
    no_norm = conv_bn_act(4, 8, norm=False, act=nn.Sigmoid)  # 'auto' bias: a conv without a norm has one
    assert [type(m) for m in no_norm] == [nn.Conv2d, nn.Sigmoid] and no_norm[0].bias is not None
    assert conv_bn_act(4, 8, bias=True)[0].bias is not None and len(conv_bn_act(4, 8, act=None)) == 2
    dw, pw = dw_pw(6, 10, 5, 2, act=None)
    assert (dw[0].groups, dw[0].stride, len(dw), pw[0].out_channels, len(pw)) == (6, (2, 2), 2, 10, 2)


class _Widths(TopLevelChoices, ModelSpace):
    def __init__(self) -> None:
        super().__init__()
        self.width = self.choose("width", [4, 8, 16], default=8)
        self.depth = self.choose("depth", (1, 2))
        self.convs = nn.Sequential(*(nn.Conv2d(3 if i == 0 else self.width, self.width, 1) for i in range(self.depth)))


def test_choose_registers_labels_with_their_defaults_and_freeze_reads_the_sample() -> None:
    space = _Widths()
    mutables = space.simplify()
    assert list(mutables) == ["width", "depth"] and list(mutables["width"].values) == [4, 8, 16]
    assert (space.width, space.depth) == (8, 1) == (mutables["width"].default(), mutables["depth"].default())
    frozen = space.freeze({"width": 16, "depth": 2})
    assert type(frozen) is _Widths and (frozen.width, frozen.depth) == (16, 2) and not frozen.simplify()
    assert [c.out_channels for c in frozen.convs] == [16, 16]


@pytest.mark.parametrize(("space", "args", "widest"), [
    ("hrnas", {"setting": "tiny", "head": "segmentation", "num_classes": 3}, True),
    ("lite-hrnet", {}, False),
    ("ranet", {}, False),
])
def test_every_top_level_space_freezes_the_same_by_its_method_and_by_arch_freeze(space: str, args: dict[str, Any],
                                                                                 widest: bool) -> None:
    supernet = build_space(space, **args)
    assert isinstance(supernet, TopLevelChoices)
    choices = choices_of(space, **args)
    defaults = {label: m.default() for label, m in supernet.simplify().items()}
    top = [label for label in ("width", "reduce_ratio", "n_channels", "e1_b0_0_k3") if label in choices]
    assert top and all(defaults[k] == (max(choices[k]) if widest else choices[k][0]) for k in top)
    rng = random.Random(1)
    sample = {label: rng.choice(values) for label, values in choices.items()}
    torch.manual_seed(0)
    by_method = supernet.freeze(sample)
    torch.manual_seed(0)
    by_arch = freeze(space, sample, **args)
    assert type(by_method) is type(by_arch) is type(supernet) and not by_method.simplify()
    mine, theirs = by_method.state_dict(), by_arch.state_dict()
    assert list(mine) == list(theirs) and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert list(mine) != list(supernet.state_dict())  # the sample, not the dry-run network
