"""Distributed data-parallel training under ``torchrun`` (PyTorch's launcher): one process per device, gradients
all-reduced by :class:`~torch.nn.parallel.DistributedDataParallel`, NCCL on GPUs and gloo on the CPU.

Outside ``torchrun`` (no ``WORLD_SIZE`` > 1 in the environment) everything here is a no-op: one process, rank 0,
nothing wrapped, so the CLI commands run as before. Under it, every rank runs the same command; the helpers keep
the ranks in step: each rank trains on its share of every global batch (:class:`ShardedBatches`, the same seeded
order on every rank), decisions taken on rank 0 are broadcast (:func:`broadcast_object`), statistics are summed
over ranks (:func:`all_reduce_sum`), and only rank 0 reports and writes files (:func:`is_main`).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch
from torch import distributed as dist
from torch import nn

__all__ = ["launched", "init_from_env", "is_distributed", "rank", "world_size", "is_main", "local_rank", "main_first",
           "broadcast_object", "all_reduce_sum", "all_reduce_mean", "wrap_ddp", "convert_sync_bn", "SyncBatchNorm",
           "check_global_batch", "shard", "ShardedBatches", "barrier", "all_gather_object"]


def launched() -> bool:
    """Whether this process is one of several started by ``torchrun`` (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_rank() -> int:
    """This process's index on its machine (``LOCAL_RANK``; 0 outside torchrun): the GPU it drives."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_env(device: torch.device) -> None:
    """Join the process group ``torchrun`` set up (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``PORT`` in the
    environment), NCCL for a CUDA ``device`` and gloo otherwise; idempotent, and a no-op outside torchrun."""
    if not launched() or is_distributed():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=30))


def is_distributed() -> bool:
    """Whether a process group of more than one process is up."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 in a single process; torchrun's ``RANK`` before the group is joined, so a
    folder lock taken before training is already rank 0's alone)."""
    return dist.get_rank() if is_distributed() else int(os.environ.get("RANK", "0")) if launched() else 0


def world_size() -> int:
    """The number of processes training together (1 in a single process)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Whether this process reports and writes files (rank 0, or the only process)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if is_distributed():
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Run a block on rank 0 before the other ranks run it (generated data written to disk once, then read by all);
    a plain block in a single process."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def broadcast_object(value: Any, src: int = 0) -> Any:
    """``value`` as rank ``src`` has it, on every rank (a picklable object; returned as is in a single process)."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(value: Any) -> list[Any]:
    """Every rank's ``value`` (a picklable object), in rank order, on every rank (``[value]`` in a single process)."""
    if not is_distributed():
        return [value]
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, value)
    return everyone


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over every rank, in place (unchanged in a single process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` averaged over every rank, in place (unchanged in a single process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= dist.get_world_size()
    return tensor


class _AllReduceSum(torch.autograd.Function):
    """A tensor summed over every rank, differentiably: the gradient of each rank's input is the sum of the
    gradients all ranks' outputs got (every rank's loss depends on every rank's input through the sum)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        summed = tensor.clone()
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        return summed

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        summed = grad.clone()
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        return summed


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training-mode statistics are those of the global batch (summed over ranks, differentiably),
    on any device and backend: torch's own :class:`torch.nn.SyncBatchNorm` refuses CPU tensors, so gloo runs could
    not use it. In eval mode, or in a single process, it is a plain BatchNorm."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.ndim < 2:
            raise ValueError(f"expected at least 2-D input (got {input.ndim}-D)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(input)
        dims = [0, *range(2, input.ndim)]
        shape = [1, -1, *[1] * (input.ndim - 2)]
        count = torch.full((1,), input.numel() / input.shape[1], dtype=input.dtype, device=input.device)
        sums = _AllReduceSum.apply(torch.cat([input.sum(dims), count]))
        n = sums[-1]
        mean = sums[:-1] / n
        centred = input - mean.view(shape)  # two passes: E[(x - mean)²] keeps the precision E[x²] - mean² loses
        var = _AllReduceSum.apply((centred * centred).sum(dims)) / n
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(var.detach() * n / (n - 1), alpha=factor)
        out = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def convert_sync_bn(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm1d/2d/3d turned into a :class:`SyncBatchNorm` in place (its class swapped, so
    parameters, buffers and every reference to the layer stay the same objects: a pruned network's units still
    point at their layers). Idempotent; returns ``module``."""
    for layer in module.modules():
        if type(layer) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
            layer.__class__ = SyncBatchNorm
    return module


def wrap_ddp(model: nn.Module, device: torch.device, *, find_unused_parameters: bool = False) -> nn.Module:
    """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` when distributed, else ``model`` itself;
    ``find_unused_parameters`` for a network whose steps leave some parameters out (a supernet's one path)."""
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                   find_unused_parameters=find_unused_parameters)


def check_global_batch(size: int, key: str = "train.batch_size") -> None:
    """Refuse, in one line naming ``key``, a global batch of ``size`` that does not divide among the ranks."""
    world = world_size()
    if size % world:
        raise ValueError(f"{key} {size} is the global batch of {world} processes and must divide among them; "
                         f"set it to a multiple of {world}")


def shard(indices: Sequence[int], key: str = "train.batch_size") -> list[int]:
    """This rank's share of one global batch of dataset ``indices`` (``indices[rank::world]``; all of them in a
    single process); a batch that does not divide among the ranks is refused (:func:`check_global_batch`)."""
    check_global_batch(len(indices), key)
    return list(indices)[rank()::world_size()]


class ShardedBatches:
    """This rank's share of every global batch of ``batches`` (an iterable of index lists, e.g. a
    :class:`~torch.utils.data.BatchSampler` over a seeded sampler): ``batch[rank::world]``. Every rank draws the
    same seeded order, so the ranks together see exactly the global batches one process would: the 2-process
    run trains on the same data per step as the 1-process run (what :class:`torch.utils.data.DistributedSampler`
    does per epoch, but keeping the one-process order, so a seed means the same batches at any world size)."""

    def __init__(self, batches: Iterable[Sequence[int]], rank_: int, world: int) -> None:
        self.batches, self.rank, self.world = batches, rank_, world

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            yield list(batch)[self.rank::self.world]

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]
