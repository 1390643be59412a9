"""Semantic-segmentation datasets in their published folder layouts: Cityscapes and ADE20K.

Cityscapes (https://www.cityscapes-dataset.com)::

    root/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png
    root/gtFine/<split>/<city>/<name>_gtFine_labelTrainIds.png   # 19 train ids, 255 = void

The ``labelTrainIds`` masks are not in the download; cityscapesscripts' ``createTrainIdLabelImgs`` writes
them (mmseg's ``tools/dataset_converters/cityscapes.py`` does the same). ADE20K / SceneParsing
(http://sceneparsing.csail.mit.edu)::

    root/ADEChallengeData2016/images/{training,validation}/<name>.jpg
    root/ADEChallengeData2016/annotations/{training,validation}/<name>.png   # 0 = other, 1..150 = classes

ADE20K follows mmseg's ``reduce_zero_label``: mask value 0 ("other") becomes the ignore index 255 and
every class moves down by one, so class ids are 0..149. Images and masks are resized to the training
size (bilinear / nearest) and decoded lazily; every file's header is checked when the dataset is built.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from hrnas_automl.data import _check_option, check_size
from hrnas_automl.data.images import check_image, read_image

__all__ = ["IGNORE_INDEX", "SegmentationData", "SegmentationDataset", "scan_cityscapes", "scan_ade20k",
           "build_cityscapes", "build_ade20k"]

IGNORE_INDEX = 255  # Cityscapes' void train id; mmseg's ignore_index
_CITYSCAPES_IMAGE = "_leftImg8bit.png"
_CITYSCAPES_MASK = "_gtFine_labelTrainIds.png"
_MASK_MODES = ("L", "P", "I", "I;16")


@dataclass(frozen=True)
class SegmentationData:
    """A train/val split of (image, mask) pairs plus what the segmentation head needs to be built."""

    train: Dataset
    val: Dataset
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W)
    ignore_index: int = IGNORE_INDEX


class SegmentationDataset(Dataset):
    """Image/mask file pairs; items are ``(3 x H x W float in [0, 1], H x W int64 class ids, 255 = ignore)``."""

    def __init__(self, pairs: Sequence[tuple[Path, Path]], *, size: tuple[int, int], num_classes: int,
                 reduce_zero_label: bool) -> None:
        self.pairs = tuple(pairs)
        self.size = size
        self.num_classes = num_classes
        self.reduce_zero_label = reduce_zero_label
        for image_path, mask_path in self.pairs:
            _check_pair(image_path, mask_path)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, mask_path = self.pairs[index]
        height, width = self.size
        image = read_image(image_path, "RGB").resize((width, height), Image.Resampling.BILINEAR)
        mask = read_image(mask_path, None, "mask")
        labels = np.asarray(mask.resize((width, height), Image.Resampling.NEAREST)).astype(np.int64)
        if self.reduce_zero_label:  # ADE20K: 0 = "other" -> ignore, 1..K -> 0..K-1, 255 stays 255 (mmseg)
            labels = np.where((labels == 0) | (labels == IGNORE_INDEX), IGNORE_INDEX + 1, labels) - 1
        bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= self.num_classes))
        if bad.any():
            raise ValueError(f"mask {mask_path} has class id {int(labels[bad].max())} but num_classes is "
                             f"{self.num_classes}; set data.num_classes to the dataset's class count")
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
        return pixels, torch.from_numpy(labels)


def _check_pair(image_path: Path, mask_path: Path) -> None:
    """One-line errors for a pair that would train wrongly: unreadable or truncated files, a mask that is not
    single-channel, a mask whose size differs from its image (each would be resized on its own, misaligned)."""
    image_size, _ = check_image(image_path)
    mask_size, mask_mode = check_image(mask_path, "mask")
    if mask_mode not in _MASK_MODES:
        raise ValueError(f"mask {mask_path} has mode {mask_mode}; label masks are single-channel PNGs of class ids")
    if mask_size != image_size:
        raise ValueError(f"mask {mask_path} is {mask_size[0]}x{mask_size[1]} but its image {image_path} is "
                         f"{image_size[0]}x{image_size[1]} (width x height); give each image a mask of its size")


def _split_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise ValueError(f"{what}: split folder {path} is missing; point data.root at the dataset root")
    return path


def _pair_up(images: dict[str, Path], masks: dict[str, Path], image_dir: Path, mask_dir: Path
             ) -> list[tuple[Path, Path]]:
    """Pairs matched by their shared stem; an unmatched file on either side is an error."""
    if not images:
        raise ValueError(f"no images in {image_dir}; check data.root and the folder layout")
    for key, mask in masks.items():
        if key not in images:
            raise ValueError(f"mask {mask} has no image in {image_dir}; add the image or delete the mask")
    for key, image in images.items():
        if key not in masks:
            raise ValueError(f"image {image} has no mask in {mask_dir}; add the mask or delete the image")
    return [(images[key], masks[key]) for key in sorted(images)]


def scan_cityscapes(root: Path, split: str) -> list[tuple[Path, Path]]:
    """(image, labelTrainIds mask) pairs of a Cityscapes ``split`` (``train``/``val``), sorted by name."""
    image_dir = _split_dir(root / "leftImg8bit" / split, "cityscapes data")
    mask_dir = _split_dir(root / "gtFine" / split, "cityscapes data")
    images = {str(p.relative_to(image_dir))[: -len(_CITYSCAPES_IMAGE)]: p
              for p in image_dir.glob(f"*/*{_CITYSCAPES_IMAGE}")}
    masks = {str(p.relative_to(mask_dir))[: -len(_CITYSCAPES_MASK)]: p for p in mask_dir.glob(f"*/*{_CITYSCAPES_MASK}")}
    return _pair_up(images, masks, image_dir, mask_dir)


def scan_ade20k(root: Path, split: str) -> list[tuple[Path, Path]]:
    """(image, annotation) pairs of an ADE20K ``split`` (``training``/``validation``), sorted by name."""
    base = root / "ADEChallengeData2016" if (root / "ADEChallengeData2016").is_dir() else root
    image_dir = _split_dir(base / "images" / split, "ade20k data")
    mask_dir = _split_dir(base / "annotations" / split, "ade20k data")
    images = {p.stem: p for p in image_dir.glob("*.jpg")}
    masks = {p.stem: p for p in mask_dir.glob("*.png")}
    return _pair_up(images, masks, image_dir, mask_dir)


def _build(kind: str, root: str | Path, splits: tuple[str, str], num_classes: int, image_size: int | Sequence[int],
           reduce_zero_label: bool) -> SegmentationData:
    _check_option(kind, "num_classes", num_classes, "an integer >= 2", lambda v: v >= 2, integer=True)
    size = check_size(kind, "image_size", image_size)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"{kind} data: root {root} does not exist or is not a folder; set data.root to the "
                         f"dataset folder")
    scan = scan_cityscapes if kind == "cityscapes" else scan_ade20k
    train, val = (SegmentationDataset(scan(root, split), size=size, num_classes=num_classes,
                                      reduce_zero_label=reduce_zero_label) for split in splits)
    return SegmentationData(train=train, val=val, num_classes=num_classes, input_shape=(3, *size))


def build_cityscapes(*, root: str | Path, num_classes: int = 19, image_size: int | Sequence[int] = (512, 1024),
                     train_split: str = "train", val_split: str = "val") -> SegmentationData:
    """Cityscapes ``labelTrainIds`` (19 classes, 255 = void) at ``image_size`` (H, W)."""
    return _build("cityscapes", root, (train_split, val_split), num_classes, image_size, reduce_zero_label=False)


def build_ade20k(*, root: str | Path, num_classes: int = 150, image_size: int | Sequence[int] = 512,
                 train_split: str = "training", val_split: str = "validation") -> SegmentationData:
    """ADE20K SceneParsing (150 classes after mmseg's reduce_zero_label) at ``image_size`` (H, W)."""
    return _build("ade20k", root, (train_split, val_split), num_classes, image_size, reduce_zero_label=True)
