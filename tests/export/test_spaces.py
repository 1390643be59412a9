"""Every space and head exports: ONNX Runtime and the torch.export program compute what the PyTorch network does
(at a batch size other than the export's), arch.json's cost is the cost module's, and the folder loads back in an
interpreter where NNI cannot be imported. Small inputs and narrow architectures keep each case short."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hrnas_automl.arch import resolve_space
from hrnas_automl.cost import count_cost
from hrnas_automl.export.command import export
from tests import EXAMPLES
from tests.export.helpers import expected_outputs, loader_diffs, onnx_diff, rebuild

PRESET = "preset:detnas-coco-fpn-300m"
RELATIVE = 1e-4  # the export's default tolerance, relative to each output's largest |value|


def _hrnas_arch(tmp_path: Path, **space_args: Any) -> str:
    """A narrow HR-NAS sample with Transformers on: every k3 path at its narrowest width, k5/k7 off, the first two
    token labels at their fewest tokens (a Transformer path in those blocks)."""
    choices = resolve_space("hrnas", **space_args).choices
    tokens = [label for label in choices if label.endswith("_tokens")][:2]
    arch = {label: values[1] if label.endswith("_k3") or label in tokens else 0 for label, values in choices.items()}
    path = tmp_path / "arch.json"
    path.write_text(json.dumps({"space": "hrnas", "arch": arch}))
    return str(path)


_HRNAS = {"setting": "tiny"}
CASES = [
    pytest.param("detnas-small", {"num_classes": 5}, PRESET, (3, 32, 32), ["output"], id="detnas-classifier"),
    pytest.param("detnas-small", {"head": "backbone"}, PRESET, (3, 64, 64), [f"output{i}" for i in range(4)],
                 id="detnas-backbone-C2-C5"),
    pytest.param("detnas-small", {"head": "detector", "num_classes": 3}, PRESET, (3, 64, 64),
                 ["logits", "dist", "centerness", "points", "ranges"], id="detnas-fcos-detector"),
    pytest.param("hrnas", {**_HRNAS, "head": "classifier", "num_classes": 5}, None, (3, 64, 64), ["output"],
                 id="hrnas-classifier", marks=pytest.mark.slow),
    pytest.param("hrnas", {**_HRNAS, "head": "segmentation", "num_classes": 3}, None, (3, 64, 64), ["output"],
                 id="hrnas-segmentation"),
    pytest.param("hrnas", {**_HRNAS, "head": "keypoints", "num_keypoints": 4}, None, (3, 64, 64), ["output"],
                 id="hrnas-keypoints", marks=pytest.mark.slow),
    pytest.param("lite-hrnet", {"head": "keypoints", "num_keypoints": 4}, "preset:lite-hrnet-18", (3, 64, 64),
                 ["output"], id="lite-hrnet-keypoints"),
    pytest.param("lite-hrnet", {"head": "segmentation", "num_classes": 3}, "preset:naive-lite-hrnet-18", (3, 64, 64),
                 ["output"], id="lite-hrnet-segmentation", marks=pytest.mark.slow),
    pytest.param("ranet", {}, str(EXAMPLES / "ranet" / "small_arch.json"), (3, 32, 32), None, id="ranet-every-exit"),
]


@pytest.mark.parametrize(("space", "space_args", "arch_ref", "shape", "outputs"), CASES)
def test_space_exports_and_loads_without_nni(space: str, space_args: dict[str, Any], arch_ref: str | None,
                                             shape: tuple[int, int, int], outputs: list[str] | None,
                                             tmp_path: Path) -> None:
    folder, lines = tmp_path / "out", []
    args = {k: v for k, v in space_args.items() if k != "head" or v != "detector"}
    arch_ref = arch_ref or _hrnas_arch(tmp_path, **args)
    record = export(space, output=folder, arch_ref=arch_ref, space_args=space_args, input_shape=shape,
                    latency=False, log=lines.append)
    assert json.loads((folder / "arch.json").read_text()) == record
    assert {p.name for p in folder.iterdir()} >= {"arch.json", "weights.pt", "model.onnx", "model.pt2"}
    assert not (folder / "model.ts").exists()
    assert record["program"] == {**record["program"], "kind": "torch.export", "dynamic_batch": True}
    assert any("random initialisation" in line for line in lines)
    assert any(f"ONNX Runtime max abs difference {record['onnx']['max_abs_diff']:.3g}" in line for line in lines)
    net = rebuild(folder)
    if outputs is None:  # RANet: every exit's logits, in exit order
        outputs = [f"output{i}" for i in range(len(net.net.exits))]
        assert len(outputs) >= 2
    assert record["outputs"] == outputs
    cost = count_cost(net, shape)
    assert record["cost"] == {"macs": cost.macs, "params": cost.params}
    x, expected = expected_outputs(folder, batch=3)
    assert len(expected) == len(outputs)
    assert onnx_diff(folder, x, expected) <= RELATIVE
    report = loader_diffs(folder)
    assert report["nni_modules"] == []
    assert report["diffs"][str(folder)] <= RELATIVE
