"""Shared fixtures. NNI keeps its experiment list in $HOME/nni-experiments and resolves that path when
``nni.tools.nnictl`` is first imported, so the whole session gets a private HOME before any test module
imports NNI; experiments started through nnictl get their own HOME per test (``nni_home``) but share the
session's cost-table cache. Under pytest-xdist (``make test`` runs 2 workers) each worker gets its own HOME and all
workers share the controller's cost-table cache (its writes are atomic and locked)."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

SESSION_HOME = Path(tempfile.mkdtemp(prefix="hrnas-automl-tests-home-"))
os.environ["HOME"] = str(SESSION_HOME)
# Compiled cost tables (hrnas_automl.cost.tables.cache_dir) are shared by the whole session, nnictl tuners and
# trials included (they run under a HOME of their own): each table compiles once per test run.
if "PYTEST_XDIST_WORKER" not in os.environ:  # the controller (or a plain run) chooses; its workers inherit it
    os.environ["HRNAS_AUTOML_CACHE"] = str(SESSION_HOME / "cost-tables")
atexit.register(shutil.rmtree, SESSION_HOME, ignore_errors=True)

from hrnas_automl.nni.compat import quiet_nni  # noqa: E402  (after HOME is set)
from hrnas_automl.tasks.training import torch_threads  # noqa: E402

quiet_nni()


@pytest.fixture(autouse=True, scope="session")
def one_thread() -> Iterator[None]:
    """One intra-op torch thread for the whole session, restored at its end: the test machines have 2 shared cores,
    where two contending threads make these small networks several times slower. Latency tests pass ``threads``."""
    with torch_threads(1):
        yield


@pytest.fixture
def nni_home(tmp_path: Path) -> Path:
    """A private HOME for one nnictl experiment (pass it to ``nni_env(home=...)``)."""
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start an nnictl experiment (they take ``nni_home``, or live in tests/e2e) run one at a time on one
    pytest-xdist worker while the other worker runs the rest: NNI's manager gives a starting tuner a fixed 10 s to
    connect, which two experiments starting together on 2 loaded cores can miss."""
    for item in items:
        if "nni_home" in getattr(item, "fixturenames", ()) or "e2e" in item.path.parts:
            item.add_marker(pytest.mark.xdist_group("nnictl"))
