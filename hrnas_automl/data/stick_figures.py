"""Seeded generated keypoint data: stick figures in COCO person-keypoints format.

Each JPEG holds 1-2 stick figures (random height, position, lean, arm and leg angles, facing the camera
or away) on a noisy gradient, limbs coloured by side so left and right are learnable. Half the figures
are partly covered by an occluder: their keypoints under it are labelled but not visible (v=1); keypoints
outside the image are unlabelled (v=0, x=y=0), as in COCO. Each annotation has the 17 COCO keypoints,
``num_keypoints``, the ``bbox`` of a body silhouette around the skeleton and ``area`` = its unoccluded
pixel count (COCO's area is the person's visible mask area; it sets the OKS scale). Layout, as COCO 2017::

    root/annotations/person_keypoints_{train2017,val2017}.json
    root/{train2017,val2017}/000000000001.jpg ...

The same seed writes the same bytes.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from hrnas_automl.data import _check_option, check_size
from hrnas_automl.data.coco_keypoints import KeypointData, build_coco_keypoints
from hrnas_automl.data.generated import add_noise, generated_folder, gradient_background

__all__ = ["COCO_KEYPOINTS", "COCO_SKELETON", "draw_figures", "write_stick_figures", "build_stick_figures"]

COCO_KEYPOINTS: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
)
# person_keypoints_val2017.json "skeleton" (1-based keypoint ids)
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9), (8, 10), (9, 11),
    (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)
_SPLITS = ("train2017", "val2017")
_LEFT, _RIGHT, _BODY = (255, 150, 0), (0, 170, 255), (240, 240, 240)


def _pose(rng: np.random.Generator) -> np.ndarray:
    """17 keypoints ``(17, 2)`` of a figure of height 1 (head top at y=0), x to the image right, facing the camera."""
    pts = np.zeros((17, 2))
    pts[0] = (0.0, 0.08)                          # nose
    pts[1], pts[2] = (0.025, 0.06), (-0.025, 0.06)  # eyes: the subject's left is the image right
    pts[3], pts[4] = (0.055, 0.07), (-0.055, 0.07)  # ears
    pts[5], pts[6] = (0.12, 0.2), (-0.12, 0.2)      # shoulders
    pts[11], pts[12] = (0.08, 0.52), (-0.08, 0.52)  # hips
    for side, (shoulder, elbow, wrist, hip, knee, ankle) in ((1, (5, 7, 9, 11, 13, 15)), (-1, (6, 8, 10, 12, 14, 16))):
        upper, fore = rng.uniform(-0.5, 2.8), rng.uniform(0.0, 2.0)  # arm angles from hanging down, outwards
        pts[elbow] = pts[shoulder] + 0.17 * np.array([side * math.sin(upper), math.cos(upper)])
        pts[wrist] = pts[elbow] + 0.15 * np.array([side * math.sin(upper + fore), math.cos(upper + fore)])
        thigh, shin = rng.uniform(-0.15, 0.6), rng.uniform(-0.9, 0.0)
        pts[knee] = pts[hip] + 0.23 * np.array([side * math.sin(thigh), math.cos(thigh)])
        pts[ankle] = pts[knee] + 0.23 * np.array([side * math.sin(thigh + shin), math.cos(thigh + shin)])
    return pts


def _figure(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, float]:
    """A posed figure's keypoints ``(17, 2)`` in image pixels (scaled, leaned, maybe facing away, placed) and its
    height."""
    pts = _pose(rng)
    if rng.random() < 0.3:  # facing away: the subject's left is now the image left
        pts[:, 0] = -pts[:, 0]
    lean = rng.uniform(-0.25, 0.25)
    rotation = np.array([[math.cos(lean), -math.sin(lean)], [math.sin(lean), math.cos(lean)]])
    pts = (pts - (0.0, 0.5)) @ rotation.T
    scale = rng.uniform(0.45, 0.9) * height
    centre = rng.uniform([0.2 * width, 0.35 * height], [0.8 * width, 0.65 * height])
    return pts * scale + centre, scale


def _silhouette(pts: np.ndarray, scale: float, head: float, height: int, width: int) -> np.ndarray:
    """The boolean ``(H, W)`` mask of a body around the skeleton: torso, limbs 0.08 of the height wide, head.

    COCO's area is the person's mask area; a body, not the thin sticks, gives OKS its usual scale.
    """
    mask = Image.new("1", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    draw.polygon([tuple(pts[i]) for i in (5, 6, 12, 11)], fill=1)  # shoulders and hips
    for a, b in COCO_SKELETON[:12]:
        draw.line([tuple(pts[a - 1]), tuple(pts[b - 1])], fill=1, width=max(1, round(0.08 * scale)))
    draw.ellipse([*(pts[0] - head), *(pts[0] + head)], fill=1)
    return np.asarray(mask, dtype=bool)


def draw_figures(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One image ``(H, W, 3) uint8`` and its people: ``keypoints`` (17, 3) x/y/v, ``bbox``, ``area``."""
    image = gradient_background(rng, height, width)
    paint = ImageDraw.Draw(image)
    people = []
    for _ in range(rng.integers(1, 3)):
        pts, scale = _figure(rng, height, width)
        stroke = max(2, round(0.02 * height))
        head = 0.065 * scale
        for a, b in COCO_SKELETON[:12]:  # limbs and torso; the face links are drawn as the head
            side = _LEFT if a % 2 == 0 and b % 2 == 0 else _RIGHT if a % 2 and b % 2 else _BODY
            paint.line([tuple(pts[a - 1]), tuple(pts[b - 1])], fill=side, width=stroke)
        paint.ellipse([*(pts[0] - head), *(pts[0] + head)], outline=_BODY, width=stroke)
        for eye, colour in ((1, _LEFT), (2, _RIGHT)):
            paint.ellipse([*(pts[eye] - stroke / 2), *(pts[eye] + stroke / 2)], fill=colour)
        silhouette = _silhouette(pts, scale, head, height, width)
        visible = np.full(17, 2.0)
        if rng.random() < 0.5:  # an occluder over part of the figure: keypoints under it are v=1
            extent = rng.uniform(0.2, 0.5, 2) * (pts.max(axis=0) - pts.min(axis=0))
            corner = pts[rng.integers(0, 17)] - rng.uniform(0.2, 0.8, 2) * extent  # covers that keypoint
            box = [*corner, *(corner + extent)]
            paint.rectangle(box, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
            under = np.all((pts >= corner) & (pts <= corner + extent), axis=1)
            visible[under] = 1.0
            occluder = Image.new("1", (width, height), 0)
            ImageDraw.Draw(occluder).rectangle(box, fill=1)
            visible_mask = silhouette & ~np.asarray(occluder)
        else:
            visible_mask = silhouette
        inside = np.all((pts >= 0) & (pts < (width, height)), axis=1)
        visible[~inside] = 0.0
        keypoints = np.concatenate([np.where(inside[:, None], pts, 0.0), visible[:, None]], axis=1)
        rows, cols = np.nonzero(silhouette)
        low, high = np.array([cols.min(), rows.min()]), np.array([cols.max() + 1, rows.max() + 1])
        people.append({"keypoints": keypoints, "bbox": [*low, *(high - low)],
                       "area": float(np.count_nonzero(visible_mask))})
    return add_noise(rng, image), people


def _round(values: Any) -> list[float]:
    return [round(float(v), 2) for v in values]


def _write_split(root: Path, split: str, seed_split: list[int], count: int, size: tuple[int, int],
                 first_id: int) -> None:
    rng = np.random.default_rng(seed_split)
    image_dir = root / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        image_id = first_id + index
        pixels, people = draw_figures(rng, *size)
        name = f"{image_id:012d}.jpg"
        Image.fromarray(pixels).save(image_dir / name, quality=95)
        images.append({"id": image_id, "file_name": name, "height": size[0], "width": size[1]})
        for number, person in enumerate(people):
            annotations.append({
                "id": 10 * image_id + number, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                "keypoints": _round(person["keypoints"].ravel()),
                "num_keypoints": int((person["keypoints"][:, 2] > 0).sum()),
                "bbox": _round(person["bbox"]), "area": person["area"], "segmentation": [],
            })
    content = {
        "info": {"description": "hrnas-automl generated stick figures", "version": "1.0"}, "licenses": [],
        "images": images, "annotations": annotations,
        "categories": [{"id": 1, "name": "person", "supercategory": "person", "keypoints": list(COCO_KEYPOINTS),
                        "skeleton": [list(link) for link in COCO_SKELETON]}],
    }
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / f"person_keypoints_{split}.json").write_text(json.dumps(content))


