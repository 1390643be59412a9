"""Dense-task data: the generators write the real formats, seeded; the real loaders read them and reject broken
folders."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hrnas_automl.cli import main
from hrnas_automl.data.coco_keypoints import build_coco_keypoints
from hrnas_automl.data.segmentation import build_ade20k, build_cityscapes
from hrnas_automl.data.shapes import SHAPE_CLASSES, build_shapes, write_shapes
from hrnas_automl.data.stick_figures import COCO_KEYPOINTS, build_stick_figures, write_stick_figures


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("dense")
    return {"cityscapes": write_shapes(base / "cs", layout="cityscapes", seed=1, train_size=6, val_size=3),
            "ade20k": write_shapes(base / "ade", layout="ade20k", seed=1, train_size=6, val_size=3),
            "coco": write_stick_figures(base / "coco", seed=1, train_size=4, val_size=3, image_size=96)}


def test_cityscapes_layout_files_and_loader(folders: dict[str, Path]) -> None:
    root = folders["cityscapes"]
    images = sorted((root / "leftImg8bit" / "train").glob("*/*_leftImg8bit.png"))
    masks = sorted((root / "gtFine" / "train").glob("*/*_gtFine_labelTrainIds.png"))
    assert len(images) == len(masks) == 6
    data = build_cityscapes(root=root, num_classes=len(SHAPE_CLASSES), image_size=[32, 48])
    assert (len(data.train), len(data.val), data.input_shape) == (6, 3, (3, 32, 48))
    image, labels = data.train[0]
    assert image.shape == (3, 32, 48) and labels.shape == (32, 48) and labels.dtype == torch.int64
    assert set(labels.unique().tolist()) <= {0, 1, 2, 3, 255}


def test_both_layouts_give_the_same_labels(folders: dict[str, Path]) -> None:
    """ADE20K stores class + 1 and 0 for void; its loader's reduce_zero_label maps it back to the train ids."""
    ade_mask = np.asarray(Image.open(next((folders["ade20k"] / "ADEChallengeData2016" / "annotations"
                                           / "training").glob("*.png"))))
    assert ade_mask.min() >= 0 and ade_mask.max() <= len(SHAPE_CLASSES)  # 0 = other, 1..4 = classes
    cs = build_cityscapes(root=folders["cityscapes"], num_classes=4, image_size=64)
    ade = build_ade20k(root=folders["ade20k"], num_classes=4, image_size=64)
    # the two layouts order files differently (by city, by number): compare the sets of masks
    cs_masks = sorted(cs.train[i][1].numpy().tobytes() for i in range(len(cs.train)))
    ade_masks = sorted(ade.train[i][1].numpy().tobytes() for i in range(len(ade.train)))
    assert cs_masks == ade_masks
    counted = sum(int((cs.train[i][1] == 255).sum()) for i in range(len(cs.train)))
    assert counted > 0  # some void pixels were generated and survive both conventions


def test_generators_are_seeded(folders: dict[str, Path], tmp_path: Path) -> None:
    again = write_shapes(tmp_path / "cs", layout="cityscapes", seed=1, train_size=6, val_size=3)
    assert _digest(again) == _digest(folders["cityscapes"])
    other = write_shapes(tmp_path / "cs2", layout="cityscapes", seed=2, train_size=6, val_size=3)
    assert _digest(other) != _digest(folders["cityscapes"])
    coco = write_stick_figures(tmp_path / "coco", seed=1, train_size=4, val_size=3, image_size=96)
    assert _digest(coco) == _digest(folders["coco"])


def test_coco_json_is_person_keypoints_format(folders: dict[str, Path]) -> None:
    content = json.loads((folders["coco"] / "annotations" / "person_keypoints_val2017.json").read_text())
    assert content["categories"][0]["keypoints"] == list(COCO_KEYPOINTS)
    files = {p.name for p in (folders["coco"] / "val2017").glob("*.jpg")}
    assert {img["file_name"] for img in content["images"]} == files
    visibilities = []
    for ann in content["annotations"]:
        keypoints = np.asarray(ann["keypoints"]).reshape(17, 3)
        assert ann["num_keypoints"] == int((keypoints[:, 2] > 0).sum())
        x, y, w, h = ann["bbox"]
        labelled = keypoints[keypoints[:, 2] > 0, :2]
        assert (labelled >= [x - 1, y - 1]).all() and (labelled <= [x + w + 1, y + h + 1]).all()
        assert 0 < ann["area"] <= w * h + 1
        visibilities.extend(keypoints[:, 2].tolist())
    assert {1.0, 2.0} <= set(visibilities)  # both occluded and visible keypoints occur


