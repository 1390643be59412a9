"""What the space families share: the conv-BN-activation unit and the channel shuffle every family builds from,
the choice/freeze mixin of spaces whose constructor reads choices, and the channel surgery with which a block
shrinks itself (the fine-grained search decides what to keep, the block slices its own layers)."""
from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any, Self

import torch
from nni.mutable import Categorical, ensure_frozen
from nni.nas.space import current_model, model_context
from torch import nn

__all__ = ["Activation", "OptimizerState", "TopLevelChoices", "channel_shuffle", "conv_bn_act", "dw_pw", "relu",
           "sliced_bn", "sliced_conv", "take_over", "positive_int", "probability"]

Activation = Callable[[], nn.Module]
OptimizerState = MutableMapping[torch.Tensor, dict[str, Any]]  # an optimizer's ``state``: parameter -> buffers


def relu() -> nn.Module:
    """The activation of every family's conv unit: ReLU in place (mmcv's ``ConvModule`` default too)."""
    return nn.ReLU(inplace=True)


def conv_bn_act(cin: int, cout: int, kernel: int = 1, stride: int = 1, *, groups: int = 1, bias: bool | None = None,
                norm: bool = True, bn_args: Mapping[str, float] | None = None,
                act: Activation | None = relu) -> nn.Sequential:
    """Conv (padding ``kernel // 2``), BatchNorm, activation: the conv unit of every family (DetNAS ``conv_bn``,
    HR-NAS ``ConvBNReLU``, Lite-HRNet's mmcv ``ConvModule``, RANet ``ConvBasic``).

    One ``nn.Sequential`` whose indices (conv 0, BN 1, activation last) are the state_dict keys checkpoints use.
    ``bias=None`` gives the conv a bias only without a norm (``ConvModule``'s 'auto'); ``norm=False`` drops the BN,
    ``act=None`` the activation (e.g. ``nn.Sigmoid`` for another); ``bn_args`` go to ``nn.BatchNorm2d``.
    """
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups,
                                         bias=not norm if bias is None else bias)]
    if norm:
        layers.append(nn.BatchNorm2d(cout, **(bn_args or {})))
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


def dw_pw(cin: int, cout: int, kernel: int = 3, stride: int = 1, *, act: Activation | None = relu) -> nn.Sequential:
    """Depthwise kxk conv + BN (carries the stride), then pointwise 1x1 conv + BN + ``act``: the separable unit of
    DetNAS (projection, Xception op) and Lite-HRNet (stem, transitions, fusion, head)."""
    return nn.Sequential(conv_bn_act(cin, cin, kernel, stride, groups=cin, act=None), conv_bn_act(cin, cout, act=act))


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    """ShuffleNet channel shuffle: interleave ``groups`` equal channel groups (8 channels, 2 groups:
    0, 4, 1, 5, 2, 6, 3, 7). DetNAS's ``channel_shuffle1`` is this, split in halves."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class TopLevelChoices:
    """Mixin for a ``ModelSpace`` whose constructor reads choices that shape every layer (widths, depths).

    :meth:`choose` registers the choice only while the space itself is built (so ``simplify()`` lists it and the
    dry run uses its default); under ``model_context(sample)`` it returns the sample's value and registers
    nothing, so the frozen network has no mutables. :meth:`freeze` rebuilds the space in that context, and so does
    :func:`hrnas_automl.arch.freeze`.
    """

    def choose(self, label: str, values: Sequence[Any], *, default: Any = None) -> Any:
        """The value of choice ``label`` over ``values`` for this build; the un-frozen space takes ``default``
        (None: the first candidate)."""
        choice = Categorical(list(values), label=label, **({} if default is None else {"default": default}))
        if current_model() is None:
            self.add_mutable(choice)  # type: ignore[attr-defined]  (a ModelSpace method)
        return ensure_frozen(choice)

    def freeze(self, sample: dict[str, Any]) -> Self:
        """Rebuild the space for ``sample`` (fresh weights); the result is a fixed network."""
        with model_context(sample):
            return self.__class__(*self.trace_args, **self.trace_kwargs)  # type: ignore[attr-defined]


def take_over(state: OptimizerState | None, old: torch.Tensor, new: torch.Tensor,
              take: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Fill ``new`` with ``take(old)`` and move ``old``'s optimizer state (the momentum buffer), sliced the same way:
    the survivors of a shrink keep their momentum, as in the official search (``utils/optim.py`` ``compress_mask``)."""
    new.data.copy_(take(old.detach()))
    if state is not None and old in state:
        state[new] = {k: take(v) if torch.is_tensor(v) and v.shape == old.shape else v
                      for k, v in state.pop(old).items()}


def sliced_conv(conv: nn.Conv2d, out_idx: torch.Tensor | None = None, in_idx: torch.Tensor | None = None,
                state: OptimizerState | None = None) -> nn.Conv2d:
    """A copy of ``conv`` keeping the output channels ``out_idx`` / input channels ``in_idx`` (depthwise: both)."""
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels

    def take(t: torch.Tensor) -> torch.Tensor:
        t = t if out_idx is None else t[out_idx]
        return t if in_idx is None or depthwise else t[:, in_idx]

    def take_bias(t: torch.Tensor) -> torch.Tensor:
        return t if out_idx is None else t[out_idx]

    cout = conv.out_channels if out_idx is None else len(out_idx)
    cin = cout if depthwise else (conv.in_channels if in_idx is None else len(in_idx) * conv.groups)
    new = nn.Conv2d(cin, cout, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    groups=cout if depthwise else conv.groups, bias=conv.bias is not None)
    take_over(state, conv.weight, new.weight, take)
    if conv.bias is not None:
        take_over(state, conv.bias, new.bias, take_bias)
    return new


def sliced_bn(bn: nn.BatchNorm2d, idx: torch.Tensor, state: OptimizerState | None = None) -> nn.BatchNorm2d:
    """A copy of ``bn`` for the channels ``idx`` (affine parameters and running statistics)."""
    new = nn.BatchNorm2d(len(idx), eps=bn.eps, momentum=bn.momentum)
    for name in ("weight", "bias"):
        take_over(state, getattr(bn, name), getattr(new, name), lambda t: t[idx])
    new.running_mean.copy_(bn.running_mean[idx])
    new.running_var.copy_(bn.running_var[idx])
    new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new


def positive_int(name: str, value: Any) -> int:
    """``value`` if it is an int >= 1 (not a bool), else a one-line ``ValueError`` naming ``name``: every space checks
    its widths, class and channel counts this way before building anything."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def probability(name: str, value: Any) -> float:
    """``value`` if it is a number in [0, 1] (a dropout rate, a BatchNorm momentum), else a one-line ``ValueError``
    naming ``name``: torch would accept a momentum of 2 and train a network whose statistics diverge."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)
