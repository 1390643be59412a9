"""Object-detection data in COCO format: a loader for ``instances_*.json`` + an image folder, and a seeded
generator of small COCO-format datasets (coloured shapes with boxes on textured backgrounds).

The loader reads exactly the files a user downloads from cocodataset.org (``annotations/instances_val2017.json``
and ``val2017/``); the generator writes the same layout, so tests and demos exercise the real code path.
Images are resized to a square ``image_size``; boxes follow. A sample is ``(image, target)`` where ``target``
is a ``(max_objects, 5)`` float tensor of ``[class, x1, y1, x2, y2]`` rows padded with ``-1``, so the default
collate batches it and the classification training recipe can be reused.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from hrnas_automl.data.coco import check_annotation, coco_categories, coco_images, image_path, read_coco
from hrnas_automl.data.images import read_image

__all__ = ["CocoDetection", "DetectionData", "SHAPE_CLASSES", "generate_coco_shapes", "build_shapes", "build_coco"]
SHAPE_CLASSES: tuple[str, ...] = ("square", "circle", "triangle", "cross")
# One base colour per class (jittered per object), so a few hundred steps suffice to learn them.
_PALETTE = ((230, 60, 50), (50, 200, 70), (60, 90, 230), (230, 200, 40))


class CocoDetection(Dataset):
    """A COCO ``instances`` JSON + its image folder, resized to ``image_size`` squares.

    Category ids map to contiguous class indices in id order (:attr:`category_ids`); crowd boxes and boxes
    without area are left out of the training targets (COCOeval still sees them through the JSON).
    """

    def __init__(self, ann_file: str | Path, image_dir: str | Path, image_size: int) -> None:
        self.ann_file, self.image_dir, self.image_size = Path(ann_file), Path(image_dir), int(image_size)
        if not self.ann_file.is_file():
            raise FileNotFoundError(f"COCO annotation file {self.ann_file} does not exist; point the data config "
                                    "at an instances_*.json file")
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"COCO image folder {self.image_dir} does not exist; point the data config at "
                                    "the folder holding the JSON's file_name entries")
        what = "COCO detection"
        coco = read_coco(self.ann_file, what, "instances")
        images = coco_images(coco, self.ann_file, what, sizes=True)
        categories = coco_categories(coco, self.ann_file, what)
        self.category_ids: list[int] = categories
        index = {cid: i for i, cid in enumerate(categories)}
        self.image_ids = sorted(images)
        self.paths = [image_path(self.image_dir, images[i], self.ann_file, what) for i in self.image_ids]
        self.sizes = [(images[i]["height"], images[i]["width"]) for i in self.image_ids]
        boxes: dict[int, list[list[float]]] = {i: [] for i in self.image_ids}
        for number, ann in enumerate(coco["annotations"]):
            x, y, w, h = check_annotation(ann, number, self.ann_file, what, images, categories)
            if ann.get("iscrowd", 0) or w <= 0 or h <= 0:
                continue
            boxes[ann["image_id"]].append([index[ann["category_id"]], x, y, x + w, y + h])
        if not any(boxes.values()):
            raise ValueError(f"{what}: {self.ann_file} has no non-crowd box of positive size; give a split with "
                             "annotated objects")
        self._boxes = [boxes[i] for i in self.image_ids]
        self.max_objects = max(1, max(len(b) for b in self._boxes))

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = read_image(self.paths[i], "RGB")
        h, w = self.sizes[i]
        s = self.image_size
        pixels = np.asarray(image.resize((s, s), Image.BILINEAR), dtype=np.float32) / 255.0
        target = torch.full((self.max_objects, 5), -1.0)
        if self._boxes[i]:
            rows = torch.tensor(self._boxes[i], dtype=torch.float32)
            rows[:, 1:] *= torch.tensor([s / w, s / h, s / w, s / h])
            target[: len(rows)] = rows
        return torch.from_numpy(pixels).permute(2, 0, 1).contiguous(), target


@dataclass(frozen=True)
class DetectionData:
    """Training and validation splits; ``input_shape`` is (C, H, W) of one resized image."""

    train: CocoDetection
    val: CocoDetection

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return 3, self.train.image_size, self.train.image_size


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Textured grey background: bilinear low-frequency blobs plus pixel noise."""
    coarse = rng.uniform(70, 170, size=(4, 4, 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BILINEAR), dtype=np.float32)
    return np.clip(smooth + rng.normal(0, 12, size=(size, size, 3)), 0, 255).astype(np.uint8)