def test_coco_loader_gives_crops_heatmaps_and_weights(folders: dict[str, Path]) -> None:
    data = build_coco_keypoints(root=folders["coco"], image_size=[64, 48], train_split="train2017")
    assert data.num_keypoints == 17 and data.input_shape == (3, 64, 48)
    image, target = data.train[0]
    assert image.shape == (3, 64, 48)
    assert target["heatmaps"].shape == (17, 16, 12) and target["weights"].shape == (17,)
    labelled = target["keypoints"][:, 2] > 0
    assert torch.equal(target["weights"] > 0, labelled)  # every labelled keypoint lies in its padded crop


def test_generated_kinds_read_back_through_the_real_loaders(tmp_path: Path) -> None:
    seg = build_shapes(layout="ade20k", seed=3, train_size=4, val_size=2, image_size=32, cache_dir=str(tmp_path))
    assert (len(seg.train), seg.num_classes) == (4, 4)
    folders = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]  # hidden: the folder's lock file
    assert len(folders) == 1 and (folders[0] / "ADEChallengeData2016").is_dir()
    again = build_shapes(layout="ade20k", seed=3, train_size=4, val_size=2, image_size=32, cache_dir=str(tmp_path))
    assert torch.equal(seg.val[1][1], again.val[1][1])
    assert [p for p in tmp_path.iterdir() if not p.name.startswith(".")] == folders  # cached
    keypoints = build_stick_figures(seed=3, train_size=3, val_size=2, image_size=64, input_size=32,
                                    cache_dir=str(tmp_path))
    assert keypoints.val_annotations.name == "person_keypoints_val2017.json" and len(keypoints.val) >= 2


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_broken_segmentation_folders_get_one_line_errors(folders: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"split folder .*leftImg8bit/test is missing"):
        build_cityscapes(root=folders["cityscapes"], val_split="test")
    root = _copy(folders["cityscapes"], tmp_path / "orphan")
    next((root / "leftImg8bit" / "val").glob("*/*.png")).unlink()
    with pytest.raises(ValueError, match=r"mask .*_gtFine_labelTrainIds.png has no image in .*; add the image"):
        build_cityscapes(root=root)
    root = _copy(folders["ade20k"], tmp_path / "lonely")
    next((root / "ADEChallengeData2016" / "annotations" / "training").glob("*.png")).unlink()
    with pytest.raises(ValueError, match=r"image .*\.jpg has no mask"):
        build_ade20k(root=root)
    data = build_cityscapes(root=folders["cityscapes"], num_classes=2, image_size=32)
    with pytest.raises(ValueError, match="set data.num_classes"):
        [data.train[i] for i in range(len(data.train))]
    with pytest.raises(ValueError, match=r"root .*nowhere does not exist"):
        build_cityscapes(root=tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"option image_size=\[32\] is invalid"):
        build_cityscapes(root=folders["cityscapes"], image_size=[32])


def test_broken_coco_folders_get_one_line_errors(folders: dict[str, Path], tmp_path: Path) -> None:
    root = _copy(folders["coco"], tmp_path / "nokp")
    path = root / "annotations" / "person_keypoints_val2017.json"
    content = json.loads(path.read_text())
    del content["categories"][0]["keypoints"]
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match="has no category with keypoints; give a person_keypoints file"):
        build_coco_keypoints(root=root)
    content["categories"][0]["keypoints"] = list(COCO_KEYPOINTS[:5])
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match="names 5 keypoints; OKS AP uses COCO's per-keypoint sigmas"):
        build_coco_keypoints(root=root)
    root = _copy(folders["coco"], tmp_path / "noimage")
    next((root / "train2017").glob("*.jpg")).unlink()
    with pytest.raises(ValueError, match=r"image .*\.jpg of .* is missing"):
        build_coco_keypoints(root=root)
    with pytest.raises(ValueError, match=r"annotation file .*person_keypoints_test2017.json is missing"):
        build_coco_keypoints(root=folders["coco"], val_split="test2017")
    with pytest.raises(ValueError, match="multiples of 4"):
        build_coco_keypoints(root=folders["coco"], image_size=[66, 48])


def test_make_data_cli_writes_both_datasets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["make-data", "segmentation", "--out", str(tmp_path / "seg"), "--layout", "ade20k",
                 "--train-size", "2", "--val-size", "1", "--image-size", "32"]) == 0
    assert len(build_ade20k(root=tmp_path / "seg", num_classes=4).val) == 1
    assert main(["make-data", "keypoints", "--out", str(tmp_path / "kp"), "--train-size", "2", "--val-size", "1"]) == 0
    assert build_coco_keypoints(root=tmp_path / "kp").num_keypoints == 17
    assert main(["make-data", "keypoints", "--out", str(tmp_path / "kp")]) == 2
    assert "is not empty" in capsys.readouterr().err
