"""Where a run's results go: to the NNI manager inside an nnictl trial, else one JSON line per row on stdout.

Every entry point that runs as an nnictl trial (``trial``, ``prune``, ``tune-trial``, ``oneshot``) reports through
one :class:`Reporter`, so the NNI-or-stdout choice is made once; under ``torchrun`` only rank 0 reports, and the
parameters rank 0 was given are broadcast to the others.
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
        """One step's metrics (``row["default"]`` is what the web UI plots)."""
        if not distributed.is_main():
            return
        if self.nni:
            from hrnas_automl.nni.compat import report_intermediate

            report_intermediate(row)
        else:
            show(row)

    def final(self, row: Mapping[str, Any]) -> None:
        """The final metric dict (the web UI sorts trials by ``default``)."""
        if not distributed.is_main():
            return
        if self.nni:
            from hrnas_automl.nni.compat import report_final

            report_final(row)
        else:
            show(row)


def reporter() -> Reporter:
    """The reporter of this process: NNI's inside an nnictl trial, stdout otherwise."""
    from hrnas_automl.nni.compat import in_nni_trial, quiet_nni

    quiet_nni()
    return Reporter(in_nni_trial())
