"""scikit-learn's bundled handwritten digits (8x8 grayscale, 10 classes, 1797 images): real data, offline.

The images are scaled to [0, 1], resized with bilinear interpolation to the network's input size and
repeated to the requested number of channels, then split stratified and seeded into train and val.
"""
from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.nn import functional as F

from hrnas_automl.data import ClassificationData, TensorImageDataset, _check_option

__all__ = ["build_digits"]


def build_digits(*, image_size: int = 32, channels: int = 3, val_fraction: float = 0.2,
                 seed: int = 0) -> ClassificationData:
    """Load, resize and split the digits; the same seed gives the same split."""
    _check_option("digits", "image_size", image_size, "an integer >= 1", lambda v: v >= 1, integer=True)
    _check_option("digits", "channels", channels, "an integer >= 1", lambda v: v >= 1, integer=True)
    _check_option("digits", "val_fraction", val_fraction, "a number strictly between 0 and 1",
                  lambda v: 0 < v < 1)
    _check_option("digits", "seed", seed, "a non-negative integer", lambda v: v >= 0, integer=True)
    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0  # pixel values are 0..16
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = images.repeat(1, channels, 1, 1).contiguous()
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    try:
        train_idx, val_idx = train_test_split(range(len(labels)), test_size=val_fraction, random_state=seed,
                                              stratify=bunch.target)
    except ValueError as exc:
        raise ValueError(f"digits data: cannot split {len(labels)} images with val_fraction={val_fraction} "
                         f"({str(exc).splitlines()[0]}); choose a val_fraction between 0.01 and 0.99") from None
    train_idx, val_idx = torch.as_tensor(train_idx), torch.as_tensor(val_idx)
    return ClassificationData(train=TensorImageDataset(images[train_idx], labels[train_idx]),
                              val=TensorImageDataset(images[val_idx], labels[val_idx]),
                              num_classes=10, classes=tuple(str(d) for d in range(10)),
                              input_shape=(channels, image_size, image_size))