def _draw_shape(draw: ImageDraw.ImageDraw, cls: int, box: tuple[int, int, int, int], colour: tuple[int, ...]) -> None:
    x0, y0, x1, y1 = box
    if SHAPE_CLASSES[cls] == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=colour)
    elif SHAPE_CLASSES[cls] == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=colour)
    elif SHAPE_CLASSES[cls] == "triangle":
        draw.polygon(((x0, y1 - 1), (x1 - 1, y1 - 1), ((x0 + x1 - 1) / 2, y0)), fill=colour)
    else:
        t = max(2, (x1 - x0) // 3)
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        draw.rectangle((x0, cy - t // 2, x1 - 1, cy + t - t // 2 - 1), fill=colour)
        draw.rectangle((cx - t // 2, y0, cx + t - t // 2 - 1, y1 - 1), fill=colour)


def _write_split(root: Path, split: str, count: int, image_size: int, num_classes: int, max_objects: int,
                 rng: np.random.Generator) -> None:
    (root / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id in range(1, count + 1):
        canvas = Image.fromarray(_background(rng, image_size))
        draw = ImageDraw.Draw(canvas)
        placed: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(1, max_objects + 1))):
            for _try in range(20):  # rejection-sample a box that overlaps no earlier one
                side = int(rng.integers(max(6, image_size // 5), max(7, image_size * 9 // 20)))
                x0, y0 = (int(v) for v in rng.integers(0, image_size - side + 1, size=2))
                box = (x0, y0, x0 + side, y0 + side)
                if all(box[2] <= p[0] or p[2] <= box[0] or box[3] <= p[1] or p[3] <= box[1] for p in placed):
                    break
            else:
                continue
            cls = int(rng.integers(num_classes))
            colour = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in _PALETTE[cls])
            _draw_shape(draw, cls, box, colour)
            placed.append(box)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cls + 1,
                                "bbox": [box[0], box[1], side, side], "area": side * side, "iscrowd": 0})
        name = f"{image_id:06d}.png"
        canvas.save(root / split / name)
        images.append({"id": image_id, "file_name": name, "height": image_size, "width": image_size})
    coco = {"info": {"description": "hrnas-automl generated shapes"}, "licenses": [], "images": images,
            "annotations": annotations,
            "categories": [{"id": i + 1, "name": SHAPE_CLASSES[i], "supercategory": "shape"}
                           for i in range(num_classes)]}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))


def generate_coco_shapes(root: str | Path, *, train_size: int = 64, val_size: int = 16, image_size: int = 64,
                         num_classes: int = 3, max_objects: int = 3, seed: int = 0) -> Path:
    """Write a seeded COCO-format shapes dataset under ``root`` (``annotations/instances_{train,val}.json``,
    ``train/``, ``val/``) unless one with the same settings is already there; returns ``root``."""
    if not 1 <= num_classes <= len(SHAPE_CLASSES):
        raise ValueError(f"num_classes must be in 1..{len(SHAPE_CLASSES)} ({', '.join(SHAPE_CLASSES)}), "
                         f"got {num_classes}")
    if image_size < 16 or train_size < 1 or val_size < 1 or max_objects < 1:
        raise ValueError(f"shapes data needs image_size >= 16 and train_size, val_size, max_objects >= 1; got "
                         f"{image_size}, {train_size}, {val_size}, {max_objects}")
    root = Path(root)
    settings = {"train_size": train_size, "val_size": val_size, "image_size": image_size,
                "num_classes": num_classes, "max_objects": max_objects, "seed": seed}
    stamp = root / "shapes.json"
    try:
        if json.loads(stamp.read_text()) == settings:
            return root
    except (OSError, ValueError):  # no stamp, or a damaged one (a killed run): write the dataset again
        pass
    rng = np.random.default_rng(seed)
    _write_split(root, "train", train_size, image_size, num_classes, max_objects, rng)
    _write_split(root, "val", val_size, image_size, num_classes, max_objects, rng)
    stamp.write_text(json.dumps(settings))
    return root


def build_shapes(*, root: str | Path, image_size: int = 64, train_size: int = 64, val_size: int = 16,
                 num_classes: int = 3, max_objects: int = 3, seed: int = 0) -> DetectionData:
    """Generated shapes in COCO format: written once at ``root`` (:func:`generate_coco_shapes`), then read back."""
    root = Path(root)
    generate_coco_shapes(root, image_size=image_size, train_size=train_size, val_size=val_size,
                         num_classes=num_classes, max_objects=max_objects, seed=seed)
    return build_coco(train_ann=root / "annotations" / "instances_train.json", train_images=root / "train",
                      val_ann=root / "annotations" / "instances_val.json", val_images=root / "val",
                      image_size=image_size)


def build_coco(*, train_ann: str | Path, train_images: str | Path, val_ann: str | Path, val_images: str | Path,
               image_size: int = 64) -> DetectionData:
    """A real COCO download: ``instances_*.json`` and image folders of the two splits, resized to ``image_size``."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16:
        raise ValueError(f"data.image_size must be an integer >= 16, got {image_size!r}")
    train = CocoDetection(train_ann, train_images, image_size)
    val = CocoDetection(val_ann, val_images, image_size)
    if val.category_ids != train.category_ids:
        raise ValueError(f"{val.ann_file} and {train.ann_file} list different categories; use splits of one dataset")
    return DetectionData(train, val)
