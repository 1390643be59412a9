"""Writing an export folder: the network of an architecture (with a run's weights or a seeded initialisation), its
inference form, ``model.onnx`` checked under ONNX Runtime, a ``torch.export`` program (TorchScript where the
network does not export), the weights and ``arch.json``.

``arch.json`` is written last, after every check passed: a folder without it is not an export (:func:`load` refuses
it); every file is written whole or not at all, and the folder is held for the run
(:class:`~hrnas_automl.files.OutputLock`).
"""
from __future__ import annotations

import io
import statistics
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hrnas_automl.export.fold import FoldReport, inference_form
from hrnas_automl.export.loader import ARCH_FILE
from hrnas_automl.export.onnx import OPSET, flat_outputs, ort_session, run_onnx, to_onnx

__all__ = ["DETECTOR", "ExportError", "build_network", "max_difference", "interleaved_latency", "export_network"]

DETECTOR = "detector"  # the head of an export that wraps a space's backbone head in the FPN + FCOS detector
FORMS = {"folded": "the folded network (hrnas_automl.export.load)",
         "onnxruntime": "model.onnx under ONNX Runtime"}  # the exported forms a user may ship, as the output names them
TOLERANCE = 1e-4  # max |difference| relative to each output's largest |value|: float32 reordering stays far below


class ExportError(ValueError):
    """An exported form does not compute what the PyTorch network computes (above the tolerance)."""


def build_network(space: Any, arch: Mapping[str, Any], *, seed: int = 0, detector: Mapping[str, Any] | None = None,
                  input_shape: Sequence[int] | None = None) -> nn.Module:
    """The frozen network of ``arch`` in ``space`` (a :class:`~hrnas_automl.arch.Space`), initialised from ``seed``;
    with ``detector`` (``num_classes``, ``fpn_channels``, ``head_depth``) the space's backbone head inside the FPN +
    FCOS detector of the detection task, built for ``input_shape``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if detector is None:
            return space.freeze(arch)
        from hrnas_automl.tasks.detection import Detector, check_detector_options

        options = {k: v for k, v in detector.items() if k in ("fpn_channels", "head_depth")}
        backbone = space.with_args(head="backbone").freeze(arch)
        return Detector(backbone, int(detector["num_classes"]), tuple(input_shape or space.default_input),
                        **check_detector_options(options))


def max_difference(expected: Any, got: Any) -> tuple[float, float]:
    """(max |difference| over all outputs, the largest of each output's max |difference| relative to its largest
    |value|): RANet's first exit's logits are 10^4 times smaller than its last's, so each output has its own scale."""
    pairs = list(zip(flat_outputs(expected), flat_outputs(got), strict=True))
    diffs = [float((a - b).abs().max()) for a, b in pairs]
    scales = [float(a.abs().max()) for a, _ in pairs]
    return max(diffs), max(d / s if s > 0 else d for d, s in zip(diffs, scales))


def _check(what: str, expected: Any, got: Any, tolerance: float) -> float:
    diff, relative = max_difference(expected, got)
    if not relative <= tolerance:
        raise ExportError(f"{what} differs from the PyTorch network: max abs difference {diff:.3g} ({relative:.3g} of "
                          f"an output's scale, tolerance {tolerance:g}); the export was not written")
    return diff


def interleaved_latency(runs: Mapping[str, Callable[[], Any]], *, rounds: int = 5, repeats: int = 5,
                        warmup: int = 2, threads: int | None = 1) -> dict[str, dict[str, float]]:
    """Median and spread (min, max) in ms of each of ``runs`` (one forward pass each), measured interleaved: every
    round runs each ``repeats`` times in turn, so a load that comes and goes hits all of them alike."""
    from hrnas_automl.tasks.training import torch_threads

    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch_threads(threads), torch.no_grad():
        for run in runs.values():
            for _ in range(warmup):
                run()
        for _ in range(rounds):
            for name, run in runs.items():
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    run()
                    times[name].append((time.perf_counter() - t0) * 1000.0)
    return {name: {"median": statistics.median(t), "min": min(t), "max": max(t)} for name, t in times.items()}


@dataclass(frozen=True)
class _Program:
    kind: str  # torch.export | torchscript
    file: str
    dynamic_batch: bool
    not_exported: str | None  # why torch.export failed (with a dynamic batch, or at all: TorchScript)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _program(folded: nn.Module, x: torch.Tensor, folder: Path) -> tuple[_Program, nn.Module]:
    """``model.pt2`` (``torch.export``, dynamic batch where it exports so, else this batch size) or, where the
    network does not export, ``model.ts`` (TorchScript trace + freeze); with the module read back from it."""
    from hrnas_automl.files import atomic_write

    errors = []
    for dynamic in (True, False):
        shapes = ({0: torch.export.Dim("batch", min=1, max=1024)},) if dynamic else None  # by position: any name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.export.export(folded, (x,), dynamic_shapes=shapes, strict=False)
            buffer = io.BytesIO()
            torch.export.save(program, buffer)
        except Exception as exc:  # noqa: BLE001 - any export failure is recorded and the next form tried
            errors.append(_one_line(exc))
            continue
        atomic_write(folder / "model.pt2", lambda handle: handle.write(buffer.getvalue()))
        loaded = torch.export.load(str(folder / "model.pt2")).module()
        return _Program("torch.export", "model.pt2", dynamic, errors[0] if errors else None), loaded
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.freeze(torch.jit.trace(folded, (x,), strict=False))
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    atomic_write(folder / "model.ts", lambda handle: handle.write(buffer.getvalue()))
    return _Program("torchscript", "model.ts", True, errors[0]), torch.jit.load(str(folder / "model.ts"))


