"""Where a run's results go: one JSON line per row on stdout, and inside an nnictl trial also to the NNI manager.

Every entry point that runs as an nnictl trial (``trial``, ``prune``, ``tune-trial``, ``oneshot``) reports through
one :class:`Reporter`, so the NNI-or-stdout choice is made once; under ``torchrun`` only rank 0 reports, and the
parameters rank 0 was given are broadcast to the others. Inside an nnictl trial NNI sends stdout to the trial's
``trial.log`` (the web UI's "View trial log"), so every epoch's row is there too, and stderr (a failing trial's
error and traceback) goes to ``trial.stderr`` ("View trial error") and to ``trial.log``.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hrnas_automl.runtime import distributed

__all__ = ["Reporter", "reporter", "show"]


def show(row: Mapping[str, Any]) -> None:
    """Print ``row`` as one JSON line (floats rounded to 6 digits), flushed so a pipe sees it at once."""
    print(json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()}), flush=True)


@dataclass(frozen=True)
class Reporter:
    """Reports intermediate and final metric rows; ``nni`` tells whether they go to the NNI manager."""

    nni: bool

    def parameters(self) -> dict[str, Any]:
        """The tuner's parameters for this trial (NNI refuses reports before they were asked for); under
        ``torchrun``, once the process group is joined, rank 0's for every rank."""
        from hrnas_automl.nni.compat import next_parameter

        if not distributed.is_distributed():
            return next_parameter()
        return distributed.broadcast_object(next_parameter() if distributed.is_main() else None)

    def intermediate(self, row: Mapping[str, Any]) -> None:
        """One step's metrics (``row["default"]`` is what the web UI plots), also printed (the trial log)."""
        if not distributed.is_main():
            return
        show(row)
        if self.nni:
            from hrnas_automl.nni.compat import report_intermediate

            report_intermediate(row)

    def final(self, row: Mapping[str, Any]) -> None:
        """The final metric dict (the web UI sorts trials by ``default``), also printed (the trial log)."""
        if not distributed.is_main():
            return
        show(row)
        if self.nni:
            from hrnas_automl.nni.compat import report_final

            report_final(row)


def reporter() -> Reporter:
    """The reporter of this process: NNI's inside an nnictl trial (whose stdout and stderr then reach the trial
    log, :func:`~hrnas_automl.nni.compat.trial_log_output`), stdout otherwise."""
    from hrnas_automl.nni.compat import in_nni_trial, quiet_nni, trial_log_output

    quiet_nni()
    if not in_nni_trial():
        return Reporter(False)
    trial_log_output()
    return Reporter(True)
