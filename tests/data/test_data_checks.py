"""Bad data files stop the dataset build with one line naming the file, the entry and the fix: truncated images,
masks of the wrong size, COCO paths leading out of the image folder, broken COCO entries (issue 17)."""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from hrnas_automl.data.coco_detection import build_coco, generate_coco_shapes
from hrnas_automl.data.coco_keypoints import build_coco_keypoints
from hrnas_automl.data.images import check_image
from hrnas_automl.data.segmentation import build_ade20k, build_cityscapes
from hrnas_automl.data.shapes import write_shapes
from hrnas_automl.data.stick_figures import write_stick_figures


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("made")
    return {"cityscapes": write_shapes(base / "cs", seed=1, train_size=3, val_size=2, image_size=32),
            "ade20k": write_shapes(base / "ade", layout="ade20k", seed=1, train_size=3, val_size=2, image_size=32),
            "keypoints": write_stick_figures(base / "kp", seed=1, train_size=3, val_size=2, image_size=64),
            "detection": generate_coco_shapes(base / "det", train_size=3, val_size=2, image_size=32, seed=1)}


def _copy(made: dict[str, Path], kind: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(made[kind], tmp_path / kind))


def _truncate(path: Path) -> None:
    content = path.read_bytes()
    path.write_bytes(content[: len(content) * 3 // 4])


# --- segmentation -----------------------------------------------------------------------------------------------

def test_mask_of_another_size_than_its_image_is_refused(made: dict[str, Path], tmp_path: Path) -> None:
    root = _copy(made, "cityscapes", tmp_path)
    mask = sorted((root / "gtFine" / "val").glob("*/*.png"))[1]
    Image.new("L", (40, 32)).save(mask)
    with pytest.raises(ValueError, match=rf"mask {mask} is 40x32 but its image .*_leftImg8bit.png is 32x32 "
                                         r"\(width x height\); give each image a mask of its size"):
        build_cityscapes(root=root, num_classes=4, image_size=32)


def test_truncated_segmentation_files_and_rgb_masks_are_refused_at_build(made: dict[str, Path], tmp_path: Path
                                                                          ) -> None:
    root = _copy(made, "ade20k", tmp_path)
    image = sorted((root / "ADEChallengeData2016" / "images" / "validation").glob("*.jpg"))[-1]
    _truncate(image)
    with pytest.raises(ValueError, match=rf"cannot read image {image} \(.*truncated.*\); replace or delete"):
        build_ade20k(root=root, num_classes=4, image_size=32)
    shutil.copy(made["ade20k"] / image.relative_to(root), image)
    mask = sorted((root / "ADEChallengeData2016" / "annotations" / "training").glob("*.png"))[0]
    Image.new("RGB", (32, 32)).save(mask)
    with pytest.raises(ValueError, match=rf"mask {mask} has mode RGB; label masks are single-channel"):
        build_ade20k(root=root, num_classes=4, image_size=32)


def test_check_image_reads_only_the_header_of_a_complete_file(made: dict[str, Path], monkeypatch) -> None:
    """A complete PNG or JPEG is judged by its header and ending: nothing is decoded."""
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self))
    png = next((made["cityscapes"] / "leftImg8bit" / "train").glob("*/*.png"))
    jpg = next((made["keypoints"] / "train2017").glob("*.jpg"))
    assert check_image(png) == ((32, 32), "RGB") and check_image(jpg) == ((64, 64), "RGB")
    assert decoded == []


# --- COCO detection and keypoints ---------------------------------------------------------------------------------

def _detection(root: Path) -> Any:
    return build_coco(train_ann=root / "annotations" / "instances_train.json", train_images=root / "train",
                      val_ann=root / "annotations" / "instances_val.json", val_images=root / "val", image_size=32)


def _keypoints(root: Path) -> Any:
    return build_coco_keypoints(root=root, image_size=[32, 32])


LOADERS: dict[str, tuple[str, Callable[[Path], Any]]] = {
    "detection": ("annotations/instances_val.json", _detection),
    "keypoints": ("annotations/person_keypoints_val2017.json", _keypoints),
}


def _edit(root: Path, kind: str, change: Callable[[dict[str, Any]], None]) -> Path:
    path = root / LOADERS[kind][0]
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))
    return path