def export_network(net: nn.Module, folder: str | Path, *, input_shape: Sequence[int], record: Mapping[str, Any],
                   weights_from: str | None, tolerance: float = TOLERANCE, threads: int | None = 1,
                   latency: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write the export folder of ``net`` (module docstring) and return its ``arch.json``.

    Args:
        net: the frozen network with its weights (the run's, or an initialisation).
        folder: the output folder (created; held for the run).
        input_shape: (C, H, W); the exports take any batch of it.
        record: what ``arch.json`` says of the network's origin (space, space_args, arch, source, ...).
        weights_from: where the weights come from (None: a random initialisation; said in the output).
        tolerance: largest difference of the folded network, the ONNX Runtime run and the program against the
            PyTorch network, relative to each output's largest |value|.
        threads: torch and ONNX Runtime threads for the latency figures.
        latency: measure eager, folded and ONNX Runtime latency (interleaved).

    Raises:
        ExportError: a form differs from the PyTorch network above ``tolerance`` (nothing is marked exported).
    """
    from hrnas_automl.cost import count_cost
    from hrnas_automl.files import OutputLock, save_torch_atomic, write_json_atomic

    folder = Path(folder)
    shape = tuple(int(s) for s in input_shape)
    net = net.eval()
    with OutputLock(folder, "export"):
        (folder / ARCH_FILE).unlink(missing_ok=True)  # from here on the folder is not a finished export
        x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            expected, expected_one = net(x), net(x[:1])
        folded, report = inference_form(net)
        with torch.no_grad():
            _check("the folded network", expected, folded(x), tolerance)
        save_torch_atomic(net.state_dict(), folder / "weights.pt")
        names = to_onnx(folded, shape, folder / "model.onnx")
        session = ort_session(folder / "model.onnx", threads)
        onnx_diff = _check("ONNX Runtime", expected, run_onnx(session, x), tolerance)
        _check("ONNX Runtime at batch 1", expected_one, run_onnx(session, x[:1]), tolerance)
        program, loaded = _program(folded, x, folder)
        for stale in {"model.pt2", "model.ts"} - {program.file}:
            (folder / stale).unlink(missing_ok=True)
        with torch.no_grad():
            program_diff = _check(f"the {program.kind} program", expected, loaded(x), tolerance)
        cost = count_cost(net, shape)
        arch = {**record, "input": list(shape), "outputs": names,
                "cost": {"macs": cost.macs, "params": cost.params},
                "weights": {"file": "weights.pt", "from": weights_from or "random initialisation"},
                "inference_form": _fold_record(report),
                "onnx": {"file": "model.onnx", "opset": OPSET, "exporter": "torchscript (dynamo=False)",
                         "dynamic_batch": True, "max_abs_diff": onnx_diff},
                "program": {"kind": program.kind, "file": program.file, "dynamic_batch": program.dynamic_batch,
                            "max_abs_diff": program_diff,
                            **({"torch_export_error": program.not_exported} if program.not_exported else {})},
                "tolerance": tolerance}
        if latency:
            one = x[:1]
            figures = interleaved_latency({"eager": lambda: net(one), "folded": lambda: folded(one),
                                           "onnxruntime": lambda: session.run(None, {"input": one.numpy()})},
                                          threads=threads)
            arch["cost"]["latency_ms"] = {name: round(f["median"], 4) for name, f in figures.items()}
            arch["cost"]["latency"] = {"threads": threads, "batch": 1, "interleaved": True,
                                       "spread_ms": {n: [round(f["min"], 4), round(f["max"], 4)]
                                                     for n, f in figures.items()}}
            # the form to ship: the faster of the two exported forms, both checked equal to the network above
            arch["fastest"] = min(("folded", "onnxruntime"), key=lambda form: figures[form]["median"])
        write_json_atomic(arch, folder / ARCH_FILE, indent=2)
    log(f"exported {record.get('space')} to {folder}; weights: "
        f"{weights_from or 'random initialisation (the source saved no weights)'}")
    log(f"  inference form: {report.batchnorm_folded} BatchNorms folded into convolutions, {report.batchnorm_left} "
        f"left, {report.dropout_removed} dropout layers removed")
    log(f"  model.onnx (opset {OPSET}, dynamic batch): ONNX Runtime max abs difference {onnx_diff:.3g}")
    log(f"  {program.file} ({program.kind}{', dynamic batch' if program.dynamic_batch else ', batch 2 only'}): max abs "
        f"difference {program_diff:.3g}" + (f"; torch.export failed: {program.not_exported}"
                                            if program.not_exported else ""))
    log(f"  MACs {cost.macs:,}, params {cost.params:,} at {'x'.join(map(str, shape))}")
    if latency:
        ms = arch["cost"]["latency_ms"]
        log(f"  latency ms (batch 1, {threads} thread(s), interleaved medians): eager {ms['eager']:.2f}, folded "
            f"{ms['folded']:.2f}, ONNX Runtime {ms['onnxruntime']:.2f}; fastest: {FORMS[arch['fastest']]} "
            f"({ms[arch['fastest']] / ms['eager']:.2f}x eager)")
    return arch


def _fold_record(report: FoldReport) -> dict[str, int]:
    return {"batchnorm_folded": report.batchnorm_folded, "batchnorm_left": report.batchnorm_left,
            "dropout_removed": report.dropout_removed}
