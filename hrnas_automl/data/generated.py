"""What the generated datasets share: a folder cache, so trials read them through the real loaders,
and the noisy colour-gradient background they draw on.

A generated kind (``shapes``, ``stick-figures``) writes its files once per parameter set into
``cache_dir/<name>-<hash of the parameters>`` and hands that folder to the loader of the real format.
Concurrent trials (nnictl runs several) may generate the same folder at once: each writes into its own
temporary folder and renames it into place; the first rename wins and the others drop their copy.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["default_cache_dir", "generated_folder", "gradient_background", "add_noise"]


def default_cache_dir() -> Path:
    """``$TMPDIR/hrnas-automl-data``: generated data is cheap to rebuild, so it lives with temporary files."""
    return Path(tempfile.gettempdir()) / "hrnas-automl-data"


def generated_folder(name: str, params: Mapping[str, Any], write: Callable[[Path], None],
                     cache_dir: str | Path | None = None) -> Path:
    """The folder holding ``write(folder)``'s output for these ``params``, generated on first use."""
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    digest = hashlib.sha256(json.dumps(dict(params), sort_keys=True).encode()).hexdigest()[:12]
    target = cache / f"{name}-{digest}"
    if target.is_dir():
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the data cache folder {cache} ({exc.strerror}); set data.cache_dir to "
                         f"a writable folder") from None
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache))
    try:
        write(staging)
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
