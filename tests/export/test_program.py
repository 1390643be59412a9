"""The program of an export: TorchScript (traced, frozen) where torch.export refuses the network, with the reason
in arch.json, and the loader reading it back; a folder that is no export is one line."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from hrnas_automl.export import load, read_arch
from hrnas_automl.export.network import ExportError, export_network


class _DataDependent(nn.Module):
    """A branch on tensor values: torch.export cannot decide it, a trace records the branch taken (always this one)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        if (y.abs() >= 0).all():
            return y.relu()
        return y


def test_a_network_torch_export_refuses_gets_a_torchscript_program(tmp_path: Path) -> None:
    net = _DataDependent().eval()
    record = export_network(net, tmp_path, input_shape=(3, 8, 8), record={"space": "custom"}, weights_from=None,
                            latency=False, log=lambda line: None)
    program = record["program"]
    assert program["kind"] == "torchscript" and program["file"] == "model.ts" and not (tmp_path / "model.pt2").exists()
    assert "torch_export_error" in program and read_arch(tmp_path) == record
    # fx cannot trace the branch either, so its conv -> BN pair is not found: the BN stays and is counted
    assert record["inference_form"] == {"batchnorm_folded": 0, "batchnorm_left": 1, "dropout_removed": 0}
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(load(tmp_path)(x), net(x), atol=1e-5)


def test_a_mismatch_above_the_tolerance_marks_nothing_exported(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"differs from the PyTorch network: max abs difference .* tolerance 0\)"):
        export_network(_DataDependent().eval(), tmp_path, input_shape=(3, 8, 8), record={}, weights_from=None,
                       tolerance=0.0, latency=False, log=lambda line: None)
    assert not (tmp_path / "arch.json").exists()
    with pytest.raises(ValueError, match=r"holds no arch.json; give a folder written by `hrnas-automl export`"):
        load(tmp_path)
