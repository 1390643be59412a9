"""The loader factory: worker settings from train:, seeded batches for a given worker count, the order of before at
0 workers, and the real datasets cross into worker processes (pickled, as spawn and forkserver send them)."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from hrnas_automl.config import TrainSettings
from hrnas_automl.data.coco_detection import build_shapes as build_detection_shapes
from hrnas_automl.data.image_folder import build_image_folder
from hrnas_automl.data.loading import make_loader, pins_memory
from hrnas_automl.data.shapes import build_shapes, write_shape_folder
from hrnas_automl.data.stick_figures import build_stick_figures
from hrnas_automl.trial.config import parse_trial_config


class Noisy(Dataset):
    """Items that draw from torch's RNG (an augmentation): equal batches need equally seeded workers."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([float(index)]) + torch.rand(1)


def _passes(loader: DataLoader, n: int = 3) -> list[torch.Tensor]:
    return [torch.cat(list(loader)) for _ in range(n)]


def test_same_seed_same_batches_with_workers_and_every_pass_reshuffled() -> None:
    settings = TrainSettings(batch_size=4, seed=3, num_workers=2)
    first, again = (_passes(make_loader(Noisy(), settings, shuffle=True)) for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], first[1])  # a new order and new draws each pass
    other = _passes(make_loader(Noisy(), TrainSettings(batch_size=4, seed=4, num_workers=2), shuffle=True))
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize("persistent", [True, False])
@pytest.mark.parametrize("shuffle", [True, False])
def test_the_order_and_torchs_stream_do_not_depend_on_workers(persistent: bool, shuffle: bool) -> None:
    """Persistent workers draw no base seed on later passes (from the loader's generator, or from torch's global RNG
    when it has none); the loader draws one in its place."""
    data = TensorDataset(torch.arange(20))

    def order(workers: int) -> tuple[torch.Tensor, torch.Tensor]:
        settings = TrainSettings(batch_size=4, num_workers=workers, persistent_workers=persistent)
        loader = make_loader(data, settings, shuffle=shuffle, skip_draws=int(shuffle))
        torch.manual_seed(0)
        batches = torch.cat([x for _ in range(3) for (x,) in loader])
        return batches, torch.rand(3)  # what dropout would draw after the passes

    (batches, after), (batches_2, after_2) = order(0), order(2)
    assert torch.equal(batches, batches_2) and torch.equal(after, after_2)


def test_in_process_loading_keeps_the_order_of_before() -> None:
    """0 workers: the same draws as the DataLoader the tasks built before the factory (generator seeded with
    train.seed, one number dropped per pass), so seeded results stay bit for bit."""
    data = TensorDataset(torch.arange(30))
    settings = TrainSettings(batch_size=8, seed=5)
    before = DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(5))
    expected = []
    for _ in range(3):
        torch.empty((), dtype=torch.int64).random_(generator=before.generator)
        expected += [x for (x,) in before]
    loader = make_loader(data, settings, shuffle=True, skip_draws=1)
    assert loader.num_workers == 0 and not loader.pin_memory
    assert torch.equal(torch.cat(expected), torch.cat([x for _ in range(3) for (x,) in loader]))


def test_loader_settings_come_from_the_train_block() -> None:
    config = parse_trial_config({"space": "detnas-small", "task": "classification", "data": {"kind": "synthetic"},
                                 "train": {"num_workers": 2, "pin_memory": True, "persistent_workers": False,
                                           "prefetch_factor": 4}})
    loader = make_loader(TensorDataset(torch.arange(4)), config.train)
    assert (loader.num_workers, loader.pin_memory, loader.persistent_workers, loader.prefetch_factor) == (
        2, True, False, 4)
    assert not pins_memory(TrainSettings(device="cpu"))  # unset: pinned only when batches go to CUDA
    with pytest.raises(ValueError, match=r"train.num_workers must be >= 0, got -1"):
        TrainSettings(num_workers=-1)
    with pytest.raises(ValueError, match=r"train.prefetch_factor must be >= 1, got 0"):
        TrainSettings(prefetch_factor=0)


def test_the_real_datasets_cross_into_worker_processes(tmp_path: Path) -> None:
    """Cityscapes and ADE20K layouts, COCO keypoints, COCO detection and an image folder: each dataset pickles
    (what spawn / forkserver workers receive) to one giving the same items."""
    datasets = {
        "cityscapes": build_shapes(layout="cityscapes", train_size=2, val_size=1, image_size=32,
                                   cache_dir=tmp_path / "cache").train,
        "ade20k": build_shapes(layout="ade20k", train_size=2, val_size=1, image_size=32,
                               cache_dir=tmp_path / "cache").train,
        "coco-keypoints": build_stick_figures(train_size=2, val_size=1, image_size=64, input_size=[32, 24],
                                              cache_dir=tmp_path / "cache").train,
        "coco-detection": build_detection_shapes(root=tmp_path / "det", train_size=2, val_size=1,
                                                 image_size=32).train,
        "folder": build_image_folder(root=write_shape_folder(tmp_path / "folder", count=12, image_size=16),
                                     image_size=16).train,
    }
    for name, dataset in datasets.items():
        copy = pickle.loads(pickle.dumps(dataset))
        for mine, theirs in zip(dataset[0], copy[0]):
            if isinstance(mine, dict):
                assert mine.keys() == theirs.keys(), name
                assert all(torch.equal(torch.as_tensor(mine[k]), torch.as_tensor(theirs[k])) for k in mine), name
            else:
                assert torch.equal(torch.as_tensor(mine), torch.as_tensor(theirs)), name
