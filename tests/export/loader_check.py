"""Run in a subprocess by the export tests: ``import nni`` is blocked (a meta-path finder raising ImportError for
nni*), then every export folder given is loaded with :func:`hrnas_automl.export.load` and run on the input saved
beside it; prints one JSON line: per folder the largest max |difference| of an output to the PyTorch output saved
there, relative to that output's largest |value|, and the NNI modules imported (none)."""
from __future__ import annotations

import json
import sys
from importlib.abc import MetaPathFinder
from typing import Any


class BlockNNI(MetaPathFinder):
    """Refuses every module of NNI, as on a machine where it is not installed."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".")[0] in ("nni", "nni_node"):
            raise ImportError(f"{name} is blocked: the loader must not need NNI")


def main(folders: list[str]) -> None:
    sys.meta_path.insert(0, BlockNNI())
    import torch

    from hrnas_automl.export import load
    from hrnas_automl.export.onnx import flat_outputs

    diffs = {}
    for folder in folders:
        net = load(folder)
        check = torch.load(f"{folder}.check.pt", weights_only=True)
        with torch.no_grad():
            got = flat_outputs(net(check["input"]))
        diffs[folder] = max(float((a - b).abs().max() / a.abs().max())
                            for a, b in zip(check["expected"], got, strict=True))
    loaded = sorted(name for name in sys.modules if name.split(".")[0] == "nni")
    print(json.dumps({"diffs": diffs, "nni_modules": loaded}))


if __name__ == "__main__":
    main(sys.argv[1:])
