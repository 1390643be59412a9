"""What the generated datasets share: a verified folder cache, so trials read them through the real loaders,
and the noisy colour-gradient background they draw on.

A generated kind (``shapes``, ``stick-figures``) writes its files once per parameter set into
``<cache>/<name>-<hash of the parameters>`` and hands that folder to the loader of the real format. The cache is
the per-user ``user_cache_dir("data")`` (``0700``; see :mod:`hrnas_automl.files`) unless ``data.cache_dir``
names another folder. Each folder carries a sealed stamp (:data:`STAMP`) holding the parameters and a SHA-256
over every file's relative path and bytes; a folder whose stamp is missing, does not match its files, or that
is a link is not trusted: it is regenerated, with a warning naming it.

Concurrent trials (nnictl runs several) may ask for the same folder at once: one writes it, under a lock file
beside it, while the others wait and then read it; the writer fills a temporary folder and renames it into place,
so a reader never sees half a folder (and if the lock is not honoured, the first rename wins and the others drop
their copy).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import stat
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hrnas_automl.files import read_sealed_json, sealed_json, user_cache_dir

__all__ = ["STAMP", "default_cache_dir", "folder_digest", "generated_folder", "gradient_background", "add_noise"]

STAMP = ".hrnas-automl-stamp.json"
"""The stamp file inside a generated folder (hidden, so no loader's file pattern sees it)."""


def default_cache_dir() -> Path:
    """The per-user data cache, ``user_cache_dir("data")``: created ``0700``, refused if shared or a link."""
    return user_cache_dir("data")


def folder_digest(folder: Path) -> str:
    """SHA-256 over the sorted relative paths and bytes of every file under ``folder`` except the stamp.

    Raises:
        ValueError: the folder holds a link or something other than files and folders (not generated here).
    """
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        mode = path.lstat().st_mode
        if stat.S_ISDIR(mode):
            continue
        if not stat.S_ISREG(mode):
            raise ValueError(f"{path} is a link or a special file")
        relative = path.relative_to(folder).as_posix()
        if relative == STAMP:
            continue
        content = path.read_bytes()
        digest.update(f"{relative}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def _problem(target: Path, params: dict[str, Any]) -> str | None:
    """Why ``target`` cannot be trusted as the folder of ``params`` (None when it can)."""
    if target.is_symlink() or not target.is_dir():
        return "it is a link or not a folder"
    try:
        stamp = read_sealed_json(target / STAMP)
        if stamp != {"params": params, "sha256": folder_digest(target)}:
            return "its files do not match its stamp"
    except (OSError, ValueError) as exc:
        return str(exc).splitlines()[0] if (target / STAMP).exists() else "it has no stamp"
    return None


def _check_cache(cache: Path) -> None:
    """Refuse a given ``data.cache_dir`` that another user owns or others may write to (they could plant files)."""
    info = cache.lstat()
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise PermissionError(f"data.cache_dir {cache} is a link, owned by another user or writable by others; "
                              "give a folder of your own or leave data.cache_dir out (the per-user cache)")


def generated_folder(name: str, params: Mapping[str, Any], write: Callable[[Path], None],
                     cache_dir: str | Path | None = None) -> Path:
    """The folder holding ``write(folder)``'s output for these ``params``, generated on first use and whenever
    the folder there does not match its stamp."""
    params = json.loads(json.dumps(dict(params), sort_keys=True))  # as the stamp stores them
    if cache_dir is None:
        cache = default_cache_dir()
    else:
        cache = Path(cache_dir).expanduser()
        try:
            cache.mkdir(mode=0o700, parents=True, exist_ok=True)  # ours alone, whatever the umask
        except OSError as exc:
            raise ValueError(f"cannot create the data cache folder {cache} ({exc.strerror}); set data.cache_dir "
                             f"to a writable folder") from None
        _check_cache(cache)
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    target = cache / f"{name}-{digest}"
    if _problem(target, params) is None:
        return target
    with open(cache / f".{target.name}.lock", "a") as lock:  # one trial writes it; the others wait, then read
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target.exists() or target.is_symlink()):
            return _generate(cache, target, name, params, write)
        problem = _problem(target, params)
        if problem is None:  # another trial has just written it
            return target
        warnings.warn(f"generated data folder {target} is not trusted ({problem}); regenerating it", stacklevel=3)
        stale = cache / f".{target.name}.stale-{os.getpid()}"
        target.rename(stale)
        if stale.is_symlink() or not stale.is_dir():
            stale.unlink()
        else:
            shutil.rmtree(stale)
        return _generate(cache, target, name, params, write)


def _generate(cache: Path, target: Path, name: str, params: dict[str, Any], write: Callable[[Path], None]) -> Path:
    """Write into a private staging folder, stamp it, rename it to ``target`` (a lost race keeps the winner's)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache))
    try:
        write(staging)
        sealed_json({"params": params, "sha256": folder_digest(staging)}, staging / STAMP)
        staging.rename(target)
    except OSError:
        if not target.is_dir():  # not a lost race: a real failure
            raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def gradient_background(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """An RGB image of a random linear colour gradient (the scene a generated sample is drawn on)."""
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    start, slope = rng.uniform(0.3, 0.7, 3), rng.uniform(-0.3, 0.3, (2, 3))
    background = start + yy[..., None] * slope[0] + xx[..., None] * slope[1]
    return Image.fromarray(np.uint8(np.clip(background, 0, 1) * 255))


def add_noise(rng: np.random.Generator, image: Image.Image, std: float = 8.0) -> np.ndarray:
    """``image`` as ``(H, W, 3) uint8`` with Gaussian pixel noise of ``std`` grey levels (sensor noise)."""
    pixels = np.asarray(image, dtype=np.float32)
    return np.uint8(np.clip(pixels + rng.normal(0.0, std, pixels.shape), 0, 255))