def _set(where: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(content: dict[str, Any]) -> None:
        content[where][0][key] = value
    return change


def _drop(where: str, key: str) -> Callable[[dict[str, Any]], None]:
    def change(content: dict[str, Any]) -> None:
        del content[where][0][key]
    return change


OUTSIDE = "../../outside.jpg"  # from <root>/val: <root>/../outside.jpg, beside the dataset folder
BAD_COCO = [
    ("traversal", _set("images", "file_name", OUTSIDE),
     r"images? id \d+ in .* has file_name '\.\./\.\./outside\.jpg', which leads outside the image folder .*; give a "
     r"path inside it"),
    ("absolute", _set("images", "file_name", "/etc/passwd"),
     r"has file_name '/etc/passwd', which leads outside the image folder"),
    ("NUL byte", _set("images", "file_name", "a\x00.png"), r"has file_name 'a\\x00\.png', which leads outside"),
    ("no bbox", _drop("annotations", "bbox"),
     r"annotations\[0\] \(id \d+\) in .* has no 'bbox'; add it or remove the annotation"),
    ("bad bbox", _set("annotations", "bbox", [1, 2, "3"]),
     r"annotations\[0\] \(id \d+\) in .* has bbox \[1, 2, '3'\]; give \[x, y, width, height\] as 4 finite numbers"),
    ("unknown category", _set("annotations", "category_id", 99),
     r"annotations\[0\] \(id \d+\) in .* has category_id 99, which is not among its categories \[1.*\]; fix the "
     r"category_id or add the category"),
    ("unknown image", _set("annotations", "image_id", 424242),
     r"annotations\[0\] \(id \d+\) in .* refers to image id 424242, which is not in its images list; fix"),
    ("no file_name", _drop("images", "file_name"), r"images\[0\] \(id \d+\) in .* has no 'file_name'; fix the JSON"),
    ("string id", _set("images", "id", "7"), r"images\[0\] \(id '7'\) in .* has id='7', not an integer; fix the JSON"),
    ("wrong width", _set("images", "width", 50),
     r"image .*\.(png|jpg) is \d+x\d+ but .* says 50x\d+ \(image id \d+\); its boxes would be misplaced"),
    ("no categories", lambda c: c.update(categories=[]), r"lists no categories; give a non-empty COCO file"),
    ("no images", lambda c: c.update(images=[]), r"lists no images; give a non-empty COCO"),
    ("not a list", lambda c: c.update(annotations={}), r"is not a COCO \w+ file: it lacks the list\(s\) annotations"),
    ("entry not an object", lambda c: c["annotations"].insert(0, 5), r"annotations\[0\] in .* is a int, not an object"),
    ("repeated image id", lambda c: c["images"].append(dict(c["images"][0])), r"repeats image id \d+; give each image"),
]


@pytest.mark.parametrize("kind", sorted(LOADERS))
@pytest.mark.parametrize(("change", "pattern"), [case[1:] for case in BAD_COCO], ids=[case[0] for case in BAD_COCO])
def test_bad_coco_entries_get_one_line_naming_file_and_entry(made: dict[str, Path], tmp_path: Path, kind: str,
                                                              change: Callable[[dict[str, Any]], None],
                                                              pattern: str) -> None:
    root = _copy(made, kind, tmp_path)
    (tmp_path / "outside.jpg").write_bytes((next(root.rglob("*.jpg"), None) or next(root.rglob("*.png"))).read_bytes())
    path = _edit(root, kind, change)
    with pytest.raises(ValueError, match=pattern) as error:
        LOADERS[kind][1](root)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_a_link_inside_the_image_folder_that_points_outside_is_refused(made: dict[str, Path], tmp_path: Path,
                                                                       kind: str) -> None:
    root = _copy(made, kind, tmp_path)
    path = root / LOADERS[kind][0]
    first = json.loads(path.read_text())["images"][0]["file_name"]
    image = next(p for p in root.rglob(first) if "val" in p.parent.name)
    outside = tmp_path / f"outside{image.suffix}"
    image.rename(outside)
    os.symlink(outside, image)
    with pytest.raises(ValueError, match=rf"has file_name '{first}', which leads outside the image folder"):
        LOADERS[kind][1](root)


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_truncated_coco_image_is_refused_at_build(made: dict[str, Path], tmp_path: Path, kind: str) -> None:
    root = _copy(made, kind, tmp_path)
    first = json.loads((root / LOADERS[kind][0]).read_text())["images"][0]["file_name"]
    image = next(p for p in root.rglob(first) if "val" in p.parent.name)
    _truncate(image)
    with pytest.raises(ValueError, match=rf"cannot read image .*{image.name} \(.*truncated.*\); replace or delete"):
        LOADERS[kind][1](root)


def test_valid_coco_folders_still_load(made: dict[str, Path]) -> None:
    assert len(_detection(made["detection"]).val) == 2
    assert len(_keypoints(made["keypoints"]).val) >= 2


def test_detection_split_without_any_box_is_refused(made: dict[str, Path], tmp_path: Path) -> None:
    root = _copy(made, "detection", tmp_path)
    _edit(root, "detection", lambda c: c.update(annotations=[]))
    with pytest.raises(ValueError, match=r"instances_val.json has no non-crowd box of positive size; give a split"):
        _detection(root)


def test_a_damaged_detection_shapes_stamp_means_writing_the_data_again(tmp_path: Path) -> None:
    """It was a bare 'Expecting value: line 1 column 1' on every run."""
    root = generate_coco_shapes(tmp_path / "det", train_size=2, val_size=1, image_size=32, seed=1)
    before = (root / "annotations" / "instances_train.json").read_bytes()
    (root / "shapes.json").write_text('{"train_size": 2, "val_')
    (root / "annotations" / "instances_train.json").write_text("{}")
    generate_coco_shapes(root, train_size=2, val_size=1, image_size=32, seed=1)
    assert (root / "annotations" / "instances_train.json").read_bytes() == before
    assert json.loads((root / "shapes.json").read_text())["train_size"] == 2
