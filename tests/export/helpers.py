"""What the export tests share: the network an export folder describes, rebuilt from its arch.json and weights.pt,
and the checks of its files (ONNX Runtime at another batch size, the NNI-free loader in a subprocess)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hrnas_automl.arch import resolve_space
from hrnas_automl.export import read_arch
from hrnas_automl.export.network import DETECTOR, build_network
from hrnas_automl.export.onnx import flat_outputs, ort_session, run_onnx

LOADER_CHECK = Path(__file__).with_name("loader_check.py")


def rebuild(folder: Path) -> nn.Module:
    """The PyTorch network of an export folder: built from arch.json, weights.pt loaded (strictly), eval mode."""
    arch = read_arch(folder)
    args = {k: v for k, v in arch["space_args"].items() if not (k == "head" and v == DETECTOR)}
    net = build_network(resolve_space(arch["space"], **args), arch["arch"], detector=arch.get("detector"),
                        input_shape=arch["input"])
    net.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
    return net.eval()


def expected_outputs(folder: Path, batch: int = 3, seed: int = 1) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A seeded input of ``batch`` images (another size than the export's 2) and the rebuilt network's outputs on it,
    also saved as ``<folder>.check.pt`` for :func:`loader_diffs`."""
    x = torch.randn(batch, *read_arch(folder)["input"], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = flat_outputs(rebuild(folder)(x))
    torch.save({"input": x, "expected": expected}, f"{folder}.check.pt")
    return x, expected


def relative(expected: list[torch.Tensor], got: list[torch.Tensor]) -> float:
    """The largest max |difference| of an output relative to that output's largest |value| (each its own scale)."""
    return max(float((a - b).abs().max() / a.abs().max()) for a, b in zip(expected, got, strict=True))


def onnx_diff(folder: Path, x: torch.Tensor, expected: list[torch.Tensor]) -> float:
    """:func:`relative` difference of ONNX Runtime to PyTorch at ``x``'s batch size."""
    return relative(expected, run_onnx(ort_session(folder / "model.onnx", 1), x))


def loader_diffs(*folders: Path) -> dict[str, Any]:
    """Load each folder in a fresh interpreter where ``import nni`` fails; :func:`relative` difference to the saved
    outputs."""
    proc = subprocess.run([sys.executable, str(LOADER_CHECK), *map(str, folders)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def random_statistics(net: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters (fresh ones fold to almost the identity)."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return net.eval()
