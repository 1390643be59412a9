"""Images per second of the real data loaders at 0, 1 and 2 worker processes (``train.num_workers``).

The loaders are the package's own (Cityscapes and ADE20K layouts, COCO keypoints, COCO detection, an image folder)
reading data the package generates in those formats into a temporary folder removed at the end. Each loader is
built by :func:`hrnas_automl.data.loading.make_loader` as training builds it (shuffled, persistent workers); a pass
starts the workers, then one timed pass is the steady state of an epoch. The worker counts alternate (0, 1, 2, 0,
1, 2, ...) for ``--rounds`` rounds and the figures are medians, so a load change on the shared machine hits every
count alike; the speed-up is the ratio of medians to 0 workers. The main process uses one torch thread, as a trial.
Each batch is followed by ``--step-ms`` of sleep, a training step on an accelerator (the CPU is free meanwhile, as
while a GPU computes; 0: pure loading): workers load the next batches during it, the training process cannot.
The JSON is written only with ``--out``.

    .venv/bin/python bench/loaders.py [--images 96] [--size 256] [--rounds 3] [--step-ms 0 100] [--out]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.common, run as a script too

from bench.common import add_out_argument, emit, interleaved, spread  # noqa: E402
from hrnas_automl.config import TrainSettings  # noqa: E402
from hrnas_automl.data.coco_detection import build_shapes as build_detection  # noqa: E402
from hrnas_automl.data.image_folder import build_image_folder  # noqa: E402
from hrnas_automl.data.loading import make_loader  # noqa: E402
from hrnas_automl.data.shapes import build_shapes, write_shape_folder  # noqa: E402
from hrnas_automl.data.stick_figures import build_stick_figures  # noqa: E402

WORKERS = (0, 1, 2)


def datasets(work: Path, images: int, size: int) -> dict[str, Dataset]:
    """The training split of every real loader, on ``images`` generated images of side ``size``."""
    cache = str(work / "cache")
    folder = write_shape_folder(work / "folder", count=images * 5 // 4, image_size=size)  # 1/5 goes to val
    return {
        "cityscapes": build_shapes(layout="cityscapes", train_size=images, val_size=1, image_size=size,
                                   cache_dir=cache).train,
        "ade20k": build_shapes(layout="ade20k", train_size=images, val_size=1, image_size=size,
                               cache_dir=cache).train,
        "coco_keypoints": build_stick_figures(train_size=images, val_size=1, image_size=size,
                                              input_size=[size, size * 3 // 4], cache_dir=cache).train,
        "coco_detection": build_detection(root=work / "detection", train_size=images, val_size=1,
                                          image_size=size).train,
        "image_folder": build_image_folder(root=folder, image_size=size, val_fraction=0.2).train,
    }


def measure(dataset: Dataset, batch_size: int, rounds: int, step_s: float) -> dict:
    """Images/s of one steady-state pass over ``dataset`` at each worker count, interleaved over ``rounds``, with
    ``step_s`` seconds of sleep after each batch."""
    loaders = {w: make_loader(dataset, TrainSettings(batch_size=batch_size, num_workers=w), shuffle=True)
               for w in WORKERS}
    for loader in loaders.values():
        for _ in loader:  # start the workers (persistent), as a training run's first epoch does
            pass

    def one_pass(workers: int) -> Callable[[int], None]:
        def run(_round: int) -> None:
            for _ in loaders[workers]:
                time.sleep(step_s)
        return run

    times = interleaved({str(w): one_pass(w) for w in WORKERS}, rounds)
    n = len(dataset)  # type: ignore[arg-type]
    rates = {w: [n / t for t in times[str(w)]] for w in WORKERS}
    medians = {w: statistics.median(rates[w]) for w in WORKERS}
    return {"images": n, "images_per_s": {str(w): spread(rates[w]) for w in WORKERS},
            "speedup_vs_0_workers": {str(w): round(medians[w] / medians[0], 2) for w in WORKERS}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96, help="generated training images per dataset")
    parser.add_argument("--size", type=int, default=256, help="generated image side (keypoint crops: size x 3/4)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved passes per worker count")
    parser.add_argument("--step-ms", type=float, nargs="+", default=[0.0, 100.0],
                        help="accelerator step per batch (a sleep), one measurement each")
    add_out_argument(parser, "loaders")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="loaders_bench_") as scratch:
        data = datasets(Path(scratch), args.images, args.size)
        results = {f"step_{step:g}ms": {name: measure(dataset, args.batch_size, args.rounds, step / 1000)
                                         for name, dataset in data.items()} for step in args.step_ms}
    emit({"what": "images/s of one steady-state pass (persistent workers started), median of interleaved rounds; "
                  "step_Nms: N ms of sleep per batch (an accelerator step)",
          "cores": os.cpu_count(), "machine": platform.machine(), "torch": torch.__version__,
          "load_average_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
          "images": args.images, "size": args.size, "batch_size": args.batch_size, "rounds": args.rounds,
          "results": results}, args)


if __name__ == "__main__":
    main()
