"""A seeded, generated image-classification dataset that needs no download.

Each class is a Gabor patch (an oriented sinusoidal grating under a Gaussian window): class ``c`` has
orientation ``pi * c / num_classes`` and one of two spatial frequencies (alternating by class, so
neighbouring orientations also differ in frequency). Every image draws its own orientation jitter,
phase, patch position, contrast and per-channel colour, then Gaussian pixel noise is added, so colour
and position carry no label information and a small CNN must learn oriented filters: above chance
within a couple of epochs, far from trivial under the default noise. A noise range ``[low, high]`` draws
every image's noise level from it, so images differ in difficulty, as natural images do (the setting early
exiting networks are made for: easy images can leave early, hard ones need the whole network).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from collections.abc import Callable, Sequence
from typing import Any

from hrnas_automl.data import ClassificationData, TensorImageDataset, _check_option

__all__ = ["build_synthetic", "generate_patterns"]

_CYCLES = (3.0, 5.0)  # default grating cycles per image width, alternating by class
_WINDOW = 0.22  # default Gaussian window radius as a fraction of the image width


def _generator(seed: int, split: int) -> torch.Generator:
    # Independent sub-seeds per split: val does not change when train_size does, and never equals train.
    state = np.random.SeedSequence([seed, split]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def generate_patterns(count: int, *, num_classes: int, image_size: int, channels: int,
                      noise: float | tuple[float, float], generator: torch.Generator, window: float = _WINDOW,
                      cycles: tuple[float, float] = _CYCLES) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` images ``(N, C, S, S)`` float32 and their labels ``(N,)`` int64, classes balanced to within one.
    ``noise`` is the pixel noise std, or a ``(low, high)`` range each image draws its own std from; ``window`` the
    patch radius (fraction of the width) and ``cycles`` the two grating frequencies (cycles per width)."""
    labels = torch.arange(count) % num_classes
    labels = labels[torch.randperm(count, generator=generator)]

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=generator)

    spacing = math.pi / num_classes
    theta = labels * spacing + uniform(-0.25, 0.25, count) * spacing
    frequency = torch.tensor(cycles)[labels % len(cycles)]
    phase = uniform(0.0, 2 * math.pi, count)
    centre = uniform(-0.2, 0.2, count, 2)
    contrast = uniform(0.6, 1.0, count)
    colour = uniform(0.4, 1.0, count, channels)

    coords = (torch.arange(image_size, dtype=torch.float32) + 0.5) / image_size - 0.5
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    dx = xx - centre[:, 0, None, None]
    dy = yy - centre[:, 1, None, None]
    along = dx * torch.cos(theta)[:, None, None] + dy * torch.sin(theta)[:, None, None]
    grating = torch.sin(2 * math.pi * frequency[:, None, None] * along + phase[:, None, None])
    window = torch.exp(-(dx**2 + dy**2) / (2 * window**2))
    pattern = (contrast[:, None, None] * window * grating)[:, None] * colour[:, :, None, None]
    std = uniform(*noise, count)[:, None, None, None] if isinstance(noise, tuple) else noise
    images = 0.5 + 0.5 * pattern + std * torch.randn(count, channels, image_size, image_size, generator=generator)
    return images.float(), labels


def _pair(name: str, value: Any, need: str, test: Callable[[float, float], bool]) -> tuple[float, float]:
    """``value`` as two floats passing ``test``, or the one-line error of option ``name``."""
    numbers = (isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
               and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))
    if not (numbers and test(*value)):
        raise ValueError(f"synthetic data: option {name}={value!r} is invalid; it must be {need}")
    return float(value[0]), float(value[1])


def build_synthetic(*, num_classes: int = 10, image_size: int = 32, channels: int = 3, train_size: int = 512,
                    val_size: int = 256, seed: int = 0, noise: float | Sequence[float] = 0.2,
                    window: float = _WINDOW, cycles: Sequence[float] = _CYCLES) -> ClassificationData:
    """Generate the train and val splits (disjoint draws from sub-seeds of ``seed``; same seed, same tensors).
    ``noise``: the pixel noise std, or ``[low, high]`` for a per-image std drawn from that range; ``window``,
    ``cycles``: patch radius and grating frequencies (smaller patches need finer resolution to classify)."""
    _check_option("synthetic", "num_classes", num_classes, "an integer >= 2", lambda v: v >= 2, integer=True)
    _check_option("synthetic", "image_size", image_size, "an integer >= 8", lambda v: v >= 8, integer=True)
    _check_option("synthetic", "channels", channels, "an integer >= 1", lambda v: v >= 1, integer=True)
    _check_option("synthetic", "train_size", train_size, "an integer >= 1", lambda v: v >= 1, integer=True)
    _check_option("synthetic", "val_size", val_size, "an integer >= 1", lambda v: v >= 1, integer=True)
    _check_option("synthetic", "seed", seed, "a non-negative integer", lambda v: v >= 0, integer=True)
    _check_option("synthetic", "window", window, "a number > 0", lambda v: v > 0)
    frequencies = _pair("cycles", cycles, "two positive numbers (cycles per image width)",
                        lambda a, b: a > 0 and b > 0)
    if isinstance(noise, Sequence) and not isinstance(noise, str):
        noise = _pair("noise", noise, "a range [low, high] with 0 <= low <= high", lambda a, b: 0 <= a <= b)
    else:
        _check_option("synthetic", "noise", noise, "a number >= 0 or a range [low, high]", lambda v: v >= 0)
        noise = float(noise)
    splits = []
    for split, size in enumerate((train_size, val_size)):
        images, labels = generate_patterns(size, num_classes=num_classes, image_size=image_size, channels=channels,
                                           noise=noise, generator=_generator(seed, split), window=float(window),
                                           cycles=frequencies)
        splits.append(TensorImageDataset(images, labels))
    return ClassificationData(train=splits[0], val=splits[1], num_classes=num_classes,
                              classes=tuple(f"class_{c}" for c in range(num_classes)),
                              input_shape=(channels, image_size, image_size))
