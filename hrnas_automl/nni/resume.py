"""What a tuner needs to continue its search after ``nnictl stop`` + ``nnictl resume`` (NNI 3.0's own tuners
restart from scratch).

How NNI hands a resumed experiment to a new tuner process (nni_node/core/nnimanager.js ``resumeExperiment``,
nni/runtime/msg_dispatcher.py): the dispatcher calls ``load_checkpoint()`` before any command, with
``NNI_CHECKPOINT_DIRECTORY`` set (it is set in a new experiment too, so a tuner can save there as it goes); then
come the search space, ``import_data`` with every trial that has a final result (failed trials are not in it),
and the trials that were RUNNING or WAITING at the stop are run again with their old parameter ids. Their final
results reach the tuner through ``import_data`` too, and their ends not at all. The first parameter id the new
dispatcher hands out is one more than the largest re-run one (1 when none is re-run), which is how a tuner tells
the trials NNI re-runs from those it had proposed but NNI never started (lost at the stop; see
:func:`split_orphans`).
"""
from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

from nni.recoverable import Recoverable

__all__ = ["state_file", "split_orphans", "params_key", "Orphans"]

T = TypeVar("T")


def state_file(tuner: Recoverable, name: str) -> Path | None:
    """Where ``tuner`` keeps its state in the experiment's checkpoint folder, or None outside an nnictl dispatcher."""
    folder = tuner.get_checkpoint_path()
    return Path(folder) / name if folder is not None else None


def split_orphans(orphans: Mapping[int, T], first_new_id: int) -> tuple[dict[int, T], list[T]]:
    """Split the trials a tuner had proposed without getting their end, by parameter id, into those NNI runs again
    (ids below ``first_new_id``, the first id the resumed dispatcher asks for; their results come through
    ``import_data``) and those to propose again, in their order (NNI never started them).

    NNI also starts at id 1 when it re-runs nothing, so a lost trial with id 0 is taken for a re-run one.
    """
    rerun = {pid: item for pid, item in orphans.items() if pid < first_new_id}
    return rerun, [item for pid, item in sorted(orphans.items()) if pid >= first_new_id]


def params_key(params: Mapping[str, Any]) -> str:
    """A hashable identity of a parameter dict (key order ignored)."""
    return json.dumps(params, sort_keys=True)


class Orphans(Generic[T]):
    """What a resumed tuner keeps of the trials it handed out before the stop and never saw end (``T``: what it
    keeps per trial), until the first request of the new dispatcher tells which NNI runs again (:meth:`resume_at`)."""

    def __init__(self) -> None:
        self._orphans: dict[int, T] | None = None  # after a resume: handed out before the stop, no end
        self._rerun: dict[int, T] = {}  # those NNI runs again: their results come through import_data
        self._again: deque[T] = deque()  # those it never started: handed out first

    def resume_at(self, first_id: int) -> None:
        """Split the orphans at ``first_id``, the first parameter id the resumed dispatcher asks for (a host of several
        tuners passes its own first one to each: a tuner's first request may come later); later calls do nothing."""
        if self._orphans is not None:
            self._rerun, lost = split_orphans(self._orphans, first_id)
            self._again.extend(lost)
            self._orphans = None
