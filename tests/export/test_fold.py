"""The inference form: every conv -> BN pair folded (also outside nn.Sequential, found by torch.fx), dropout
removed, the outputs unchanged, the original network untouched."""
from __future__ import annotations

import torch
from torch import nn

from hrnas_automl.arch import load_arch, resolve_space
from hrnas_automl.export.fold import inference_form
from hrnas_automl.spaces.hrnas import KernelPath
from tests.export.helpers import random_statistics


def test_detnas_folds_every_batchnorm_and_drops_dropout() -> None:
    net = random_statistics(resolve_space("detnas-small", num_classes=5).freeze(
        load_arch("preset:detnas-coco-fpn-300m")[1]))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded, report = inference_form(net)
    bns = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert report.batchnorm_folded == bns == 88 and report.batchnorm_left == 0 and report.dropout_removed == 1
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.Dropout)) for m in folded.modules())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected, got = net(x), folded(x)
    assert torch.allclose(expected, got, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the original is left as it was
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())


def test_conv_bn_pair_outside_a_sequential_is_found_by_tracing() -> None:
    """HR-NAS's kernel path calls ``dw_bn(dw(...))`` as attributes, not as an nn.Sequential: both of its BNs fold."""
    path = random_statistics(KernelPath(8, 12, 8, 5, 1, {}))
    folded, report = inference_form(path)
    assert report.batchnorm_folded == 2 and report.batchnorm_left == 0
    assert isinstance(folded.dw_bn, nn.Identity) and folded.dw.bias is not None
    x = torch.randn(2, 8, 9, 9)
    with torch.no_grad():
        assert torch.allclose(path(x), folded(x), atol=1e-5)


def test_a_conv_whose_output_is_used_twice_keeps_its_batchnorm() -> None:
    class Both(nn.Module):  # bn(conv(x)) + conv(x): folding the BN into the conv would change the second use
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.bn(y) + y

    net = random_statistics(Both())
    folded, report = inference_form(net)
    assert report.batchnorm_folded == 0 and report.batchnorm_left == 1
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(net(x), folded(x))


def test_hrnas_batchnorm_of_the_path_sum_and_of_the_transformer_fold() -> None:
    """HR-NAS normalises the sum of its kernel paths (``pw_bn``): it folds into each path's projection; the
    Transformer path's two conv -> BN pairs fold too (fx cannot trace it); the outputs do not change."""
    space = resolve_space("hrnas", setting="tiny", head="segmentation", num_classes=3)
    choices = space.choices
    tokens = [label for label in choices if label.endswith("_tokens")][:3]
    arch = {label: values[1] if label.endswith(("_k3", "_k5")) or label in tokens else 0
            for label, values in choices.items()}
    net = random_statistics(space.freeze(arch))
    blocks = [m for m in net.modules() if getattr(m, "pw_bn", None) is not None]
    folded, report = inference_form(net)
    assert len(blocks) > 10 and report.batchnorm_left == 0
    assert report.batchnorm_folded == sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected, got = net(x), folded(x)
    assert torch.allclose(expected, got, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
