"""The generated-data cache is per user and verified: a folder that does not match its stamp (altered, no stamp,
a planted link) is regenerated with a warning naming it, never read (issue 17)."""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import threading
from pathlib import Path

import pytest

from hrnas_automl.data.generated import STAMP, folder_digest, generated_folder
from hrnas_automl.data.shapes import build_shapes, write_shapes

PARAMS = {"seed": 1, "size": 3}


class Writer:
    """A ``write`` that records its calls and writes two small files (one in a subfolder)."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, out: Path) -> None:
        with self.lock:
            self.calls += 1
        (out / "sub").mkdir()
        (out / "a.txt").write_text("alpha")
        (out / "sub" / "b.bin").write_bytes(bytes(range(256)))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HRNAS_AUTOML_CACHE", str(tmp_path / "user-cache"))
    return tmp_path / "user-cache" / "data"


def test_default_cache_is_the_private_per_user_folder(cache: Path) -> None:
    folder = generated_folder("demo", PARAMS, Writer())
    assert folder.parent == cache and not folder.is_relative_to(tempfile.gettempdir() + "/hrnas-automl-data")
    assert stat.S_IMODE(cache.parent.stat().st_mode) == 0o700
    assert (folder / STAMP).is_file() and (folder / "sub" / "b.bin").read_bytes() == bytes(range(256))


def test_a_valid_folder_is_reused(cache: Path) -> None:
    write = Writer()
    first = generated_folder("demo", PARAMS, write)
    assert generated_folder("demo", PARAMS, write) == first and write.calls == 1


def test_a_planted_link_is_replaced_not_followed(cache: Path, tmp_path: Path) -> None:
    folder = generated_folder("demo", PARAMS, Writer())
    shutil.rmtree(folder)
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "a.txt").write_text("evil")
    folder.symlink_to(planted)
    with pytest.warns(UserWarning, match=rf"generated data folder {folder} is not trusted \(it is a link"):
        again = generated_folder("demo", PARAMS, Writer())
    assert again == folder and not folder.is_symlink() and (folder / "a.txt").read_text() == "alpha"
    assert (planted / "a.txt").read_text() == "evil"  # the link's target is left alone


@pytest.mark.parametrize("damage", ["altered", "truncated", "added", "no stamp", "inner link"])
def test_a_folder_that_does_not_match_its_stamp_is_regenerated(cache: Path, tmp_path: Path, damage: str) -> None:
    folder = generated_folder("demo", PARAMS, Writer())
    if damage == "altered":
        (folder / "a.txt").write_text("alphb")
    elif damage == "truncated":
        (folder / "sub" / "b.bin").write_bytes(bytes(range(100)))
    elif damage == "added":
        (folder / "sub" / "extra.png").write_bytes(b"x")
    elif damage == "no stamp":
        (folder / STAMP).unlink()
    else:
        (tmp_path / "other.txt").write_text("alpha")
        (folder / "a.txt").unlink()
        (folder / "a.txt").symlink_to(tmp_path / "other.txt")
    write = Writer()
    with pytest.warns(UserWarning, match=rf"generated data folder {folder} is not trusted"):
        assert generated_folder("demo", PARAMS, write) == folder
    assert write.calls == 1 and folder_digest(folder) == folder_digest(generated_folder("demo", PARAMS, write))
    assert (folder / "a.txt").read_text() == "alpha" and not (folder / "sub" / "extra.png").exists()
    assert sorted(p.name for p in cache.iterdir() if ".stale-" in p.name) == []


def _four_trials_at_once(write: Writer) -> list[Path]:
    """The folders 4 threads get when they ask for the same generated data at once."""
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(generated_folder("demo", PARAMS, write)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_trials_replace_a_damaged_folder_once(cache: Path) -> None:
    folder = generated_folder("demo", PARAMS, Writer())
    (folder / "a.txt").write_text("tampered")
    write = Writer()
    with pytest.warns(UserWarning, match="is not trusted"):
        results = _four_trials_at_once(write)
    assert results == [folder] * 4 and write.calls == 1 and (folder / "a.txt").read_text() == "alpha"


def test_concurrent_trials_write_a_new_folder_once(cache: Path) -> None:
    write = Writer()
    results = _four_trials_at_once(write)
    assert len(set(results)) == 1 and len(results) == 4 and write.calls == 1


def test_a_cache_dir_others_may_write_to_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(PermissionError, match=rf"data.cache_dir {shared} is a link, owned by another user or "
                                              r"writable by others; give a folder of your own"):
        generated_folder("demo", PARAMS, Writer(), cache_dir=shared)


def test_a_new_cache_dir_is_created_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o002)  # user-private groups: new folders are group-writable by default
    try:
        folder = generated_folder("demo", PARAMS, Writer(), cache_dir=tmp_path / "mine" / "data")
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.parent.stat().st_mode) == 0o700


def test_generated_files_are_those_the_writer_writes(cache: Path, tmp_path: Path) -> None:
    """Only the location and the stamp are new: the dataset's bytes are what write_shapes writes."""
    build_shapes(layout="ade20k", seed=2, train_size=3, val_size=2, image_size=32)
    folder = next(cache.glob("shapes-*"))
    direct = write_shapes(tmp_path / "direct", layout="ade20k", seed=2, train_size=3, val_size=2, image_size=32)

    def files(root: Path) -> dict[str, str]:
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in root.rglob("*") if p.is_file() and p.name != STAMP}
    assert files(folder) == files(direct) and folder_digest(folder) == folder_digest(direct)
    assert sorted(os.listdir(folder)) == sorted(["ADEChallengeData2016", STAMP])
