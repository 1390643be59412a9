"""The cost tables shipped inside the package (hrnas_automl/cost/shipped_tables, written by `make tables`): one file
per entry of SHIPPED_TABLES, stored under the key a compile would use now, read before the user cache (which stays
empty), and equal to ptflops of frozen networks on fresh samples (not the archs the compile verified)."""
from __future__ import annotations

import random
from dataclasses import astuple
from pathlib import Path
from typing import Any

import pytest

from hrnas_automl.arch import resolve_space
from hrnas_automl.cost.analytic import SHIPPED_TABLES, conv_macs_table, cost_table, shipped_tables, space_table_key
from hrnas_automl.cost.count import count_conv_macs, count_cost
from hrnas_automl.cost.tables import SHIPPED_DIR, CostTable, table_key, table_path
from hrnas_automl.files import read_sealed_json


def test_the_shipped_files_are_the_entries_of_this_version() -> None:
    expected = {table_path(SHIPPED_DIR, space_table_key(space, shape, kind)) for kind, space, shape in shipped_tables()}
    assert set(SHIPPED_DIR.glob("*.json")) == expected, "run `make tables` (new version or new entry)"


@pytest.mark.parametrize("entry", SHIPPED_TABLES, ids=lambda e: f"{e[0]}-{e[1]}-{'-'.join(map(str, e[2].values()))}")
def test_a_shipped_table_is_read_first_and_equals_ptflops_on_fresh_samples(
        entry: tuple[str, str, dict[str, Any], Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HRNAS_AUTOML_CACHE", str(tmp_path))
    kind, name, space_args, shape = entry
    space = resolve_space(name, **space_args)
    shape = space.input_shape(shape)
    key = space_table_key(space, shape, kind)
    stored = read_sealed_json(table_path(SHIPPED_DIR, key))
    assert stored["key"] == table_key(key)
    table = (cost_table if kind == "ptflops" else conv_macs_table)(space, shape)
    assert table == CostTable.from_json(stored["table"])
    assert not list(tmp_path.rglob("*.json"))  # nothing compiled into the user cache
    rng = random.Random(f"shipped {key}")
    for _ in range(2):
        arch = {label: rng.choice(values) for label, values in space.choices.items()}
        net = space.freeze(arch)
        assert table.evaluate(arch) == (astuple(count_cost(net, shape)) if kind == "ptflops"
                                        else (count_conv_macs(net, shape),))
