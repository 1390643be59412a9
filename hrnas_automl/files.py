"""Files a search writes and reads back, made safe against kills, concurrent processes and tampering.

* :func:`atomic_write` and its JSON / torch forms: a reader (or a resumed run) sees the old file or the new one,
  never half of one, whatever kills the writer (write to a sibling temporary file, fsync, ``os.replace``).
* :class:`OutputLock`: one process per output folder; a second one is refused with a line naming the first
  (an advisory ``flock``, released by the kernel when its holder dies, even by ``kill -9``).
* :func:`user_cache_dir`: the per-user cache (``$HRNAS_AUTOML_CACHE``, else ``$XDG_CACHE_HOME/hrnas-automl``, else
  ``~/.cache/hrnas-automl``), created ``0700`` and refused when another user owns it or others may write to it.
* :func:`sealed_json` / :func:`read_sealed_json`: JSON stored with the SHA-256 of its payload, so a truncated or
  altered cache file is recognised (and recompiled by its caller) rather than trusted.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "write_json_atomic", "save_torch_atomic", "load_torch_checkpoint", "OutputLock",
           "OutputInUseError", "user_cache_dir", "sha256_of", "sealed_json", "read_sealed_json"]


@contextmanager
def _replacing(path: Path, mode: str) -> Iterator[IO[Any]]:
    """An open temporary file beside ``path`` that replaces ``path`` when the block ends without an error."""
    if path.parent.exists() and not path.parent.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path.parent))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(binary file)`` and put the result at ``path`` in one rename: all of it or none of it."""
    with _replacing(Path(path), "wb") as handle:
        write(handle)


def write_json_atomic(obj: Any, path: str | Path, *, indent: int | None = None) -> None:
    """``obj`` as JSON at ``path``, atomically."""
    atomic_write(path, lambda handle: handle.write(json.dumps(obj, indent=indent).encode()))


def save_torch_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` at ``path``, atomically (a checkpoint is never half written)."""
    import torch  # local: the CLI's fast paths import this module without torch

    atomic_write(path, lambda handle: torch.save(obj, handle))


def load_torch_checkpoint(path: str | Path, kind: str, what: str, fix: str) -> dict[str, Any]:
    """The checkpoint dict at ``path`` (``torch.load(weights_only=True)``) whose ``"kind"`` is ``kind``; anything else
    (not a torch file, someone else's file, a checkpoint of another kind) is a one-line ``ValueError`` naming the
    file, ``what`` it should be and the ``fix``."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means: not our checkpoint
        raise ValueError(f"{path} is not a readable {what} checkpoint ({type(exc).__name__}); {fix}") from None
    if not isinstance(state, dict) or state.get("kind") != kind:
        raise ValueError(f"{path} is not a hrnas-automl {what} checkpoint; {fix}")
    return state


class OutputInUseError(RuntimeError):
    """Another live process holds the output folder."""


class OutputLock:
    """Hold ``folder`` for this process: ``with OutputLock(folder, "prune"): ...``.

    The lock is ``folder/.hrnas-automl.lock``, locked with ``flock``; it records the holder's PID and command so
    the refusal can name them. A holder killed by any signal releases it (the kernel closes its files).
    """

    FILE = ".hrnas-automl.lock"

    def __init__(self, folder: str | Path, what: str) -> None:
        self.folder, self.what = Path(folder), what
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder / self.FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # before any work starts: nothing is lost
            raise OutputInUseError(f"cannot use {self.folder} as the output folder ({exc.strerror}); choose a "
                                   "writable folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise OutputInUseError(f"{self.folder} is in use by {holder}; wait for it to end or choose another "
                                   "output folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} ({self.what})".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock; the file stays, so no other process races on it
            self._fd = None


def user_cache_dir(*parts: str) -> Path:
    """The per-user cache folder (joined with ``parts``), created ``0700``; refused if it is not ours alone.

    Raises:
        PermissionError: the root is a symlink, owned by another user or writable by others (someone could plant
            files a run would trust); the message names the folder and the fix.
    """
    root = Path(os.environ.get("HRNAS_AUTOML_CACHE") or
                Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hrnas-automl").expanduser()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = root.lstat()
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise PermissionError(f"the cache folder {root} is a link, owned by another user or writable by others; "
                              "remove it or set HRNAS_AUTOML_CACHE to a folder of your own")
    folder = root.joinpath(*parts)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def sha256_of(data: bytes) -> str:
    """The hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _canonical(payload: Any) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def sealed_json(payload: Any, path: str | Path) -> None:
    """Store ``payload`` at ``path`` atomically, with the SHA-256 of its canonical JSON."""
    write_json_atomic({"sha256": sha256_of(_canonical(payload)), "payload": payload}, path)


def read_sealed_json(path: str | Path) -> Any:
    """The payload :func:`sealed_json` stored at ``path``.

    Raises:
        ValueError: the file is not valid JSON, not sealed, or its payload does not match its digest (truncated
            or altered); the message names the file.
    """
    try:
        data = json.loads(Path(path).read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not readable JSON ({exc})") from None
    if not isinstance(data, dict) or set(data) != {"sha256", "payload"}:
        raise ValueError(f"{path} has no digest (written by another version?)")
    if sha256_of(_canonical(data["payload"])) != data["sha256"]:
        raise ValueError(f"{path} does not match its digest (altered or truncated)")
    return data["payload"]
