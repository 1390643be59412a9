"""Seeded generated segmentation data: coloured shapes with masks, written as Cityscapes or ADE20K.

Four classes: 0 background, 1 ellipse, 2 rectangle, 3 triangle. Each image has a noisy colour-gradient
background and 2-5 shapes of random class, size, position and colour; later shapes occlude earlier ones
and the mask follows the painting order. Each class has its own colour family, jittered widely, so a
network needs colour and shape; half the images carry a "void" patch labelled ignore (255), like
Cityscapes' void pixels. The files are exactly the real formats:

- ``cityscapes``: ``leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` and the matching
  ``gtFine/.../*_gtFine_labelTrainIds.png`` (train ids, 255 = void), splits ``train``/``val``;
- ``ade20k``: ``ADEChallengeData2016/images/{training,validation}/ADE_*.jpg`` and
  ``annotations/.../*.png`` with class + 1 and 0 for void ("other"), which the loader maps back.

The same seed writes the same bytes.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from hrnas_automl.data import _check_option, check_size
from hrnas_automl.data.generated import add_noise, generated_folder, gradient_background
from hrnas_automl.data.segmentation import IGNORE_INDEX, SegmentationData, build_ade20k, build_cityscapes

__all__ = ["SHAPE_CLASSES", "LAYOUTS", "draw_shapes", "write_shapes", "write_shape_folder", "build_shapes"]

SHAPE_CLASSES: tuple[str, ...] = ("background", "ellipse", "rectangle", "triangle")
LAYOUTS: tuple[str, ...] = ("cityscapes", "ade20k")
_HUES = {1: (0.85, 0.25, 0.2), 2: (0.2, 0.75, 0.3), 3: (0.25, 0.35, 0.9)}  # RGB centre of each class colour
_CITIES = ("alpha", "beta")


def draw_shapes(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One image ``(H, W, 3) uint8`` and its mask ``(H, W) uint8`` of class ids (255 = void)."""
    image = gradient_background(rng, height, width)
    mask = Image.new("L", (width, height), 0)
    paint, label = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    for _ in range(rng.integers(2, 6)):
        cls = int(rng.integers(1, len(SHAPE_CLASSES)))
        colour = tuple(int(c) for c in np.clip(np.array(_HUES[cls]) + rng.uniform(-0.2, 0.2, 3), 0, 1) * 255)
        w, h = rng.uniform(0.2, 0.6) * width, rng.uniform(0.2, 0.6) * height
        x0, y0 = rng.uniform(-0.1 * width, width - 0.6 * w), rng.uniform(-0.1 * height, height - 0.6 * h)
        box = [x0, y0, x0 + w, y0 + h]
        if cls == 1:
            paint.ellipse(box, fill=colour)
            label.ellipse(box, fill=cls)
        elif cls == 2:
            paint.rectangle(box, fill=colour)
            label.rectangle(box, fill=cls)
        else:
            apex = x0 + rng.uniform(0.2, 0.8) * w
            corners = [(apex, y0), (x0 + w, y0 + h), (x0, y0 + h)]
            paint.polygon(corners, fill=colour)
            label.polygon(corners, fill=cls)
    if rng.random() < 0.5:  # a void patch, ignored by loss and metrics
        w, h = rng.uniform(0.1, 0.25) * width, rng.uniform(0.1, 0.25) * height
        x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
        paint.rectangle([x0, y0, x0 + w, y0 + h], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        label.rectangle([x0, y0, x0 + w, y0 + h], fill=IGNORE_INDEX)
    return add_noise(rng, image), np.asarray(mask, dtype=np.uint8)


def _write_sample(root: Path, layout: str, split: int, index: int, image: np.ndarray, mask: np.ndarray) -> None:
    if layout == "cityscapes":
        name = ("train", "val")[split]
        city = _CITIES[index % len(_CITIES)]
        stem = f"{city}_{index // len(_CITIES):06d}_{19 + index:06d}"
        image_path = root / "leftImg8bit" / name / city / f"{stem}_leftImg8bit.png"
        mask_path = root / "gtFine" / name / city / f"{stem}_gtFine_labelTrainIds.png"
        stored = mask
    else:
        name = ("training", "validation")[split]
        stem = f"ADE_{('train', 'val')[split]}_{index + 1:08d}"
        base = root / "ADEChallengeData2016"
        image_path = base / "images" / name / f"{stem}.jpg"
        mask_path = base / "annotations" / name / f"{stem}.png"
        stored = np.where(mask == IGNORE_INDEX, 0, mask + 1).astype(np.uint8)  # 0 = "other", classes + 1
    for path in (image_path, mask_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(image_path, **({"quality": 95} if layout == "ade20k" else {}))
    Image.fromarray(stored, mode="L").save(mask_path)


def _check_options(layout: str, seed: int, train_size: int, val_size: int,
                   image_size: int | Sequence[int]) -> tuple[int, int]:
    """One-line errors for bad generator options; returns the image size (H, W)."""
    if layout not in LAYOUTS:
        raise ValueError(f"shapes data: option layout={layout!r} is invalid; use one of: {', '.join(LAYOUTS)}")
    _check_option("shapes", "seed", seed, "a non-negative integer", lambda v: v >= 0, integer=True)
    _check_option("shapes", "train_size", train_size, "an integer >= 1", lambda v: v >= 1, integer=True)
    _check_option("shapes", "val_size", val_size, "an integer >= 1", lambda v: v >= 1, integer=True)
    return check_size("shapes", "image_size", image_size)


def write_shapes(root: str | Path, *, layout: str = "cityscapes", seed: int = 0, train_size: int = 64,
                 val_size: int = 32, image_size: int | Sequence[int] = 64) -> Path:
    """Write the train and val splits under ``root`` in ``layout``; returns ``root``.

    >>> write_shapes("/tmp/shapes", layout="ade20k", seed=1)  # doctest: +SKIP
    """
    height, width = _check_options(layout, seed, train_size, val_size, image_size)
    root = Path(root)
    for split, count in enumerate((train_size, val_size)):
        rng = np.random.default_rng([seed, split])  # val does not change with train_size
        for index in range(count):
            _write_sample(root, layout, split, index, *draw_shapes(rng, height, width))
    return root


def write_shape_folder(root: str | Path, *, seed: int = 0, count: int = 64, image_size: int = 64) -> Path:
    """Write ``count`` generated JPEGs as an image folder for classification (``root/<class>/<image>.jpg``), each
    filed under the shape class covering most of its pixels; returns ``root``. Data for the folder loader in
    benchmarks and tests."""
    root = Path(root)
    rng = np.random.default_rng([seed, 2])
    for index in range(count):
        image, mask = draw_shapes(rng, image_size, image_size)
        counts = np.bincount(mask[mask != IGNORE_INDEX], minlength=len(SHAPE_CLASSES))
        folder = root / SHAPE_CLASSES[int(counts[1:].argmax()) + 1]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{index:06d}.jpg", quality=90)
    return root


def build_shapes(*, layout: str = "cityscapes", seed: int = 0, train_size: int = 64, val_size: int = 32,
                 image_size: int | Sequence[int] = 64, cache_dir: str | None = None) -> SegmentationData:
    """Generate (once, cached) the shapes in ``layout`` and read them back with that layout's real loader."""
    params = {"layout": layout, "seed": seed, "train_size": train_size, "val_size": val_size,
              "image_size": image_size}
    _check_options(layout, seed, train_size, val_size, image_size)
    root = generated_folder("shapes", params, lambda out: write_shapes(out, **params), cache_dir)
    build = build_cityscapes if layout == "cityscapes" else build_ade20k
    return build(root=root, num_classes=len(SHAPE_CLASSES), image_size=image_size)
