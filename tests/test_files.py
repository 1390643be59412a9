"""The file-safety helpers every output and cache goes through (issue 17)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hrnas_automl.files import (OutputInUseError, OutputLock, atomic_write, read_sealed_json, sealed_json,
                                user_cache_dir)


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    target.write_text("old")

    def half(handle) -> None:
        handle.write(b"new, but")
        raise KeyboardInterrupt  # the writer dies mid-file

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_a_second_process_is_refused_with_the_holders_pid_and_a_killed_holder_frees_the_folder(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom hrnas_automl.files import OutputLock\n"
        f"with OutputLock({str(tmp_path)!r}, 'prune'):\n    print('held', flush=True)\n    time.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputInUseError, match=rf"in use by process {holder.pid} \(prune\)"):
            with OutputLock(tmp_path, "prune"):
                pass
    finally:
        holder.kill()  # SIGKILL: the kernel releases the lock
        holder.wait()
    with OutputLock(tmp_path, "prune"):
        pass


def test_the_cache_is_private_and_a_shared_one_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HRNAS_AUTOML_CACHE", str(tmp_path / "cache"))
    folder = user_cache_dir("tables")
    assert folder == tmp_path / "cache" / "tables"
    assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o700
    os.chmod(tmp_path / "cache", 0o777)
    with pytest.raises(PermissionError, match="writable by others"):
        user_cache_dir("tables")
    planted = tmp_path / "planted"
    planted.mkdir(mode=0o700)
    monkeypatch.setenv("HRNAS_AUTOML_CACHE", str(tmp_path / "link"))
    (tmp_path / "link").symlink_to(planted)
    with pytest.raises(PermissionError, match="is a link"):
        user_cache_dir()


def test_a_sealed_file_that_was_altered_or_truncated_is_recognised(tmp_path: Path) -> None:
    path = tmp_path / "table.json"
    sealed_json({"base": [1.0, 2.0]}, path)
    assert read_sealed_json(path) == {"base": [1.0, 2.0]}
    data = json.loads(path.read_text())
    data["payload"]["base"][0] = 0.5
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="does not match its digest"):
        read_sealed_json(path)
    path.write_text(json.dumps(data)[:-7])
    with pytest.raises(ValueError, match="not readable JSON"):
        read_sealed_json(path)
