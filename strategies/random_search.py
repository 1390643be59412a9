"""Random search: uniform architectures under the constraint, the baseline every NAS paper reports."""
from __future__ import annotations

from typing import Any

from hrnas_automl.strategies.base import Canonical, Choices, Constraint, Strategy

__all__ = ["RandomSearch"]


class RandomSearch(Strategy):
    """Uniformly random feasible architectures; with ``dedup`` never the same one twice.

    :meth:`ask` never returns None (it does not wait for results).

    Args:
        choices, seed, constraint, max_attempts, canonical: see :class:`~hrnas_automl.strategies.base.Strategy`.
        dedup: skip architectures already proposed or told. When every architecture of the space has
            been proposed, :meth:`ask` raises :class:`~hrnas_automl.strategies.base.SpaceExhaustedError`.
    """

    def __init__(self, choices: Choices, *, seed: int = 0, constraint: Constraint | None = None,
                 dedup: bool = True, max_attempts: int = 10_000, canonical: Canonical | None = None) -> None:
        super().__init__(choices, seed=seed, constraint=constraint, max_attempts=max_attempts, canonical=canonical)
        self.dedup = dedup

    def ask(self) -> dict[str, Any]:
        """A new uniformly random feasible architecture (see :meth:`Strategy.ask` for the errors)."""
        taken: set[tuple[Any, ...]] = set()
        arch = self._random_candidate(taken, dedup=self.dedup)
        self._commit(taken)
        return arch
