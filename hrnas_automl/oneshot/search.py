"""Search on a trained supernet: every candidate's fitness is its mAP with the supernet's weights after
BatchNorm re-statistics on training batches (DetNAS ``test_server.py:211-277``, REFERENCE §3.3), in-process.

The search state (the strategy's ``state_dict`` plus every evaluated candidate) is rewritten atomically after
each candidate, so a killed search restarted with the same config continues where it stopped and loses nothing
it finished; the generation structure lives in the strategy state, so a resumed evolution proposes exactly
what an uninterrupted one would.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hrnas_automl.config import ConfigError
from hrnas_automl.files import OutputLock, write_json_atomic
from hrnas_automl.oneshot.config import SearchConfig, SupernetConfig
from hrnas_automl.oneshot.paths import set_path
from hrnas_automl.oneshot.supernet import Supernet, batch_indices, build_supernet, collate, load_checkpoint
from hrnas_automl.registry import STRATEGIES
from hrnas_automl.runtime import distributed
from hrnas_automl.runtime.device import Runtime, runtime_of
from hrnas_automl.strategies.base import Strategy
from hrnas_automl.tasks.detection import evaluate_map
from hrnas_automl.tasks.training import recalibrate_bn, torch_threads  # recalibrate_bn: re-exported

__all__ = ["SearchResult", "recalibrate_bn", "load_supernet", "evaluate_candidate", "evaluate_arch", "run_search"]

_STATE_KIND = "hrnas-automl oneshot search"


@dataclass(frozen=True)
class SearchResult:
    """Every evaluated candidate (dicts with arch, map, map50, macs, generation) and the best one."""

    evaluated: list[dict[str, Any]]
    best: dict[str, Any]


def load_supernet(path: str | Path, runtime: Runtime | None = None) -> tuple[Supernet, dict[str, Any]]:
    """The supernet of a checkpoint with its trained weights (placed by ``runtime``), and the checkpoint itself."""
    ckpt = load_checkpoint(path)
    net = build_supernet(SupernetConfig.model_validate(ckpt["config"]))
    net.model.load_state_dict(ckpt["model"])
    if runtime is not None:
        runtime.place(net.model)
    return net, ckpt


def evaluate_candidate(net: Supernet, arch: Mapping[str, Any], bn_batches: list[torch.Tensor],
                       batch_size: int, runtime: Runtime | None = None) -> dict[str, float]:
    """``map`` / ``map50`` of ``arch`` on the validation split with the supernet's weights, after BN re-statistics
    (under ``runtime``'s autocast). Under ``torchrun`` the re-statistics are sharded over the ranks (``bn_batches``
    are this rank's shares; the statistics are all-reduced) and the mAP is computed on rank 0 (COCOeval scores all
    detections at once) and broadcast."""
    set_path(net.model.backbone, arch)
    with runtime.autocast() if runtime is not None else nullcontext():
        recalibrate_bn(net.model, bn_batches)
        scored = evaluate_map(net.model, net.data.val, batch_size=batch_size) if distributed.is_main() else None
    return distributed.broadcast_object(scored)


def _bn_batches(config: SearchConfig, net: Supernet) -> list[torch.Tensor]:
    """The fixed training batches of BN re-statistics (the same for every candidate; this rank's share of each
    under ``torchrun``)."""
    train = net.data.train
    return [collate(train, distributed.shard(batch_indices(len(train), config.batch_size, step, config.seed),
                                             "batch_size"))[0]
            for step in range(config.bn_batches)]


def evaluate_arch(config: SearchConfig, arch: Mapping[str, Any]) -> dict[str, Any]:
    """One candidate in a process of its own (an nnictl trial loading the shared checkpoint): its ``map``,
    ``map50`` and backbone ``macs``, evaluated exactly as :func:`run_search` does."""
    with torch_threads(config.threads):
        runtime = runtime_of(config.runtime, "runtime.device")
        net, _ = load_supernet(config.supernet, runtime)
        return {**evaluate_candidate(net, arch, _bn_batches(config, net), config.batch_size, runtime),
                "conv_macs": net.conv_macs(arch)}


def _strategy(config: SearchConfig, net: Supernet) -> Strategy:
    """The registered strategy ``config.strategy`` over the backbone's choices, under ``max_conv_macs``."""
    from hrnas_automl.cost import cost_limit

    constraint = cost_limit(net.space, max_conv_macs=config.max_conv_macs, input_shape=net.macs_input)
    try:
        return STRATEGIES.get(config.strategy)(net.choices, seed=config.seed, constraint=constraint,
                                               **config.strategy_args)
    except TypeError as exc:
        raise ConfigError(f"strategy_args of {config.strategy!r}: {exc}") from None


def _fingerprint(config: SearchConfig, ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """What a state file must match to be resumed: the search settings and the supernet it ran on."""
    return {"search": config.model_dump(mode="json", exclude={"state", "threads", "runtime"}),
            "supernet_step": ckpt["step"],
            "supernet_config": ckpt["config"]}


def run_search(config: SearchConfig, *,
               on_candidate: Callable[[dict[str, Any]], None] | None = None) -> SearchResult:
    """Run (or resume) the search of ``config``: ``config.candidates`` candidates.

    ``on_candidate(row)`` is called after each newly evaluated candidate is saved (NNI intermediate results). The
    state file's folder is held for the run (:class:`~hrnas_automl.files.OutputLock`). Under ``torchrun`` every rank
    runs the same seeded strategy (its proposal broadcast from rank 0), candidates are scored as
    :func:`evaluate_candidate` says, and rank 0 alone holds the folder, writes the state and calls ``on_candidate``.
    """
    runtime = runtime_of(config.runtime, "runtime.device")
    lock = OutputLock(Path(config.state).parent, "oneshot search") if distributed.is_main() else nullcontext()
    with lock, torch_threads(config.threads):
        net, ckpt = load_supernet(config.supernet, runtime)
        strategy = _strategy(config, net)
        fingerprint = _fingerprint(config, ckpt)
        state_path = Path(config.state)
        evaluated: list[dict[str, Any]] = []
        if state_path.exists():
            try:
                state = json.loads(state_path.read_text())
                ok = state.get("kind") == _STATE_KIND
            except (json.JSONDecodeError, AttributeError):
                ok = False
            if not ok:
                raise ValueError(f"search state {state_path} is not a hrnas-automl search state; delete it or set "
                                 "state: to a new file")
            if state["fingerprint"] != fingerprint:
                raise ValueError(f"search state {state_path} belongs to another search (settings or supernet "
                                 "differ); delete it or set state: to a new file")
            strategy.load_state_dict(state["strategy"])
            evaluated = state["evaluated"]
        bn_batches = _bn_batches(config, net)
        while len(evaluated) < config.candidates:
            arch = distributed.broadcast_object(strategy.ask())
            metrics = evaluate_candidate(net, arch, bn_batches, config.batch_size, runtime)
            strategy.tell(arch, metrics["map"])
            row = {"index": len(evaluated), "generation": getattr(strategy, "generation", 0), "arch": arch,
                   **metrics, "conv_macs": net.conv_macs(arch)}
            evaluated.append(row)
            if not distributed.is_main():
                continue
            write_json_atomic({"kind": _STATE_KIND, "fingerprint": fingerprint, "strategy": strategy.state_dict(),
                                "evaluated": evaluated}, state_path)
            if on_candidate is not None:
                on_candidate(dict(row))
    best = max(evaluated, key=lambda r: r["map"])  # earliest on ties
    return SearchResult(evaluated, dict(best))
