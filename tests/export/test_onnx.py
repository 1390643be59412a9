"""to_onnx / ort_session: outputs of every structure flattened and named, a dynamic batch (only where an output
follows it), adaptive pooling to a traced size, and a file written whole or not at all."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from hrnas_automl.export.onnx import OPSET, flat_outputs, ort_session, run_onnx, to_onnx


class _Outputs(nn.Module):
    """A dict of a list and a tensor, and a constant output without a batch axis (as the detector's locations)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, object]:
        y = self.conv(x)
        pooled = F.adaptive_avg_pool2d(y, y[..., ::2, ::2].shape[-2:])  # a size read from a tensor, as Lite-HRNet
        return {"maps": [y, pooled], "logits": y.mean((2, 3)), "points": torch.arange(6.0).reshape(3, 2)}


def test_outputs_are_named_and_the_batch_is_dynamic(tmp_path: Path) -> None:
    model = _Outputs().eval()
    names = to_onnx(model, (3, 8, 8), tmp_path / "m.onnx")
    assert names == ["maps0", "maps1", "logits", "points"]
    import onnx

    graph = onnx.load(str(tmp_path / "m.onnx"))
    assert graph.opset_import[0].version == OPSET
    dims = {o.name: o.type.tensor_type.shape.dim[0] for o in graph.graph.output}
    assert dims["maps0"].dim_param == "batch" and dims["points"].dim_value == 3
    session = ort_session(tmp_path / "m.onnx", threads=1)
    for batch in (1, 5):
        x = torch.randn(batch, 3, 8, 8)
        with torch.no_grad():
            expected = flat_outputs(model(x))
        got = run_onnx(session, x)
        assert [t.shape for t in got] == [t.shape for t in expected]
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(expected, got))


def test_a_failed_conversion_leaves_no_file(tmp_path: Path) -> None:
    class Unsupported(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.linalg.eig(x[0, 0])[0].real  # no ONNX op for an eigendecomposition

    with pytest.raises(Exception):
        to_onnx(Unsupported(), (1, 4, 4), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
