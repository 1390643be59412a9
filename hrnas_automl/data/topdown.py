"""Top-down pose geometry: a person box -> the affine crop the network sees, and points through it.

Coordinates are continuous throughout: pixel ``i`` covers ``[i, i + 1)``, so its centre is ``i + 0.5``
(Pillow's affine transform samples output pixel centres the same way). The box is widened or heightened
to the input's aspect ratio and padded by 1.25, as HRNet's ``_xywh2cs`` does
(HRNet/deep-high-resolution-net.pytorch, lib/dataset/coco.py); no rotation or scale augmentation.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

__all__ = ["BOX_PADDING", "box_to_center_size", "crop_matrix", "invert_affine", "apply_affine", "crop_image"]

BOX_PADDING = 1.25  # HRNet lib/dataset/coco.py _xywh2cs: scale = scale * 1.25


def box_to_center_size(box: Sequence[float], aspect: float) -> tuple[np.ndarray, np.ndarray]:
    """Centre ``(x, y)`` and crop size ``(w, h)`` of a COCO ``[x, y, w, h]`` box at ``aspect`` = w / h, padded."""
    x, y, w, h = (float(v) for v in box)
    center = np.array([x + 0.5 * w, y + 0.5 * h])
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    return center, np.array([w, h]) * BOX_PADDING


def crop_matrix(center: np.ndarray, size: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """The 2x3 affine map from image coordinates to crop coordinates of an ``output_size`` (H, W) crop."""
    out_h, out_w = output_size
    sx, sy = out_w / size[0], out_h / size[1]
    return np.array([[sx, 0.0, out_w / 2 - center[0] * sx], [0.0, sy, out_h / 2 - center[1] * sy]])


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine map."""
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``points`` (..., 2) mapped by the 2x3 ``matrix``."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def crop_image(image: Image.Image, matrix: np.ndarray, output_size: tuple[int, int]) -> Image.Image:
    """The ``output_size`` (H, W) crop of ``image`` under ``matrix`` (bilinear; outside the image is black)."""
    inverse = invert_affine(matrix)  # Pillow wants output -> input coefficients
    return image.transform((output_size[1], output_size[0]), Image.Transform.AFFINE, tuple(inverse.ravel()),
                           resample=Image.Resampling.BILINEAR)