def _check_options(seed: int, train_size: int, val_size: int, image_size: int | Sequence[int]) -> tuple[int, int]:
    _check_option("stick-figures", "seed", seed, "a non-negative integer", lambda v: v >= 0, integer=True)
    _check_option("stick-figures", "train_size", train_size, "an integer >= 1", lambda v: v >= 1, integer=True)
    _check_option("stick-figures", "val_size", val_size, "an integer >= 1", lambda v: v >= 1, integer=True)
    return check_size("stick-figures", "image_size", image_size, minimum=32)


def write_stick_figures(root: str | Path, *, seed: int = 0, train_size: int = 64, val_size: int = 32,
                        image_size: int | Sequence[int] = 128) -> Path:
    """Write ``train2017``/``val2017`` images and their person_keypoints JSON files under ``root``."""
    size = _check_options(seed, train_size, val_size, image_size)
    root = Path(root)
    for split_index, (split, count) in enumerate(zip(_SPLITS, (train_size, val_size))):
        _write_split(root, split, [seed, split_index], count, size, first_id=1 + 1_000_000 * split_index)
    return root


def build_stick_figures(*, seed: int = 0, train_size: int = 64, val_size: int = 32,
                        image_size: int | Sequence[int] = 128, input_size: int | Sequence[int] = (64, 48),
                        sigma: float = 2.0, cache_dir: str | None = None) -> KeypointData:
    """Generate (once, cached) the stick figures and read them with the COCO keypoints loader.

    ``image_size`` is the generated images' size, ``input_size`` the network's person crop (H, W).
    """
    _check_options(seed, train_size, val_size, image_size)
    params = {"seed": seed, "train_size": train_size, "val_size": val_size, "image_size": image_size}
    root = generated_folder("stick-figures", params, lambda out: write_stick_figures(out, **params), cache_dir)
    return build_coco_keypoints(root=root, image_size=input_size, sigma=sigma)
