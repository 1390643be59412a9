"""The inference form of a network: BatchNorm folded into the convolution before it, and what only training uses
(dropout) taken out, so the exported graphs run fewer ops for the same outputs.

Conv -> BN pairs are found in the graphs ``torch.fx`` traces: from the top, each module is traced; one that traces
(a ``conv_bn_act`` unit of ``spaces/common.py``, an HR-NAS kernel path with its ``dw`` -> ``dw_bn``, a whole
DetNAS block) gives every call of its layers, and a ``BatchNorm2d`` whose input is a ``Conv2d``'s output used by
nothing else is folded; one that does not trace (list inputs, shape-dependent code) is searched through its
children. Two HR-NAS modules are folded by their structure: the searching block normalises the *sum* of its kernel
paths (``pw_bn``), and a BN is affine per channel, so it folds into every path's projection (``BN(sum p_k) =
sum s * p_k + t``, ``t`` added once); the Transformer path applies ``token_norm(input_proj(.))`` and
``reverse_norm(reverse_proj(.))`` but takes its output size as an argument, which fx cannot trace. A BN
elsewhere (RANet's pre-activation BN -> ReLU -> conv, which no conv before it can absorb) stays, and is counted.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch
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


@torch.no_grad()
def _fold_hrnas(model: nn.Module) -> int:
    """Fold each HR-NAS searching block's ``pw_bn`` into its kernel paths' projections and each Transformer path's
    two conv -> BN pairs (module docstring); returns how many BNs."""
    from hrnas_automl.spaces.hrnas import SearchingBlock, TokenTransformer

    count = 0
    for block in model.modules():
        if isinstance(block, TokenTransformer):
            for conv, norm in (("input_proj", "token_norm"), ("reverse_proj", "reverse_norm")):
                if _foldable(getattr(block, conv), getattr(block, norm)):
                    setattr(block, conv, fuse_conv_bn_eval(getattr(block, conv), getattr(block, norm)))
                    setattr(block, norm, nn.Identity())
                    count += 1
        bn = getattr(block, "pw_bn", None)
        if not isinstance(block, SearchingBlock) or type(bn) is not nn.BatchNorm2d or bn.running_mean is None:
            continue
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        for index, path in enumerate(block.paths.values()):
            old = path.project
            new = nn.Conv2d(old.in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                            old.dilation, old.groups, bias=True)
            new.weight.copy_(old.weight * scale.reshape(-1, 1, 1, 1))
            new.bias.copy_((old.bias * scale if old.bias is not None else torch.zeros_like(shift))
                           + (shift if index == 0 else 0))
            path.project = new
        block.pw_bn = nn.Identity()
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
    count = _fold(folded) + _fold_hrnas(folded)
    dropped = 0
    for module in list(folded.modules()):
        for name, child in module._modules.items():
            if isinstance(child, nn.modules.dropout._DropoutNd):
                module._modules[name] = nn.Identity()
                dropped += 1
    left = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    return folded, FoldReport(count, left, dropped)
