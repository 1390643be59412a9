"""The GPU check (issue 19): every training and evaluation path on one device, a few minutes in all, one line per
check with its figure, exit status 1 if any check failed. Run through ``bench/gpu_check.sh``:

    bench/gpu_check.sh                      # cuda, AMP bf16 (fp16 where bf16 is missing), every GPU for torchrun
    bench/gpu_check.sh --device cpu         # the CPU fallback (AMP off, 2 gloo processes for torchrun)
    bench/gpu_check.sh --out                # also write bench/results/gpu_check_<device>.json

Checks: each task trains 2 epochs on generated data (the trial path: trainer, evaluator, early-exit thresholds),
the DetNAS supernet trains under ``torchrun --nproc-per-node <gpus>`` (the CLI, DDP, one path per step on every
rank), the one-shot search scores candidates after BN re-statistics, the fine-grained search trains, prunes and
recalibrates, and latency is timed (CUDA events on a GPU). Scratch files live in a temporary folder, removed after.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.common, run as a script too

from bench.common import add_out_argument, emit  # noqa: E402

# (task, space, space_args, data, train overrides): small generated data (the CPU fallback must fit in 10 minutes on
# 2 shared cores), 2 epochs each
_HRNAS = {"setting": "tiny", "transformer": False}
TASKS: list[tuple[str, str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ("classification", "hrnas", _HRNAS,
     {"kind": "synthetic", "num_classes": 4, "image_size": 32, "train_size": 32, "val_size": 16}, {}),
    ("segmentation", "hrnas", _HRNAS, {"kind": "shapes", "image_size": 32, "train_size": 32, "val_size": 16}, {}),
    ("keypoints", "lite-hrnet", {}, {"kind": "stick-figures", "train_size": 32, "val_size": 16, "image_size": 64,
                                     "input_size": [32, 24]}, {}),
    ("detection", "detnas-small", {}, {"kind": "shapes", "train_size": 32, "val_size": 8, "image_size": 64,
                                       "num_classes": 3}, {"lr": 0.01}),
    ("early-exit", "ranet", {}, {"kind": "synthetic", "num_classes": 4, "image_size": 32, "train_size": 32,
                                 "val_size": 16}, {}),
]


def _amp(device: str, amp: str | None) -> str:
    """The AMP mode of the check: as asked, else bf16 on a GPU that has it (fp16 otherwise) and off on the CPU."""
    if amp is not None:
        return amp
    import torch

    if not device.startswith("cuda"):
        return "off"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def check_task(task: str, space: str, space_args: dict[str, Any], data: dict[str, Any], train: dict[str, Any],
               device: str, amp: str, tmp: Path) -> tuple[str, dict[str, Any]]:
    """One trial of ``task``: 2 epochs on generated data, latency on the device."""
    from hrnas_automl.trial.config import parse_trial_config
    from hrnas_automl.trial.run import resolve_arch, run_trial

    if task == "detection":  # COCO-format files on disk
        data = {**data, "root": str(tmp / f"shapes-{task}")}
    config = parse_trial_config({"space": space, "space_args": space_args, "task": task, "data": data,
                                 "train": {"epochs": 2, "batch_size": 8, "lr": 0.05, "seed": 0, "device": device,
                                           "amp": amp, "channels_last": device.startswith("cuda"), **train},
                                 "latency": {"repeats": 5, "warmup": 2},
                                 "threads": None if device.startswith("cuda") else 1})  # 2 shared cores: 1 each
    metrics = run_trial(config, resolve_arch(config)).metrics
    figure = (f"{config.train.epochs} epochs in {metrics['trial_s']:.1f} s, default {metrics['default']:.3f}, "
              f"train_loss {metrics['train_loss']:.3f}, latency {metrics['latency_ms']:.2f} ms")
    return figure, {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def check_supernet(device: str, amp: str, gpus: int, tmp: Path) -> tuple[str, dict[str, Any]]:
    """``hrnas-automl oneshot train`` under ``torchrun --nproc-per-node gpus`` (gloo on the CPU)."""
    import yaml

    from hrnas_automl.nni.experiment import free_port

    config = {"space": "detnas-small", "detector": {"fpn_channels": 32}, "checkpoint": str(tmp / "supernet.pt"),
              "data": {"kind": "shapes", "root": str(tmp / "shapes-supernet"), "train_size": 32, "val_size": 8,
                       "image_size": 64},
              "train": {"steps": 8, "batch_size": 4 * gpus, "lr": 0.02, "checkpoint_every": 4, "device": device,
                        "amp": amp, "sync_bn": gpus > 1}}
    path = tmp / "supernet.yml"
    path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(gpus), "--master-port",
           str(free_port()), "-m", "hrnas_automl", "oneshot", "train", "--config", str(path)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise RuntimeError(f"torchrun exited {done.returncode}: {lines[-1] if lines else ''}")
    final = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    steps = int(config["train"]["steps"])
    return (f"{gpus} process(es), {steps} steps of {config['train']['batch_size']} images in {seconds:.1f} s "
            f"(with start-up), loss {final['loss']:.3f}"), {"seconds": seconds, **final}


def check_search(device: str, amp: str, tmp: Path) -> tuple[str, dict[str, Any]]:
    """The one-shot search on the supernet just trained: 4 candidates, BN re-statistics and mAP on the device."""
    from hrnas_automl.oneshot.config import SearchConfig
    from hrnas_automl.oneshot.search import run_search

    t0 = time.perf_counter()
    result = run_search(SearchConfig.model_validate({
        "supernet": str(tmp / "supernet.pt"), "state": str(tmp / "search" / "state.json"), "strategy": "random",
        "candidates": 4, "bn_batches": 2, "batch_size": 8, "runtime": {"device": device, "amp": amp}}))
    seconds = time.perf_counter() - t0
    return (f"{len(result.evaluated)} candidates in {seconds:.1f} s, best map {result.best['map']:.4f}",
            {"seconds": seconds, "best_map": result.best["map"]})


def check_fine_grained(device: str, amp: str, tmp: Path) -> tuple[str, dict[str, Any]]:
    """The fine-grained search: train with the penalty, prune, recalibrate BN and validate, on the device."""
    from hrnas_automl.config import TrainSettings
    from hrnas_automl.strategies.fine_grained import FineGrainedSettings, fine_grained_search

    t0 = time.perf_counter()
    result = fine_grained_search("hrnas", "segmentation", "shapes",
                                 {"image_size": 32, "train_size": 32, "val_size": 16},
                                 FineGrainedSettings(lam=10.0, warmup=0),
                                 train=TrainSettings(epochs=2, batch_size=8, device=device, amp=amp),
                                 space_args={"setting": "tiny", "transformer": False})
    seconds = time.perf_counter() - t0
    return (f"2 epochs in {seconds:.1f} s, MACs {result.supernet_macs / 1e6:.1f} M -> "
            f"{result.metrics['macs'] / 1e6:.1f} M, miou {result.metrics['default']:.3f}"),\
        {"seconds": seconds, "supernet_macs": result.supernet_macs, **result.metrics}


def check_latency(device: str) -> tuple[str, dict[str, Any]]:
    """Latency of the widest HR-NAS tiny network at 128x128, batch 1 and 16 (CUDA events on a GPU)."""
    from hrnas_automl.arch import choices_of, freeze
    from hrnas_automl.cost.latency import measure_latency

    args = {**_HRNAS, "head": "segmentation", "num_classes": 4}
    model = freeze("hrnas", {k: max(v) for k, v in choices_of("hrnas", **args).items()}, **args)
    threads = None if device.startswith("cuda") else 1  # 2 shared cores: one thread times steadier
    ms = {batch: measure_latency(model, (3, 128, 128), batch_size=batch, warmup=2, repeats=5, device=device,
                                 threads=threads)
          for batch in (1, 16)}
    return f"widest hrnas tiny at 128x128: {ms[1]:.2f} ms (batch 1), {ms[16]:.2f} ms (batch 16)", \
        {"batch1_ms": ms[1], "batch16_ms": ms[16]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    parser.add_argument("--amp", choices=("off", "bf16", "fp16"), default=None,
                        help="default: bf16 on a GPU that has it (else fp16), off on the CPU")
    parser.add_argument("--gpus", type=int, default=None,
                        help="torchrun processes for the supernet (default: every GPU; 2 on the CPU)")
    add_out_argument(parser, "gpu_check_{device}")
    args = parser.parse_args()

    import torch

    from hrnas_automl.runtime.device import resolve_device

    try:
        resolve_device(args.device, "--device")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    amp = _amp(args.device, args.amp)
    gpus = args.gpus or (torch.cuda.device_count() if args.device.startswith("cuda") else 2)
    where = torch.cuda.get_device_name(resolve_device(args.device)) if args.device.startswith("cuda") else "cpu"
    print(f"gpu_check on {args.device} ({where}), amp {amp}, torch {torch.__version__}", flush=True)
    results: dict[str, Any] = {"device": args.device, "name": where, "amp": amp, "torch": torch.__version__,
                               "checks": {}}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hrnas-gpu-check-") as folder:
        tmp = Path(folder)
        checks: list[tuple[str, Callable[[], tuple[str, dict[str, Any]]]]] = [
            *[(f"train {task} ({space})", lambda t=(task, space, sa, data, tr): check_task(*t, args.device, amp, tmp))
              for task, space, sa, data, tr in TASKS],
            (f"supernet torchrun x{gpus}", lambda: check_supernet(args.device, amp, gpus, tmp)),
            ("oneshot search", lambda: check_search(args.device, amp, tmp)),
            ("fine-grained search", lambda: check_fine_grained(args.device, amp, tmp)),
            ("latency", lambda: check_latency(args.device)),
        ]
        for name, run in checks:
            t0 = time.perf_counter()
            try:
                figure, figures = run()
                ok = True
            except Exception as exc:  # a check fails on anything; the line says what
                figure, figures, ok = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", {}, False
                traceback.print_exc(file=sys.stderr)
            print(f"{'PASS' if ok else 'FAIL'}  {name:<32} {figure}  [{time.perf_counter() - t0:.1f} s]", flush=True)
            results["checks"][name] = {"ok": ok, "figure": figure, **figures}
    failed = [name for name, row in results["checks"].items() if not row["ok"]]
    results["wall_s"] = round(time.perf_counter() - t_all, 1)
    print(f"{len(results['checks']) - len(failed)}/{len(results['checks'])} checks passed in {results['wall_s']} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    if args.out:
        emit(results, args)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
