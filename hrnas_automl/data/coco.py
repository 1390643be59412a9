"""What the two COCO loaders (detection, keypoints) share: the annotation file read and every entry checked, so
a broken file is one line naming the file, the entry and the fix, never a bare ``KeyError`` or a silently
skipped annotation; image paths that cannot leave the image folder; image files checked against the JSON.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hrnas_automl.data.images import check_image

__all__ = ["read_coco", "coco_images", "coco_categories", "check_annotation", "image_path"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_coco(path: Path, what: str, kind: str) -> dict[str, Any]:
    """The COCO JSON object at ``path``: ``images``, ``annotations`` and ``categories`` lists, ``images`` non-empty.

    ``what`` starts each error line (``"coco-keypoints data"``, ``"COCO detection"``), ``kind`` names the file
    expected (``"instances"``, ``"person_keypoints"``).
    """
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{what}: {path} is not valid JSON ({str(exc).splitlines()[0]}); give a COCO {kind}_*.json "
                         f"file") from None
    missing = [key for key in ("images", "annotations", "categories")
               if not isinstance(content, dict) or not isinstance(content.get(key), list)]
    if missing:
        raise ValueError(f"{what}: {path} is not a COCO {kind} file: it lacks the list(s) {', '.join(missing)}; "
                         f"it needs 'images', 'annotations' and 'categories'")
    if not content["images"]:
        raise ValueError(f"{what}: {path} lists no images; give a non-empty COCO {kind} file")
    return content


def _entries(content: dict[str, Any], key: str, path: Path, what: str, needs: dict[str, str]) -> list[dict]:
    """``content[key]`` after checking that each entry is an object with the ``needs`` keys (name -> check)."""
    checks = {"an integer": _is_int, "a positive integer": lambda v: _is_int(v) and v > 0,
              "a non-empty string": lambda v: isinstance(v, str) and bool(v)}
    for i, entry in enumerate(content[key]):
        if not isinstance(entry, dict):
            raise ValueError(f"{what}: {key}[{i}] in {path} is a {type(entry).__name__}, not an object; fix the JSON")
        for name, kind in needs.items():
            if not checks[kind](entry.get(name)):
                label = f"{key}[{i}]" + (f" (id {entry['id']!r})" if "id" in entry else "")
                problem = f"has no {name!r}" if name not in entry else f"has {name}={entry[name]!r}, not {kind}"
                raise ValueError(f"{what}: {label} in {path} {problem}; fix the JSON")
    return content[key]


def coco_images(content: dict[str, Any], path: Path, what: str, *, sizes: bool) -> dict[int, dict[str, Any]]:
    """``{id: image entry}``; each entry needs an int ``id`` and a ``file_name`` (and positive ``width`` and
    ``height`` if ``sizes``, else they are optional), ids unique."""
    needs = {"id": "an integer", "file_name": "a non-empty string"}
    if sizes:
        needs |= {"width": "a positive integer", "height": "a positive integer"}
    images: dict[int, dict[str, Any]] = {}
    for i, image in enumerate(_entries(content, "images", path, what, needs)):
        for side in ("width", "height"):
            if not sizes and side in image and not (_is_int(image[side]) and image[side] > 0):
                raise ValueError(f"{what}: images[{i}] (id {image['id']}) in {path} has {side}={image[side]!r}, "
                                 f"not a positive integer; fix the JSON")
        if image["id"] in images:
            raise ValueError(f"{what}: images[{i}] in {path} repeats image id {image['id']}; give each image its "
                             f"own id")
        images[image["id"]] = image
    return images


def coco_categories(content: dict[str, Any], path: Path, what: str) -> list[int]:
    """The sorted category ids (each an int, unique); an empty list is an error."""
    ids = [c["id"] for c in _entries(content, "categories", path, what, {"id": "an integer"})]
    if not ids:
        raise ValueError(f"{what}: {path} lists no categories; give a non-empty COCO file")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{what}: {path} repeats a category id ({sorted(ids)}); give each category its own id")
    return sorted(ids)


def check_annotation(ann: Any, i: int, path: Path, what: str, images: dict[int, Any], categories: list[int]
                     ) -> tuple[float, float, float, float]:
    """The ``bbox`` of annotation ``i`` after checking its ``image_id``, ``category_id`` and ``bbox``."""
    if not isinstance(ann, dict):
        raise ValueError(f"{what}: annotations[{i}] in {path} is a {type(ann).__name__}, not an object; fix the JSON")
    label = f"annotations[{i}]" + (f" (id {ann['id']})" if "id" in ann else "")
    for key in ("image_id", "category_id", "bbox"):
        if key not in ann:
            raise ValueError(f"{what}: {label} in {path} has no {key!r}; add it or remove the annotation")
    if ann["image_id"] not in images:
        raise ValueError(f"{what}: {label} in {path} refers to image id {ann['image_id']!r}, which is not in its "
                         f"images list; fix the image_id or remove the annotation")
    if ann["category_id"] not in categories:
        raise ValueError(f"{what}: {label} in {path} has category_id {ann['category_id']!r}, which is not among "
                         f"its categories {categories}; fix the category_id or add the category")
    box = ann["bbox"]
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                            and math.isfinite(v) for v in box)):
        raise ValueError(f"{what}: {label} in {path} has bbox {box!r}; give [x, y, width, height] as 4 finite numbers")
    return box[0], box[1], box[2], box[3]


def image_path(image_dir: Path, image: dict[str, Any], path: Path, what: str) -> Path:
    """The file of an image entry inside ``image_dir``, checked: it must stay inside the folder (no ``..``, no
    absolute path, no link out of it), open as an image, and have the entry's ``width`` x ``height`` if given."""
    folder = image_dir.resolve()
    try:
        file = (folder / image["file_name"]).resolve()
    except (OSError, ValueError):  # a NUL byte, a link loop
        file = Path("/")  # not inside: refused below
    if not file.is_relative_to(folder):
        raise ValueError(f"{what}: image id {image['id']} in {path} has file_name {image['file_name']!r}, which "
                         f"leads outside the image folder {image_dir}; give a path inside it")
    if not file.is_file():
        raise ValueError(f"{what}: image {image_dir / image['file_name']} of {path} is missing; add it or remove "
                         f"its entry")
    (width, height), _ = check_image(file)
    expected = (image.get("width", width), image.get("height", height))
    if (width, height) != expected:
        raise ValueError(f"{what}: image {file} is {width}x{height} but {path} says {expected[0]}x{expected[1]} "
                         f"(image id {image['id']}); its boxes would be misplaced: fix the width and height")
    return file
