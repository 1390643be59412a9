"""The inference form of a network: BatchNorm folded into the convolution before it, and what only training uses
(dropout) taken out, so the exported graphs run fewer ops for the same outputs.

Conv -> BN pairs are found in the graphs ``torch.fx`` traces: from the top, each module is traced; one that traces
(a ``conv_bn_act`` unit of ``spaces/common.py``, an HR-NAS kernel path with its ``dw`` -> ``dw_bn``, a whole
DetNAS block) gives every call of its layers, and a ``BatchNorm2d`` whose input is a ``Conv2d``'s output used by
nothing else is folded; one that does not trace (list inputs, shape-dependent code) is searched through its
children. A BN elsewhere (RANet's pre-activation BN -> ReLU -> conv, HR-NAS's BN of the sum of its kernel paths)
stays, and is counted.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["FoldReport", "inference_form"]


@dataclass(frozen=True)
class FoldReport:
    """What :func:`inference_form` changed: BatchNorms folded and left, dropout layers removed."""

    batchnorm_folded: int
    batchnorm_left: int
    dropout_removed: int


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.running_mean is not None
            and bn.num_features == conv.out_channels)


def _traced(module: nn.Module) -> fx.Graph | None:
    """The fx graph of ``module``, or None where it does not trace."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fx.Tracer().trace(module)
    except Exception:  # noqa: BLE001 - any tracing failure means: search the children instead
        return None


def _fold_traced(module: nn.Module, graph: fx.Graph) -> int:
    """Fold every conv -> BN pair of ``graph`` (traced from ``module``) in place; returns how many."""
    count = 0
    calls = [node.target for node in graph.nodes if node.op == "call_module"]
    for node in graph.nodes:
        if node.op != "call_module" or len(node.args) != 1 or not isinstance(node.args[0], fx.Node):
            continue
        source = node.args[0]
        if source.op != "call_module" or len(source.users) != 1 or calls.count(source.target) != 1:
            continue
        conv, bn = module.get_submodule(source.target), module.get_submodule(node.target)
        if _foldable(conv, bn) and calls.count(node.target) == 1:
            for target, replacement in ((source.target, fuse_conv_bn_eval(conv, bn)), (node.target, nn.Identity())):
                parent, _, name = target.rpartition(".")
                module.get_submodule(parent)._modules[name] = replacement
            count += 1
    return count


def _fold(module: nn.Module) -> int:
    graph = _traced(module) if module._modules else None
    if graph is not None:
        return _fold_traced(module, graph)
    return sum(_fold(child) for child in module.children())


def inference_form(model: nn.Module) -> tuple[nn.Module, FoldReport]:
    """A copy of ``model`` in eval mode with every conv -> BN pair folded into one conv
    (``torch.nn.utils.fusion.fuse_conv_bn_eval``; the BN becomes ``nn.Identity``) and every dropout layer replaced by
    ``nn.Identity`` (a no-op in eval mode that would still be a node of the exported graph); ``model`` is left as
    it is."""
    folded = copy.deepcopy(model).eval()
    count = _fold(folded)
    dropped = 0
    for module in list(folded.modules()):
        for name, child in module._modules.items():
            if isinstance(child, nn.modules.dropout._DropoutNd):
                module._modules[name] = nn.Identity()
                dropped += 1
    left = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    return folded, FoldReport(count, left, dropped)
