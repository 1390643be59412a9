"""COCO person keypoints, top-down: one sample per annotated person, cropped from its box.

Layout (https://cocodataset.org/#format-data)::

    root/annotations/person_keypoints_<split>.json
    root/<split>/<file_name of each image>

Every non-crowd person with at least one labelled keypoint becomes a sample (HRNet's
``_load_coco_keypoint_annotation_kernal`` keeps the same set); its box is clipped to the image, fixed to
the input's aspect ratio and padded (:mod:`hrnas_automl.data.topdown`), and its keypoints become
heatmaps at 1/4 of the input (:mod:`hrnas_automl.data.heatmaps`). Validation uses the ground-truth boxes
(HRNet's ``use_gt_bbox``), and OKS AP is scored against the split's JSON file itself.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from hrnas_automl.data import _check_option, check_size
from hrnas_automl.data.coco import check_annotation, coco_categories, coco_images, image_path, read_coco
from hrnas_automl.data.images import read_image
from hrnas_automl.data.heatmaps import encode_heatmaps
from hrnas_automl.data.topdown import apply_affine, box_to_center_size, crop_image, crop_matrix

__all__ = ["COCO_NUM_KEYPOINTS", "HEATMAP_STRIDE", "PersonInstance", "KeypointData", "TopDownDataset",
           "read_coco_keypoints", "build_coco_keypoints"]

COCO_NUM_KEYPOINTS = 17  # pycocotools' COCOeval kpt_oks_sigmas has one sigma per COCO keypoint
HEATMAP_STRIDE = 4  # heatmaps at 1/4 of the input, as HRNet (HR-NAS keypoint head, shared/docs/REFERENCE.md)


@dataclass(frozen=True)
class PersonInstance:
    """One annotated person: its image, clipped box ``[x, y, w, h]`` and keypoints ``(K, 3)`` of x, y, v."""

    image_path: Path
    image_id: int
    box: tuple[float, float, float, float]
    keypoints: np.ndarray


@dataclass(frozen=True)
class KeypointData:
    """Train/val person crops plus what the keypoint head and the OKS evaluation need."""

    train: Dataset
    val: Dataset
    num_keypoints: int
    keypoint_names: tuple[str, ...]
    input_shape: tuple[int, int, int]  # (C, H, W)
    val_annotations: Path  # the val JSON, ground truth of pycocotools' COCOeval


class TopDownDataset(Dataset):
    """Person crops; items are ``(3 x H x W image, target)``.

    ``target`` holds ``heatmaps`` (K, H/4, W/4), ``weights`` (K,), what maps predictions back to the
    image: ``center`` (2,), ``size`` (2,) of the crop box, ``image_id``, and the truth for PCK:
    ``keypoints`` (K, 3) in image pixels, ``box`` (4,) ``[x, y, w, h]``.
    """

    def __init__(self, instances: Sequence[PersonInstance], *, size: tuple[int, int], sigma: float) -> None:
        self.instances = tuple(instances)
        self.size = size
        self.sigma = sigma

    def __len__(self) -> int:
        return len(self.instances)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        person = self.instances[index]
        height, width = self.size
        center, box_size = box_to_center_size(person.box, width / height)
        matrix = crop_matrix(center, box_size, self.size)
        crop = crop_image(read_image(person.image_path, "RGB"), matrix, self.size)
        points = torch.from_numpy(apply_affine(matrix, person.keypoints[:, :2]))
        heatmaps, weights = encode_heatmaps(points, torch.from_numpy(person.keypoints[:, 2]),
                                            (height // HEATMAP_STRIDE, width // HEATMAP_STRIDE),
                                            stride=HEATMAP_STRIDE, sigma=self.sigma)
        pixels = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
        return pixels, {"heatmaps": heatmaps, "weights": weights, "center": torch.from_numpy(center),
                        "size": torch.from_numpy(box_size), "image_id": person.image_id,
                        "keypoints": torch.from_numpy(person.keypoints), "box": torch.tensor(person.box)}


def read_coco_keypoints(root: Path, split: str) -> tuple[list[PersonInstance], tuple[str, ...], Path]:
    """The split's person instances, the keypoint names and the annotation file; broken files raise one line."""
    what = "coco-keypoints data"
    path = root / "annotations" / f"person_keypoints_{split}.json"
    if not path.is_file():
        raise ValueError(f"{what}: annotation file {path} is missing; point data.root at the folder holding "
                         f"annotations/person_keypoints_<split>.json")
    content = read_coco(path, what, "person_keypoints")
    categories = coco_categories(content, path, what)
    people = [c for c in content["categories"] if c.get("keypoints")]
    if not people:
        raise ValueError(f"{what}: {path} has no category with keypoints; give a person_keypoints file, not "
                         f"instances_*.json")
    names = tuple(people[0]["keypoints"])
    if len(names) != COCO_NUM_KEYPOINTS:
        raise ValueError(f"{what}: {path} names {len(names)} keypoints; OKS AP uses COCO's per-keypoint sigmas, "
                         f"defined for the {COCO_NUM_KEYPOINTS} COCO keypoints, so give those")
    category = people[0]["id"]
    image_dir = root / split
    if not image_dir.is_dir():
        raise ValueError(f"{what}: image folder {image_dir} is missing; put the {split} images there")
    images = coco_images(content, path, what, sizes=False)
    files: dict[int, Path] = {}  # each image checked once, however many people it holds
    instances = []
    for number, ann in enumerate(content["annotations"]):
        x, y, w, h = check_annotation(ann, number, path, what, images, categories)
        if ann["category_id"] != category or ann.get("iscrowd", 0) or "keypoints" not in ann:
            continue
        keypoints = _keypoints(ann, number, path, len(names))
        if not (keypoints[:, 2] > 0).any():
            continue
        img = images[ann["image_id"]]
        if img["id"] not in files:
            files[img["id"]] = image_path(image_dir, img, path, what)
        x1, y1 = max(0.0, float(x)), max(0.0, float(y))  # HRNet's _load_coco_keypoint_annotation_kernal clipping
        x2, y2 = (min(img.get("width", np.inf) - 1.0, x1 + max(0.0, float(w) - 1)),
                  min(img.get("height", np.inf) - 1.0, y1 + max(0.0, float(h) - 1)))
        if x2 <= x1 or y2 <= y1:
            continue
        instances.append(PersonInstance(files[img["id"]], int(ann["image_id"]), (x1, y1, x2 - x1, y2 - y1),
                                        keypoints))
    if not instances:
        raise ValueError(f"{what}: {path} has no person with labelled keypoints; give annotations with "
                         f"num_keypoints > 0")
    return instances, names, path


