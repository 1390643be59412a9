"""``hrnas-automl export SPACE (--arch ARCH | --from SOURCE) -o OUT/``: the architecture, its space arguments and
weights gathered from wherever they come from, then the export folder written
(:func:`~hrnas_automl.export.network.export_network`)."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hrnas_automl.export.network import DETECTOR, TOLERANCE, build_network, export_network
from hrnas_automl.export.sources import Source, read_source

__all__ = ["DETECTOR_CLASSES", "export"]

DETECTOR_CLASSES = 80  # the detector's classes when --space-arg num_classes does not say (COCO's)


def _source(arch_ref: str | None, source_ref: str | None) -> Source:
    if (arch_ref is None) == (source_ref is None):
        raise ValueError("give exactly one of --arch (preset:NAME or a JSON file) and --from (a run folder, a oneshot "
                         "search state, nni:EXPERIMENT[:TRIAL] or optuna:STORAGE:STUDY:NUMBER)")
    if source_ref is not None:
        return read_source(source_ref)
    from hrnas_automl.arch import load_arch

    space, arch = load_arch(str(arch_ref))
    return Source(space, arch, f"--arch {arch_ref}")


def export(space_name: str, *, output: str | Path, arch_ref: str | None = None, source_ref: str | None = None,
           space_args: Mapping[str, Any] | None = None, input_shape: Sequence[int] | None = None, seed: int = 0,
           threads: int | None = 1, tolerance: float = TOLERANCE, latency: bool = True,
           log: Callable[[str], None] = print) -> dict[str, Any]:
    """Export one architecture of ``space_name`` to the folder ``output``; returns its ``arch.json``.

    ``space_args`` (``--space-arg``) win over those the source recorded; ``head=detector`` exports the space's
    backbone head inside the detection task's FPN + FCOS detector (``num_classes`` its classes, default
    :data:`DETECTOR_CLASSES`), as a oneshot search's result always is. Without run weights the network is
    initialised from ``seed``.
    """
    from hrnas_automl.arch import resolve_space
    from hrnas_automl.registry import get_space

    source = _source(arch_ref, source_ref)
    spec = get_space(space_name)
    if source.space is not None and source.space != space_name:
        raise ValueError(f"{source.origin} is an architecture of {source.space}, not {space_name}; export it as "
                         f"`hrnas-automl export {source.space} ...`")
    args = {**source.space_args, **(space_args or {})}
    detector = dict(source.detector) if source.detector is not None else None
    if args.get("head") == DETECTOR or detector is not None:
        if "backbone" not in spec.heads:
            raise ValueError(f"space {space_name} has no backbone head for the detector (its heads: "
                             f"{', '.join(spec.heads)}); use a DetNAS space")
        args.pop("head", None)
        detector = {"num_classes": args.get("num_classes", DETECTOR_CLASSES), **(detector or {})}
    space = resolve_space(space_name, **args)
    shape = tuple(input_shape) if input_shape is not None else tuple(
        detector.get("input") or space.default_input if detector else space.default_input)
    net = build_network(space, source.arch, seed=seed, detector=detector, input_shape=shape)
    if source.state_dict is not None:
        try:
            net.load_state_dict(source.state_dict)
        except RuntimeError as exc:
            problem = str(exc).strip().splitlines()
            raise ValueError(f"the weights of {source.origin} do not fit the network built with space arguments "
                             f"{args} ({problem[1].strip() if len(problem) > 1 else problem[0]}); give the run's "
                             "space arguments with --space-arg (e.g. num_classes, head)") from None
    record = {"space": space_name, "space_args": {**args, **({"head": DETECTOR} if detector else {})},
              "head": DETECTOR if detector else args.get("head", spec.heads[0]), "arch": space.validate(source.arch),
              "source": source.origin, **({"detector": detector} if detector else {}),
              **({} if source.state_dict is not None else {"seed": seed})}
    weights = source.origin if source.state_dict is not None else None
    return export_network(net, output, input_shape=shape, record=record, weights_from=weights, tolerance=tolerance,
                          threads=threads, latency=latency, log=log)
