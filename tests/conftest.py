"""Shared fixtures: NNI's experiment list isolated per test (it lives under $HOME/nni-experiments)."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from hrnas_automl.nni_compat import quiet_nni

quiet_nni()
warnings.filterwarnings("ignore", category=RuntimeWarning, module="nni")


@pytest.fixture
def nni_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME, so experiments started by a test never touch the user's ~/nni-experiments."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home
