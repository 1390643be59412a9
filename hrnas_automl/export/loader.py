"""Reading an export folder back as a plain ``nn.Module``, with nothing but torch: no NNI, no space, no package code.

The spaces import NNI, so the network is never rebuilt from its space here. It comes from the folder's program:
``model.pt2`` (``torch.export``; :meth:`torch.export.ExportedProgram.module`) where the network exports, else
``model.ts`` (TorchScript, traced and frozen). Both hold the folded inference form with its weights, and return
outputs shaped as the PyTorch network's (a tensor, a list of tensors, or the detector's dict).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["ARCH_FILE", "load", "read_arch"]

ARCH_FILE = "arch.json"  # written last: a folder without it is not a finished export


def read_arch(folder: str | Path) -> dict[str, Any]:
    """The ``arch.json`` of an export folder (space, arch, input, cost, files); a one-line ``ValueError`` if there is
    none."""
    path = Path(folder) / ARCH_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{folder} holds no {ARCH_FILE}; give a folder written by `hrnas-automl export`") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); export again") from None


def load(folder: str | Path) -> nn.Module:
    """The frozen network of an export folder (the folded inference form, its weights included), for inputs of
    ``arch.json``'s ``input`` shape with any batch size. Imports nothing but torch.

    Example::

        net = load("out/")
        y = net(torch.randn(1, 3, 256, 192))
    """
    program = read_arch(folder).get("program") or {}
    path = Path(folder) / str(program.get("file"))
    if program.get("kind") == "torch.export":
        return torch.export.load(str(path)).module()
    if program.get("kind") == "torchscript":
        return torch.jit.load(str(path), map_location="cpu")
    raise ValueError(f"{folder}/{ARCH_FILE} names no program (model.pt2 or model.ts); export again")
