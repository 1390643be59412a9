"""Latency backends (issue 20): eager PyTorch and ONNX Runtime timings, tables cached per backend, the correction
fitted on whole networks, and one-line errors for an unknown backend or a network that does not export."""
from __future__ import annotations

import json
import random
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

from hrnas_automl.arch import choices_of
from hrnas_automl.cost import cost_limit
from hrnas_automl.cost import latency
from hrnas_automl.cost.latency import (
    _ratio,
    _to_onnx,
    calibrated,
    latency_table,
    measure_latency,
    raw_latency_table,
)
from hrnas_automl.cost.tables import CostTable
from hrnas_automl.export.onnx import ort_session
from hrnas_automl.strategies import Evolution

SMALL = (3, 32, 32)
# A space of its own (10 classes elsewhere): a space keeps the tables it compiled for the whole process, and the
# ones compiled here into a private cache must not stand in for the session cache's, which nnictl's tuners read.
ARGS = {"num_classes": 7}
FAST = {"warmup": 1, "repeats": 2}  # timings are not what these tests check


def small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 4))


class NotExportable(nn.Module):
    """A network the ONNX exporter refuses (a complex tensor: no ONNX type)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.fft2(x).abs()


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_measure_latency_times_both_backends_and_keeps_the_mode(backend: str) -> None:
    net = small_net().train()
    ms = measure_latency(net, (3, 16, 16), threads=1, backend=backend, **FAST)
    assert ms > 0 and net.training


def test_onnxruntime_session_runs_as_deployed(tmp_path: Path) -> None:
    path = tmp_path / "net.onnx"
    _to_onnx(small_net().eval(), (3, 16, 16), path, 1)
    options = ort_session(path, 2).get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    assert str(options.execution_mode) == "ExecutionMode.ORT_SEQUENTIAL"


@pytest.mark.parametrize(("call", "error"), [
    (lambda: measure_latency(small_net(), (3, 8, 8), backend="tensorrt"),
     r"^unknown latency backend 'tensorrt'; use one of: torch, onnxruntime$"),
    (lambda: measure_latency(small_net(), (3, 8, 8), backend="onnxruntime", device="cuda"),
     r"^latency backend onnxruntime runs on the CPU, got device 'cuda'; use device 'cpu' or backend 'torch'$"),
    (lambda: measure_latency(NotExportable(), (3, 8, 8), backend="onnxruntime"),
     r"^latency backend onnxruntime: NotExportable does not export to ONNX \([^\n]*\); use backend 'torch' for this "
     r"network$"),
    (lambda: cost_limit("detnas-small", backend="onnx"), r"^unknown latency backend 'onnx'"),
    (lambda: latency_table("detnas-small", SMALL, backend="ort", **ARGS), r"^unknown latency backend 'ort'"),
])
def test_bad_backends_are_one_line_errors(call: Any, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        call()


def test_ratio_is_the_median_so_a_load_burst_does_not_move_it() -> None:
    predicted = [10.0, 12.0, 14.0, 16.0, 18.0]
    measured = [0.5 * p for p in predicted]
    measured[2] += 30.0  # one sample slowed by a load burst
    assert _ratio(predicted, measured) == pytest.approx(0.5)


def test_calibrated_table_scales_every_value_and_stays_additive() -> None:
    table = CostTable(("latency_ms",), (("a",), ("b",)), (1.0,), ({(0,): (0.0,), (1,): (2.0,)},
                                                                   {(0,): (1.0,), (1,): (3.0,)}))
    fixed = calibrated(table, 0.5)
    for arch in ({"a": a, "b": b} for a in (0, 1) for b in (0, 1)):
        assert fixed.evaluate(arch)[0] == pytest.approx(0.5 * table.evaluate(arch)[0])
    assert fixed.bounds() == ((0.5 * 2.0,), (0.5 * 6.0,))
    assert fixed.marginal({"a": 0, "b": 0}, "a", 1) == (1.0,)


def test_a_table_predicting_no_time_for_some_network_is_refused(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole networks timed per group on a busy machine can give differences that sum below zero: such a table is
    refused in one line naming the cache to clear, never used as a negative latency."""
    monkeypatch.setenv("HRNAS_AUTOML_CACHE", str(tmp_path))
    label, values = next(iter(choices_of("detnas-small", **ARGS).items()))
    noisy = CostTable(("latency_ms",), ((label,),), (1.0,),
                      ({(value,): (-2.0 if i == 0 else 0.5,) for i, value in enumerate(values)},))
    monkeypatch.setattr(latency, "raw_latency_table", lambda *args, **kwargs: noisy)
    monkeypatch.setattr(latency, "measure_latency", lambda *args, **kwargs: 1.0)
    with pytest.raises(ValueError, match=rf"predicts -[0-9.]+ ms for its fastest network: .* remove the cached "
                                         rf"tables in {tmp_path}"):
        latency_table("detnas-small", SMALL, threads=1, **ARGS, **FAST)


@pytest.fixture(scope="module")
def ort_tables(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, CostTable]]]:
    """The detnas-small tables of both backends at 32x32, one thread, compiled into a cache of their own."""
    cache = tmp_path_factory.mktemp("latency-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HRNAS_AUTOML_CACHE", str(cache))
        yield cache, {backend: latency_table("detnas-small", SMALL, threads=1, backend=backend, **ARGS)
                      for backend in ("torch", "onnxruntime")}


def test_tables_are_cached_per_backend_and_corrected(ort_tables: tuple[Path, dict[str, CostTable]]) -> None:
    cache, tables = ort_tables
    kinds = sorted(json.loads(path.read_text())["payload"]["key"]["kind"] for path in cache.rglob("*.json"))
    assert [kind.split("-")[1][:5] for kind in kinds] == ["onnxr", "onnxr", "torch", "torch"]  # raw and corrected
    assert sum(kind.endswith("-ratio8") for kind in kinds) == 2
    assert tables["torch"] != tables["onnxruntime"]
    raw = raw_latency_table("detnas-small", SMALL, threads=1, backend="onnxruntime", **ARGS)
    arch = {label: random.Random(3).choice(v) for label, v in choices_of("detnas-small", **ARGS).items()}
    other = {**arch, next(iter(arch)): choices_of("detnas-small", **ARGS)[next(iter(arch))][-1]}
    fixed = tables["onnxruntime"]
    # one factor maps the raw block-sum to the corrected prediction, for every architecture
    factor = fixed.evaluate(arch)[0] / raw.evaluate(arch)[0]
    assert factor > 0 and fixed.evaluate(other)[0] == pytest.approx(factor * raw.evaluate(other)[0])
    assert all(v[0] > 0 for d in fixed.deltas for v in d.values())


def test_latency_limit_under_onnxruntime_bounds_the_proposals(ort_tables: tuple[Path, dict[str, CostTable]],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cache, tables = ort_tables
    monkeypatch.setenv("HRNAS_AUTOML_CACHE", str(cache))
    table = tables["onnxruntime"]
    (lo,), (hi,) = table.bounds()
    limit = (lo + hi) / 2
    feasible = cost_limit("detnas-small", max_latency_ms=limit, input_shape=SMALL, space_args=ARGS, threads=1,
                          backend="onnxruntime")
    evo = Evolution(choices_of("detnas-small", **ARGS), population_size=4, select_num=2, mutation_num=1,
                    crossover_num=1, seed=0, constraint=feasible)
    for _ in range(8):
        proposal = evo.ask()
        assert table.evaluate(proposal)[0] <= limit
        evo.tell(proposal, 1.0)