def _keypoints(ann: dict[str, Any], number: int, path: Path, count: int) -> np.ndarray:
    """An annotation's ``keypoints`` as ``(count, 3)`` floats; a wrong length or type is one line."""
    values = ann["keypoints"]
    if not (isinstance(values, list) and len(values) == 3 * count
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
        found = f"{len(values) // 3} keypoints" if isinstance(values, list) else f"keypoints={values!r}"
        raise ValueError(f"coco-keypoints data: annotation {ann.get('id', f'#{number}')} in {path} has {found}, the "
                         f"category names {count}; give {3 * count} numbers x, y, v and fix the annotation")
    return np.asarray(values, dtype=np.float64).reshape(-1, 3)


def build_coco_keypoints(*, root: str | Path, image_size: int | Sequence[int] = (256, 192), sigma: float = 2.0,
                         train_split: str = "train2017", val_split: str = "val2017") -> KeypointData:
    """COCO person keypoints under ``root`` as top-down crops of ``image_size`` (H, W), heatmaps at 1/4."""
    size = check_size("coco-keypoints", "image_size", image_size, minimum=HEATMAP_STRIDE * 4)
    if size[0] % HEATMAP_STRIDE or size[1] % HEATMAP_STRIDE:
        raise ValueError(f"coco-keypoints data: option image_size={image_size!r} is invalid; both sides must be "
                         f"multiples of {HEATMAP_STRIDE}, e.g. [256, 192]")
    _check_option("coco-keypoints", "sigma", sigma, "a number > 0 (heatmap pixels)", lambda v: v > 0)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"coco-keypoints data: root {root} does not exist or is not a folder; set data.root to the "
                         f"COCO folder")
    train, names, _ = read_coco_keypoints(root, train_split)
    val, val_names, val_path = read_coco_keypoints(root, val_split)
    if val_names != names:
        raise ValueError(f"coco-keypoints data: {train_split} and {val_split} name different keypoints; use one "
                         f"dataset's splits")
    return KeypointData(train=TopDownDataset(train, size=size, sigma=float(sigma)),
                        val=TopDownDataset(val, size=size, sigma=float(sigma)), num_keypoints=len(names),
                        keypoint_names=names, input_shape=(3, *size), val_annotations=val_path)
