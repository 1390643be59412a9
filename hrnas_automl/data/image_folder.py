"""A user's image folder, one subfolder per class, read with Pillow (no torchvision needed).

Layouts: ``root/<class>/<image>`` (split here, stratified and seeded) or ``root/train/<class>/...`` plus
``root/val/<class>/...`` (used as given; both must have the same classes). Images directly inside each
class folder with a known extension count; hidden files and folders are skipped. Images are decoded
lazily; each file's header (and ending, for truncation) is checked once when the dataset is built.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset

from hrnas_automl.data import ClassificationData, _check_option
from hrnas_automl.data.images import check_image, read_image

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataset", "build_image_folder", "scan_class_folders"]

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})


class ImageFolderDataset(Dataset):
    """Image files and their labels; each item is decoded on access to ``(3 x S x S float in [0, 1], label)``."""

    def __init__(self, paths: Sequence[str | Path], labels: Sequence[int], image_size: int) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"ImageFolderDataset needs one label per path, got {len(paths)} paths "
                             f"and {len(labels)} labels")
        self.paths = tuple(Path(p) for p in paths)
        self.labels = tuple(int(label) for label in labels)
        self.image_size = image_size
        for path in self.paths:
            check_image(path)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rgb = read_image(self.paths[index], "RGB").resize((self.image_size, self.image_size),
                                                          Image.Resampling.BILINEAR)
        pixels = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0)
        return pixels.permute(2, 0, 1).contiguous(), self.labels[index]


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def scan_class_folders(root: Path) -> tuple[tuple[str, ...], list[Path], list[int]]:
    """Class names (sorted subfolder names) of ``root``, and every image path with its class index."""
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and _visible(p)))
    if not classes:
        raise ValueError(f"image folder {root} has no class subfolders; put each class's images in "
                         f"{root}/<class name>/")
    if len(classes) < 2:
        raise ValueError(f"image folder {root} has only 1 class ({classes[0]}); classification needs at "
                         f"least 2 class subfolders")
    paths: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        images = sorted(p for p in (root / name).iterdir()
                        if p.is_file() and _visible(p) and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not images:
            raise ValueError(f"class folder {root / name} has no images; add "
                             f"{'/'.join(sorted(IMAGE_EXTENSIONS))} files or remove the folder")
        paths.extend(images)
        labels.extend([index] * len(images))
    return classes, paths, labels


def build_image_folder(*, root: str | Path, image_size: int = 32, val_fraction: float = 0.2,
                       seed: int = 0) -> ClassificationData:
    """Index ``root`` (see the module docstring for the layouts); ``val_fraction``/``seed`` split a flat root."""
    _check_option("folder", "image_size", image_size, "an integer >= 1", lambda v: v >= 1, integer=True)
    _check_option("folder", "val_fraction", val_fraction, "a number strictly between 0 and 1",
                  lambda v: 0 < v < 1)
    _check_option("folder", "seed", seed, "a non-negative integer", lambda v: v >= 0, integer=True)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"image folder {root} does not exist or is not a folder; set data.root to a folder "
                         f"with one subfolder per class")
    if (root / "train").is_dir() and (root / "val").is_dir():
        classes, train_paths, train_labels = scan_class_folders(root / "train")
        val_classes, val_paths, val_labels = scan_class_folders(root / "val")
        if val_classes != classes:
            raise ValueError(f"image folder {root}: train/ has classes {', '.join(classes)} but val/ has "
                             f"{', '.join(val_classes)}; give both the same class subfolders")
    else:
        classes, paths, labels = scan_class_folders(root)
        try:
            train_paths, val_paths, train_labels, val_labels = train_test_split(
                paths, labels, test_size=val_fraction, random_state=seed, stratify=labels)
        except ValueError as exc:
            raise ValueError(f"image folder {root}: cannot split {len(paths)} images of {len(classes)} classes "
                             f"with val_fraction={val_fraction} ({str(exc).splitlines()[0]}); add images, change "
                             f"val_fraction, or give train/ and val/ subfolders") from None
    return ClassificationData(train=ImageFolderDataset(train_paths, train_labels, image_size),
                              val=ImageFolderDataset(val_paths, val_labels, image_size),
                              num_classes=len(classes), classes=classes, input_shape=(3, image_size, image_size))
