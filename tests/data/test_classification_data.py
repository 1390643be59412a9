"""Datasets: the generated set is seeded and balanced, digits are split stratified, image folders index right."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from hrnas_automl.data import ClassificationData, build_classification_data
from hrnas_automl.data.image_folder import ImageFolderDataset


def _stack(dataset) -> tuple[torch.Tensor, list[int]]:
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([x for x, _ in items]), [y for _, y in items]


# --- build_classification_data ------------------------------------------------------------------

def test_unknown_kind_lists_valid_kinds():
    with pytest.raises(ValueError,
                       match=r"unknown classification data kind 'cifar'; use one of: synthetic, digits, folder"):
        build_classification_data("cifar")


def test_unknown_option_lists_valid_options():
    with pytest.raises(ValueError, match=r"unknown option\(s\) imagesize for data kind 'synthetic'; "
                                         r"valid options: num_classes, image_size"):
        build_classification_data("synthetic", imagesize=16)


def test_missing_required_option():
    with pytest.raises(ValueError, match=r"data kind 'folder' needs option\(s\) root"):
        build_classification_data("folder")


@pytest.mark.parametrize("kind, options, name", [
    ("synthetic", {"num_classes": 1}, "num_classes"),
    ("synthetic", {"image_size": "32"}, "image_size"),
    ("synthetic", {"noise": -0.1}, "noise"),
    ("synthetic", {"noise": [0.5, 0.1]}, "noise"),
    ("synthetic", {"window": 0}, "window"),
    ("synthetic", {"cycles": [4]}, "cycles"),
    ("digits", {"val_fraction": 1.0}, "val_fraction"),
    ("digits", {"channels": 0}, "channels"),
])
def test_bad_option_values_name_the_option(kind, options, name):
    with pytest.raises(ValueError, match=rf"{kind} data: option {name}=.* is invalid; it must be"):
        build_classification_data(kind, **options)


# --- synthetic ----------------------------------------------------------------------------------

def test_synthetic_shapes_dtypes_labels():
    data = build_classification_data("synthetic", num_classes=5, image_size=16, channels=2, train_size=50,
                                     val_size=20)
    assert isinstance(data, ClassificationData)
    assert (len(data.train), len(data.val)) == (50, 20)
    assert data.num_classes == 5 and len(data.classes) == 5 and len(set(data.classes)) == 5
    assert data.input_shape == (2, 16, 16)
    image, label = data.train[0]
    assert image.dtype == torch.float32 and image.shape == (2, 16, 16)
    assert type(label) is int
    _, labels = _stack(data.train)
    assert set(labels) == set(range(5))
    assert torch.isfinite(_stack(data.val)[0]).all()


def test_synthetic_same_seed_identical_different_seed_different():
    a = build_classification_data("synthetic", train_size=64, val_size=32, seed=3)
    b = build_classification_data("synthetic", train_size=64, val_size=32, seed=3)
    c = build_classification_data("synthetic", train_size=64, val_size=32, seed=4)
    for split in ("train", "val"):
        xa, ya = _stack(getattr(a, split))
        xb, yb = _stack(getattr(b, split))
        xc, yc = _stack(getattr(c, split))
        assert torch.equal(xa, xb) and ya == yb
        assert not torch.equal(xa, xc)


def test_synthetic_train_and_val_are_different_draws():
    data = build_classification_data("synthetic", train_size=64, val_size=64)
    x_train, _ = _stack(data.train)
    x_val, _ = _stack(data.val)
    assert not torch.equal(x_train, x_val)
    # No val image is a copy of a train image.
    distances = torch.cdist(x_val.flatten(1), x_train.flatten(1))
    assert distances.min() > 1.0


def test_synthetic_val_does_not_depend_on_train_size():
    small = build_classification_data("synthetic", train_size=10, val_size=32)
    large = build_classification_data("synthetic", train_size=100, val_size=32)
    assert torch.equal(_stack(small.val)[0], _stack(large.val)[0])


def test_synthetic_classes_balanced():
    data = build_classification_data("synthetic", num_classes=7, train_size=100, val_size=30)
    for split, size in ((data.train, 100), (data.val, 30)):
        counts = Counter(_stack(split)[1])
        assert sum(counts.values()) == size
        assert max(counts.values()) - min(counts.values()) <= 1 and len(counts) == 7


def test_synthetic_classes_differ_in_pattern():
    # Without noise, the mean amplitude spectrum (blind to phase and position) differs between every two classes.
    data = build_classification_data("synthetic", num_classes=4, channels=1, train_size=200, val_size=4, noise=0.0)
    x, y = _stack(data.train)
    labels = torch.tensor(y)
    spectra = [torch.fft.fft2(x[labels == c, 0] - 0.5).abs().mean(0) for c in range(4)]
    # Measured: every ratio >= 1.26; with shuffled labels (no class signal) 0.3-0.55.
    for c in range(4):
        for other in range(c + 1, 4):
            assert (spectra[c] - spectra[other]).norm() > 0.9 * spectra[c].norm()


def test_synthetic_noise_range_gives_every_image_its_own_level():
    # A tiny patch leaves the image almost pure noise, so each image's pixel std is its own noise level.
    data = build_classification_data("synthetic", channels=1, train_size=300, val_size=4, noise=[0.05, 0.4],
                                     window=0.03)
    stds = _stack(data.train)[0].flatten(1).std(dim=1)
    assert stds.min() > 0.04 and stds.max() < 0.42
    assert (stds < 0.1).sum() > 20 and (stds > 0.35).sum() > 20  # spread over the range, not one level


def test_synthetic_window_and_cycles_set_patch_size_and_frequency():
    def class0(**options):
        data = build_classification_data("synthetic", num_classes=2, channels=1, image_size=32, train_size=60,
                                         val_size=2, noise=0.0, **options)
        x, y = _stack(data.train)
        return x[torch.tensor(y) == 0, 0] - 0.5

    small, large = class0(window=0.08), class0(window=0.22)
    assert (small.abs() > 0.05).float().mean() < 0.5 * (large.abs() > 0.05).float().mean()
    # Class 0 is a horizontal-frequency grating (orientation 0): its mean spectrum peaks at `cycles[0]` per width.
    for cycles in ([3, 5], [7, 9]):
        spectrum = torch.fft.fft2(class0(cycles=cycles)).abs().mean(0)[0, 1:16]
        assert spectrum.argmax().item() + 1 == cycles[0]


# --- digits -------------------------------------------------------------------------------------

def test_digits_split_shapes_and_range():
    data = build_classification_data("digits", image_size=16, channels=3, val_fraction=0.2, seed=0)
    assert len(data.train) + len(data.val) == 1797
    assert len(data.val) == 360
    assert data.num_classes == 10 and data.classes == tuple(str(d) for d in range(10))
    assert data.input_shape == (3, 16, 16)
    x, y = _stack(data.val)
    assert x.shape == (360, 3, 16, 16) and x.dtype == torch.float32
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.9
    assert torch.equal(x[:, 0], x[:, 2])  # grayscale repeated to every channel
    counts = Counter(y)
    assert sorted(counts) == list(range(10))
    assert min(counts.values()) >= 34  # stratified: every class gets its ~20%
    train_counts = Counter(_stack(data.train)[1])
    assert all(abs(counts[c] / (counts[c] + train_counts[c]) - 0.2) < 0.02 for c in range(10))


def test_digits_seed_changes_split():
    a = build_classification_data("digits", image_size=8, seed=0)
    b = build_classification_data("digits", image_size=8, seed=0)
    c = build_classification_data("digits", image_size=8, seed=1)
    assert torch.equal(_stack(a.val)[0], _stack(b.val)[0])
    assert not torch.equal(_stack(a.val)[0], _stack(c.val)[0])


# --- image folder -------------------------------------------------------------------------------

COLOURS = {"cat": (255, 0, 0), "dog": (0, 255, 0), "emu": (0, 0, 255)}


def _write_images(folder: Path, count: int, colour: tuple[int, int, int], ext: str = ".png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (12 + i, 10), colour).save(folder / f"img{i}{ext}")


def _make_folder(root: Path, per_class: int = 5) -> Path:
    for name, colour in COLOURS.items():
        _write_images(root / name, per_class, colour)
    return root


def test_folder_flat_layout_is_split_stratified(tmp_path):
    root = _make_folder(tmp_path / "imgs")
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / ".hidden.png").write_bytes(b"junk")
    Image.new("L", (9, 9), 128).save(root / "emu" / "UPPER.JPG")  # extension case and grayscale
    (root / ".cache").mkdir()
    data = build_classification_data("folder", root=root, image_size=8, val_fraction=0.4, seed=0)
    assert data.classes == ("cat", "dog", "emu") and data.num_classes == 3
    assert data.input_shape == (3, 8, 8)
    assert len(data.train) + len(data.val) == 16
    x, y = _stack(data.val)
    assert len(data.val) == 7 and set(y) == {0, 1, 2}  # ceil(0.4 * 16), every class represented
    assert x.shape[1:] == (3, 8, 8) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    # Labels follow the folders: every red image is a cat, green a dog.
    for image, label in zip(x, y):
        if label in (0, 1):
            assert torch.allclose(image.mean((1, 2)), torch.tensor(COLOURS[data.classes[label]]) / 255.0)


def test_folder_split_is_seeded(tmp_path):
    root = _make_folder(tmp_path, per_class=6)
    a = build_classification_data("folder", root=root, seed=0)
    b = build_classification_data("folder", root=root, seed=0)
    c = build_classification_data("folder", root=root, seed=1)
    assert a.val.paths == b.val.paths
    assert a.val.paths != c.val.paths


def test_folder_train_val_layout(tmp_path):
    _make_folder(tmp_path / "train", per_class=4)
    _make_folder(tmp_path / "val", per_class=2)
    data = build_classification_data("folder", root=tmp_path, image_size=6)
    assert data.classes == ("cat", "dog", "emu")
    assert (len(data.train), len(data.val)) == (12, 6)
    assert all(p.parent.parent.name == "val" for p in data.val.paths)
    assert Counter(_stack(data.val)[1]) == Counter({0: 2, 1: 2, 2: 2})


def test_folder_train_val_class_mismatch(tmp_path):
    _make_folder(tmp_path / "train", per_class=2)
    _write_images(tmp_path / "val" / "cat", 1, COLOURS["cat"])
    _write_images(tmp_path / "val" / "dog", 1, COLOURS["dog"])
    with pytest.raises(ValueError, match=r"train/ has classes cat, dog, emu but val/ has cat, dog; "
                                         r"give both the same class subfolders"):
        build_classification_data("folder", root=tmp_path)


def test_folder_missing_root(tmp_path):
    with pytest.raises(ValueError, match=r"image folder .*nowhere does not exist or is not a folder; set data.root"):
        build_classification_data("folder", root=tmp_path / "nowhere")


def test_folder_without_class_subfolders(tmp_path):
    _write_images(tmp_path, 3, (0, 0, 0))
    with pytest.raises(ValueError, match=r"has no class subfolders; put each class's images in"):
        build_classification_data("folder", root=tmp_path)


def test_folder_with_one_class(tmp_path):
    _write_images(tmp_path / "cat", 3, COLOURS["cat"])
    with pytest.raises(ValueError, match=r"has only 1 class \(cat\); classification needs at least 2"):
        build_classification_data("folder", root=tmp_path)


def test_folder_class_without_images(tmp_path):
    _make_folder(tmp_path)
    (tmp_path / "fox").mkdir()
    (tmp_path / "fox" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"class folder .*fox has no images; add .*\.png.* files or remove"):
        build_classification_data("folder", root=tmp_path)


def test_folder_too_small_to_split(tmp_path):
    _make_folder(tmp_path, per_class=1)
    with pytest.raises(ValueError, match=r"cannot split 3 images of 3 classes with val_fraction=0.2 .*; add images"):
        build_classification_data("folder", root=tmp_path)


def test_folder_corrupt_image_is_refused_when_the_dataset_is_built(tmp_path):
    """A bad file stops the build with its name, not an epoch later (or never, in the drop_last remainder)."""
    _make_folder(tmp_path / "train", per_class=2)
    _make_folder(tmp_path / "val", per_class=1)
    bad = tmp_path / "val" / "dog" / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.jpg .*; replace or delete the file"):
        build_classification_data("folder", root=tmp_path)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".gif", ".webp", ".bmp"])
def test_folder_truncated_image_is_refused_when_the_dataset_is_built(tmp_path, ext):
    _make_folder(tmp_path, per_class=5)
    noisy = Image.effect_noise((40, 40), 60).convert("RGB")  # incompressible: a cut loses pixels, not padding
    noisy.save(tmp_path / "emu" / f"whole{ext}")
    data = build_classification_data("folder", root=tmp_path)  # every format, whole, passes the check
    assert len(data.train) + len(data.val) == 16
    cut = tmp_path / "emu" / f"cut{ext}"
    whole = (tmp_path / "emu" / f"whole{ext}").read_bytes()
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(ValueError, match=rf"cannot read image .*cut\{ext} \(.*\); replace or delete the file"):
        build_classification_data("folder", root=tmp_path)


def test_image_folder_dataset_needs_one_label_per_path(tmp_path):
    with pytest.raises(ValueError, match=r"one label per path, got 2 paths and 1 labels"):
        ImageFolderDataset([tmp_path / "a.png", tmp_path / "b.png"], [0], 8)


def test_image_folder_dataset_resizes_and_normalises(tmp_path):
    Image.new("RGB", (20, 7), (255, 128, 0)).save(tmp_path / "a.webp", lossless=True)
    Image.new("P", (5, 5)).save(tmp_path / "b.gif")
    dataset = ImageFolderDataset([tmp_path / "a.webp", tmp_path / "b.gif"], [1, 0], 4)
    image, label = dataset[0]
    assert image.shape == (3, 4, 4) and label == 1
    assert torch.allclose(image.mean((1, 2)), torch.tensor([1.0, 128 / 255, 0.0]), atol=1e-6)
    assert dataset[1][0].shape == (3, 4, 4)
