"""THE DataLoader factory: every loader of the package (the trainer's shuffled batches, the evaluators', the
fine-grained search's) is built by :func:`make_loader` from the ``train:`` settings
(:class:`~hrnas_automl.config.TrainSettings`: ``num_workers``, ``pin_memory``, ``persistent_workers``,
``prefetch_factor``), so a setting holds for all of them.

Seeding: a shuffling loader draws from a ``torch.Generator`` seeded with the run's seed; each pass takes from it the
base seed from which torch seeds ``random``, ``torch`` and ``numpy`` in every worker process (``base_seed + worker
id``), then the permutation (an unshuffled loader takes the base seed from torch's global RNG). The same seed thus
gives the same batches and the same per-worker random streams for a given ``num_workers``. A pass over persistent
workers draws no base seed (its workers keep theirs), so :func:`make_loader`'s loader draws one in its place: the
permutations, torch's global RNG stream (dropout, initialisations after a pass) and a resumed run's do not depend on
``num_workers`` or ``persistent_workers``, and with a dataset that draws no random numbers a run gives the same
results whatever the worker count.

Under ``torchrun`` a loader asked to ``shard`` treats its batch size as the global batch: each rank loads its share
of every batch (:class:`~hrnas_automl.runtime.distributed.ShardedBatches`), so the ranks together train on the
batches of a one-process run, in its seeded order.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from hrnas_automl.config import TrainSettings
from hrnas_automl.runtime import distributed

__all__ = ["IN_PROCESS", "pins_memory", "make_loader"]

IN_PROCESS = TrainSettings(pin_memory=False)  # how a caller without train settings loads: in its process, unpinned


class _SeededLoader(DataLoader):
    """A DataLoader drawing the same numbers from its generator per pass whatever its workers (see the module
    docstring), plus ``skip_draws`` more before each pass (the tasks' loader always drew one)."""

    def __init__(self, *args: Any, skip_draws: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skip_draws = skip_draws

    def __iter__(self) -> Iterator[Any]:
        reused = self.persistent_workers and self._iterator is not None  # no base seed drawn by this pass
        for _ in range(self.skip_draws + int(reused)):  # without a generator: from torch's global RNG, as a pass
            torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        return super().__iter__()


def pins_memory(settings: TrainSettings) -> bool:
    """``settings.pin_memory``, or when unset (None) whether batches go to a CUDA device (page-locked copies are
    faster there; pinning for the CPU or MPS only costs)."""
    if settings.pin_memory is not None:
        return settings.pin_memory
    return torch.cuda.is_available() and not settings.device.startswith(("cpu", "mps"))


def make_loader(dataset: Dataset, settings: TrainSettings = IN_PROCESS, *, batch_size: int | None = None,
                shuffle: bool = False, drop_last: bool = False, skip_draws: int = 0, shard: bool = False) -> DataLoader:
    """Batches of ``dataset`` loaded as ``settings`` say, ``batch_size`` (default ``settings.batch_size``) at a time.

    ``shuffle`` draws the order from a generator seeded with ``settings.seed``; an unshuffled loader takes its
    workers' base seed from torch's global RNG (seeded by the trainer), as DataLoader does. ``skip_draws`` numbers
    are drawn from the generator before each pass (a caller keeping an older seed stream). ``shard``: under
    ``torchrun``, this rank's share of every global batch (training); otherwise every rank loads everything.

        >>> loader = make_loader(dataset, TrainSettings(batch_size=32, num_workers=2), shuffle=True)  # doctest: +SKIP
    """
    generator = torch.Generator().manual_seed(settings.seed) if shuffle else None
    batch_size = batch_size or settings.batch_size
    workers = settings.num_workers
    how = dict(generator=generator, skip_draws=skip_draws, num_workers=workers, pin_memory=pins_memory(settings),
               persistent_workers=workers > 0 and settings.persistent_workers,
               prefetch_factor=settings.prefetch_factor if workers > 0 else None)
    world = distributed.world_size() if shard else 1
    if world == 1:
        return _SeededLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, **how)
    distributed.check_global_batch(batch_size)
    order = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    sharded = distributed.ShardedBatches(BatchSampler(order, batch_size, drop_last), distributed.rank(), world)
    return _SeededLoader(dataset, batch_sampler=sharded, **how)
