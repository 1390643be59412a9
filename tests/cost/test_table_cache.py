"""The compiled-table cache: per-user, sealed with a digest; a truncated, altered or old-format file is reported
once by name and recompiled, never trusted and never a bare JSON error (issue 17)."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from torch import nn

from hrnas_automl.cost import tables
from hrnas_automl.cost.tables import (
    CostTable,
    cache_dir,
    cached_table,
    is_shape_count,
    measure_progress,
    shape_count,
    table_path,
)
from hrnas_automl.files import read_sealed_json, sealed_json
from tests import EXAMPLES

KEY = {"space": "demo", "input": [3, 8, 8]}
TABLE = CostTable(("macs", "params"), (("a",), ("b", "c")), (100.0, 10.0),
                  ({(1,): (0.0, 0.0), (2,): (5.0, 1.0)}, {(1, "x"): (0.0, 0.0), (2, "y"): (7.5, 2.0)}))


class Compiler:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> CostTable:
        self.calls += 1
        return TABLE


@pytest.fixture
def stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The cache file of KEY after one compile in a private cache."""
    monkeypatch.setenv("HRNAS_AUTOML_CACHE", str(tmp_path / "cache"))
    assert cached_table(KEY, Compiler()) == TABLE
    (path,) = (tmp_path / "cache").rglob("*.json")
    return path


def test_tables_are_sealed_in_the_per_user_cache(stored: Path, tmp_path: Path) -> None:
    assert stored.parent == tmp_path / "cache" / "tables" == cache_dir()
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700
    assert read_sealed_json(stored)["key"] == KEY
    compile_table = Compiler()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cached_table(KEY, compile_table) == TABLE and compile_table.calls == 0


def _truncate(path: Path) -> None:
    path.write_text(path.read_text()[:-40])


def _alter(path: Path) -> None:  # valid JSON, one value changed: 7.5 MACs become 750.0
    data = json.loads(path.read_text())
    data["payload"]["table"]["deltas"][1][1][1][0] = 750.0
    path.write_text(json.dumps(data))


def _old_format(path: Path) -> None:  # what earlier versions stored: no digest
    path.write_text(json.dumps(read_sealed_json(path)))


@pytest.mark.parametrize(("damage", "reason"), [(_truncate, "is not readable JSON"),
                                                (_alter, "does not match its digest"),
                                                (_old_format, "has no digest")])
def test_a_damaged_cache_file_is_named_once_recompiled_and_overwritten(stored: Path, damage, reason: str) -> None:
    damage(stored)
    compile_table = Compiler()
    with pytest.warns(UserWarning, match=rf"cost table cache {stored} is unusable \(.*{reason}.*\); recompiling it"
                      ) as caught:
        table = cached_table(KEY, compile_table)
    assert table == TABLE and table.evaluate({"a": 2, "b": 2, "c": "y"}) == (112.5, 13.0)
    assert compile_table.calls == 1 and len(caught) == 1
    with warnings.catch_warnings():  # the file was rewritten: the next run reads it silently
        warnings.simplefilter("error")
        assert cached_table(KEY, compile_table) == TABLE and compile_table.calls == 1
    assert read_sealed_json(stored)["table"] == TABLE.to_json()


def test_a_shipped_table_is_read_before_the_user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HRNAS_AUTOML_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tables, "SHIPPED_DIR", tmp_path / "shipped")
    (tmp_path / "shipped").mkdir()
    sealed_json({"key": KEY, "table": TABLE.to_json()}, table_path(tmp_path / "shipped", KEY))
    compile_table = Compiler()
    assert cached_table(KEY, compile_table) == TABLE and compile_table.calls == 0
    assert not (tmp_path / "cache").exists()  # the user cache is not even created
    assert cached_table({**KEY, "input": [3, 9, 9]}, compile_table) == TABLE and compile_table.calls == 1
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 1  # another key: compiled into the user cache


def test_measure_progress_counts_calls_and_keeps_the_shape_count_mark() -> None:
    calls = []

    @shape_count
    def measure(module: nn.Module, shape: tuple[int, ...]) -> tuple[float, ...]:
        calls.append(shape)
        return (1.0,)

    with measure_progress(measure, "a demo table") as counted:
        assert is_shape_count(counted) and counted(nn.Identity(), (3, 8, 8)) == (1.0,) and calls == [(3, 8, 8)]
    with measure_progress(lambda module, shape: (2.0,), "a latency table") as counted:
        assert not is_shape_count(counted) and counted(nn.Identity(), (3, 8, 8)) == (2.0,)


def test_a_fresh_cli_process_compiles_a_table_on_the_meta_device(tmp_path: Path) -> None:
    """The first compile of a process that never imported torch._dynamo (the CLI: no lightning any more): RANet's meta
    kernels import it mid-count, while ptflops has replaced torch functions, and the compile failed (issue 21)."""
    env = {**os.environ, "HRNAS_AUTOML_CACHE": str(tmp_path / "cache")}
    code = "import sys; from hrnas_automl.cli import main; sys.exit(main())"
    arch = str(EXAMPLES / "ranet" / "small_arch.json")
    out = subprocess.run([sys.executable, "-c", code, "cost", "ranet", "--arch", arch, "--input", "3x40x40"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    macs = next(line.split()[1:] for line in out.stdout.splitlines() if line.startswith("MACs"))
    assert macs[0] == macs[1] and int(macs[0].replace(",", "")) > 0  # analytic == ptflops
