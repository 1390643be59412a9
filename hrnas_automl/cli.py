"""``hrnas-automl``: list, describe, sample and cost spaces; run trials; run nnictl searches; tune with Optuna;
generate data.

Bad input exits with status 2 and one line naming the problem and the fix.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from hrnas_automl.arch import Space

__all__ = ["main"]


def _positive(text: str) -> int:
    """argparse type of counts (threads, trials, images): an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _budget(text: str) -> float:
    """argparse type of limits (--max-macs, --max-params, --max-latency-ms): a finite number, read by the parser of
    every config's budgets."""
    from hrnas_automl.config import parse_number

    try:
        number = parse_number("limit", text, allow_none=False)
    except ValueError:
        number = None
    if number is None:
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return number


def _space_args(pairs: list[str]) -> dict[str, Any]:
    args = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--space-arg {pair!r} must look like KEY=VALUE, e.g. num_classes=10")
        args[key] = yaml.safe_load(value)
    return args


def _size_text(space: Space) -> str:
    choices = space.choices
    counts = {len(v) for v in choices.values()}
    power = f"{counts.pop()}^{len(choices)} = " if len(counts) == 1 else ""
    return f"{power}{Decimal(space.size):.3g}"  # Decimal: sizes such as 17^268 (hrnas) overflow a float


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def _write_json(obj: Any, output: str | None) -> None:
    """``obj`` as indented JSON to the file ``output``, or to stdout without one."""
    text = json.dumps(obj, indent=2) + "\n"
    if output:
        from hrnas_automl.files import atomic_write

        try:
            atomic_write(output, lambda handle: handle.write(text.encode()))
        except OSError as exc:
            raise ValueError(f"cannot write {output} ({exc.strerror}); choose a writable path with -o") from None
    else:
        sys.stdout.write(text)


def _output_folder(path: str, flag: str) -> None:
    """Create the folder of the output file ``path`` before any work; one line naming ``flag`` if impossible."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{flag} {path}: cannot create its folder ({exc.strerror}); choose another path") from None


def _input_shape(text: str | None) -> tuple[int, ...] | None:
    """``--input CxHxW`` as a shape (None without it: nothing, not even torch, is imported for it)."""
    if text is None:
        return None
    from hrnas_automl.cost import parse_input_shape  # its module imports torch

    return parse_input_shape(text)


def _space(args: argparse.Namespace) -> Space:
    """The command's space (``args.space`` with its ``--space-arg`` s), resolved once."""
    from hrnas_automl.arch import resolve_space

    return resolve_space(args.space, **_space_args(args.space_arg))


def cmd_spaces(args: argparse.Namespace) -> None:
    from hrnas_automl.arch import resolve_space
    from hrnas_automl.registry import SPACES

    rows = []
    for name in SPACES.names():  # kept descriptions: nothing is imported or built (a plugin space is)
        space = resolve_space(name)
        rows.append({"name": name, "size": space.size, "size_text": _size_text(space),
                     "labels": len(space.choices), "heads": list(space.heads), "presets": space.presets,
                     "description": space.description})
    if args.json:
        _print_json(rows)
        return
    for r in rows:
        print(f"{r['name']:<16} {r['size_text']:<22} {r['labels']:>3} labels  {r['description']}")
        if r["presets"]:
            print(f"{'':<16} presets: {', '.join(r['presets'])}")


def cmd_describe(args: argparse.Namespace) -> None:
    space = _space(args)
    choices = space.choices
    if args.json:
        _print_json({"name": space.name, "description": space.description,
                     "default_input": list(space.default_input), "heads": list(space.heads), "size": space.size,
                     "choices": choices, "presets": space.presets})
        return
    print(f"{space.name}: {space.description}\nsize {_size_text(space)}, input "
          f"{'x'.join(map(str, space.default_input))}, heads {', '.join(space.heads)}")
    for label, values in choices.items():
        print(f"  {label:<20} {', '.join(map(str, values))}")


def cmd_sample(args: argparse.Namespace) -> None:
    from hrnas_automl.cost import cost_limit
    from hrnas_automl.strategies import RandomSearch

    space = _space(args)
    shape = _input_shape(args.input)
    limit = cost_limit(space, max_macs=args.max_macs, max_params=args.max_params, max_latency_ms=args.max_latency_ms,
                       input_shape=shape, threads=args.threads, backend=args.backend)
    arch = RandomSearch(space.choices, seed=args.seed, constraint=limit, max_attempts=args.max_attempts).ask()
    _print_json(arch)


def cmd_cost(args: argparse.Namespace) -> None:
    from hrnas_automl.arch import load_arch
    from hrnas_automl.cost import analytic_cost, count_cost

    space_of_arch, arch = load_arch(args.arch)
    if space_of_arch is not None and space_of_arch != args.space:
        raise ValueError(f"{args.arch} is an architecture of {space_of_arch}, not {args.space}")
    space = _space(args)
    shape = space.input_shape(_input_shape(args.input))
    arch = space.validate(arch)
    analytic = analytic_cost(space, arch, shape)
    net = space.freeze(arch)
    cost = count_cost(net, shape)
    out: dict[str, Any] = {"space": args.space, "input": list(shape), "macs": cost.macs, "params": cost.params,
                           "analytic": {"macs": analytic.macs, "params": analytic.params}}
    if args.latency:
        from hrnas_automl.cost.latency import measure_latency, predicted_latency

        out["latency_ms"] = measure_latency(net, shape, threads=args.threads, backend=args.backend)
        out["predicted_latency_ms"] = predicted_latency(space, arch, shape, threads=args.threads, backend=args.backend)
    if args.json:
        _print_json(out)
        return
    print(f"{args.space} at {'x'.join(map(str, shape))}   {'analytic':>15} {'ptflops':>15}")
    print(f"{'params':<20} {analytic.params:>15,} {cost.params:>15,}")
    print(f"{'MACs':<20} {analytic.macs:>15,} {cost.macs:>15,}")
    if args.latency:
        print(f"{'latency ms':<20} {out['predicted_latency_ms']:>15.2f} {out['latency_ms']:>15.2f}"
              "   (table prediction | measured)")


def cmd_export_space(args: argparse.Namespace) -> None:
    from hrnas_automl.nni.compat import to_nni_search_space

    _write_json(to_nni_search_space(_space(args).choices, strategies=args.strategies.split(",") if args.strategies
                                    else ()), args.output)


def cmd_export(args: argparse.Namespace) -> None:
    from hrnas_automl.cost import parse_input_shape
    from hrnas_automl.export.command import export

    export(args.space, output=args.output, arch_ref=args.arch, source_ref=args.source,
           space_args=_space_args(args.space_arg), input_shape=parse_input_shape(args.input) if args.input else None,
           seed=args.seed, threads=args.threads, tolerance=args.tolerance, latency=not args.no_latency)


def _holding(folder: str | None, what: str) -> AbstractContextManager[Any]:
    """Hold the output ``folder`` for this command (:class:`~hrnas_automl.files.OutputLock`: a second process
    given it is refused, naming this one); nothing without a folder, or on a rank but 0 under ``torchrun``."""
    from hrnas_automl.files import OutputLock
    from hrnas_automl.runtime import distributed

    return OutputLock(folder, what) if folder and distributed.is_main() else nullcontext()


def cmd_trial(args: argparse.Namespace) -> None:
    from hrnas_automl.runtime import distributed
    from hrnas_automl.runtime.device import runtime_of
    from hrnas_automl.trial import reporter, resolve_arch, run_trial
    from hrnas_automl.trial.config import load_trial_config

    config = load_trial_config(args.config)
    out = reporter()
    runtime_of(config.train)  # a missing device fails here; under torchrun the ranks join their group
    if out.nni:
        arch = out.parameters()
    else:
        arch = resolve_arch(config, args.arch)
        if distributed.is_main():
            print(json.dumps({"space": config.space, "arch": arch}))
    with _holding(os.environ.get("NNI_OUTPUT_DIR") or config.output_dir, "trial"):  # the folder run_trial writes
        run_trial(config, arch, report_intermediate=out.intermediate, report_final=out.final,
                  progress=not out.nni and sys.stderr.isatty())


def cmd_search(args: argparse.Namespace) -> None:
    from hrnas_automl.nni.compat import check_pins
    from hrnas_automl.nni.experiment import NniExperiment, TrialRecord, nnictl_command

    check_pins()
    exp = NniExperiment.create(args.config, port=args.port)
    print(f"experiment {exp.id} started; web UI: {exp.url}", flush=True)

    def progress(trials: list[TrialRecord]) -> None:
        ok = [t for t in trials if t.status == "SUCCEEDED"]
        best = max((t.metrics.get("default", float("-inf")) for t in ok), default=None)
        print(f"  {len(trials)} trials finished ({len(ok)} succeeded), best default so far: {best}", flush=True)

    try:
        trials = exp.wait(args.timeout, on_progress=progress)
    except BaseException:
        exp.stop()  # never leave a manager running after a failure or Ctrl-C
        raise
    print(f"\n{'trial':<8} {'status':<10} {'default':>8} {'MMACs':>9} {'params':>10} {'latency_ms':>10}")
    for t in sorted(trials, key=lambda t: -t.metrics.get("default", float("-inf"))):
        m = t.metrics
        print(f"{t.trial_id:<8} {t.status:<10} {m.get('default', float('nan')):>8.4f} "
              f"{m.get('macs', float('nan')) / 1e6:>9.2f} {m.get('params', 0):>10,} "
              f"{m.get('latency_ms', float('nan')):>10.2f}")
    best = exp.best()
    if best is not None:
        print(f"\nbest architecture ({best.trial_id}):\n{json.dumps(best.arch)}\nmetrics: {json.dumps(best.metrics)}")
    if args.stop:
        exp.stop()
        print(f"experiment {exp.id} stopped; reopen it with: {nnictl_command()} view {exp.id} --port {exp.port}")
    else:
        print(f"the web UI stays at {exp.url}; stop the experiment with: {nnictl_command()} stop {exp.id}")


def cmd_make_data(args: argparse.Namespace) -> None:

    from hrnas_automl.files import OutputLock

    out = Path(args.out)

    def check_empty() -> None:  # before taking the lock (no lock file left in a full folder) and under it (a race)
        if out.exists() and (not out.is_dir() or any(p.name != OutputLock.FILE for p in out.iterdir())):
            raise ValueError(f"--out {out} is {'not empty' if out.is_dir() else 'a file'}; give a new or empty folder")

    sizes = {"seed": args.seed, "train_size": args.train_size, "val_size": args.val_size}
    if args.image_size is not None:
        sizes["image_size"] = args.image_size
    check_empty()
    with OutputLock(out, "make-data"):
        check_empty()
        if args.dataset == "segmentation":
            from hrnas_automl.data.shapes import write_shapes

            write_shapes(out, layout=args.layout, **sizes)
        else:
            from hrnas_automl.data.stick_figures import write_stick_figures

            write_stick_figures(out, **sizes)
    print(f"wrote generated {args.dataset} data to {out}")


def _print_front(rows: list[dict[str, Any]], max_macs: float | None, running: int = 0) -> None:
    """The study's Pareto front as a table; ``running``: trials other workers are still running (parallel tune)."""
    front = [r for r in rows if r["pareto"]]
    others = f" ({running} still running in other workers)" if running else ""
    print(f"{len(rows)} finished trials{others}, {len(front)} on the Pareto front (metric max, MACs min"
          f"{f', under {max_macs:.4g} MACs' if max_macs else ''}):")
    print(f"{'trial':>5} {'metric':>8} {'MACs':>12} {'lam':>10} {'threshold':>10} {'warmup':>6}")
    for r in sorted(front, key=lambda r: r["macs"]):
        p = r["params"]
        print(f"{r['number']:>5} {r['metric']:>8.4f} {r['macs']:>12.4g} {p.get('lam', float('nan')):>10.3g} "
              f"{p.get('threshold', float('nan')):>10.3g} {p.get('warmup', '')!s:>6}")


def cmd_tune(args: argparse.Namespace) -> None:
    from hrnas_automl.tuning.config import load_tune_config
    from hrnas_automl.tuning.storage import FAIL_REASON
    from hrnas_automl.tuning.study import (MACS_ATTR, METRIC_ATTR, TrialState, log_warnings_only, plot_front,
                                           run_study, study_summary)

    log_warnings_only(trial_failures=False)  # one line per trial is printed below instead
    config = load_tune_config(args.config)
    if args.plot:
        _output_folder(args.plot, "--plot")  # now, not after the whole study
    if args.n_trials is not None:
        config = config.model_copy(update={"n_trials": args.n_trials})

    def progress(study: Any, trial: Any) -> None:
        metric, macs = trial.user_attrs.get(METRIC_ATTR), trial.user_attrs.get(MACS_ATTR)
        shown = f"metric {metric:.4f}, MACs {macs:.4g}" if metric is not None else f"value {trial.value}"
        if trial.state.name == "FAIL":
            shown = f"not scored ({trial.user_attrs.get(FAIL_REASON, 'see the warning above')})"
        print(f"trial {trial.number} {trial.state.name.lower()}: {shown}, params {json.dumps(trial.params)}",
              flush=True)

    print(f"study {config.study_name!r} in {config.storage}: {config.objective}, {config.objectives}, "
          f"sampler {config.sampler_name}, pruner {config.pruner_name}, target {config.n_trials} trials", flush=True)
    try:
        study = run_study(config, callbacks=[progress])
    except KeyboardInterrupt:
        print(f"interrupted; finished trials are kept in {config.storage}: run the same command to continue",
              file=sys.stderr)
        raise SystemExit(130) from None
    running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    _print_front(study_summary(study), config.max_macs, running)
    if args.plot:
        print(f"Pareto front plot: {plot_front(study, args.plot, max_macs=config.max_macs)}")


def cmd_front(args: argparse.Namespace) -> None:
    from hrnas_automl.tuning.study import load_study, plot_front, study_summary
    from hrnas_automl.tuning.config import load_tune_config

    config = load_tune_config(args.config)
    if args.output:
        _output_folder(args.output, "-o")
    study = load_study(config)
    rows = study_summary(study)
    if args.json:
        _print_json(rows)
    else:
        _print_front(rows, config.max_macs)
    if args.output:
        print(f"Pareto front plot: {plot_front(study, args.output, max_macs=config.max_macs)}", file=sys.stderr)


def cmd_tune_space(args: argparse.Namespace) -> None:
    from hrnas_automl.tuning.config import load_tune_config, tune_search_space

    _write_json(tune_search_space(load_tune_config(args.config).ranges), args.output)


def cmd_tune_trial(args: argparse.Namespace) -> None:
    from hrnas_automl.trial import reporter
    from hrnas_automl.tuning.config import load_tune_config
    from hrnas_automl.tuning.objectives import as_result, make_objective, parse_params

    config = load_tune_config(args.config)
    objective = make_objective(config.objective, config.objective_args)
    out = reporter()
    if out.nni:
        params = parse_params(out.parameters())
    elif args.params:
        params = parse_params(yaml.safe_load(args.params))
    else:
        raise ValueError("outside nnictl, give the parameters: --params '{lam: 1e-4, threshold: 1e-3, warmup: 2}'")

    def report(step: int, metric: float, macs: float) -> None:
        out.intermediate({"default": float(metric), "macs": float(macs), "step": step})

    result = as_result(objective(params, report))
    out.final({"default": result.metric, "macs": result.macs, **({} if out.nni else {"params": dict(params)})})


def cmd_prune(args: argparse.Namespace) -> None:
    import os

    from hrnas_automl.runtime.device import runtime_of
    from hrnas_automl.trial import reporter
    from hrnas_automl.trial.prune import CHECKPOINT, check_prune_options, load_prune_config, run_prune_trial

    config, prune = load_prune_config(args.config)
    out = reporter()
    runtime_of(config.train)  # a missing device fails here; under torchrun the ranks join their group
    if out.nni:  # the tuner's parameters (e.g. a λ grid) override the prune: section
        prune.update(check_prune_options(out.parameters(), "nnictl parameters"))
    folder = os.environ.get("NNI_OUTPUT_DIR") or config.output_dir
    checkpoint = Path(folder) / CHECKPOINT if folder else None
    if checkpoint is not None and checkpoint.is_file():
        print(f"resuming from {checkpoint} (delete it to start afresh)", file=sys.stderr, flush=True)
    try:
        record = run_prune_trial(config, prune, report_intermediate=out.intermediate,
                                 report_final=out.final if out.nni else None)
    except KeyboardInterrupt:
        print("interrupted; " + (f"rerun the same command to resume from {checkpoint}" if checkpoint else
                                 "nothing was saved: set output_dir: in the config to make prune resumable"),
              file=sys.stderr)
        raise SystemExit(130) from None
    if not out.nni:
        _print_json({k: record[k] for k in ("space", "arch", "metrics")})


def cmd_oneshot(args: argparse.Namespace) -> None:
    from hrnas_automl.arch import load_arch
    from hrnas_automl.oneshot.config import SearchConfig, SupernetConfig, load_config
    from hrnas_automl.trial import reporter

    out = reporter()
    arch = out.parameters() if out.nni else None  # NNI refuses reports before the trial has asked for them
    if args.action == "train":
        from hrnas_automl.oneshot.supernet import train_supernet

        def on_checkpoint(step: int, loss: float) -> None:
            out.intermediate({"default": loss, "step": step, "loss": loss})

        metrics = train_supernet(load_config(args.config, SupernetConfig), on_checkpoint=on_checkpoint)
        out.final({"default": metrics["loss"], **metrics})
        return
    if args.action == "eval":
        from hrnas_automl.oneshot.search import evaluate_arch

        config = load_config(args.config, SearchConfig)
        if arch is None:
            if not args.arch:
                raise ValueError("oneshot eval needs --arch (a JSON file or preset:NAME) outside nnictl")
            arch = load_arch(args.arch)[1]
        metrics = evaluate_arch(config, arch)
        out.final({"default": metrics["map"], **metrics, **({} if out.nni else {"arch": arch})})
        return
    from hrnas_automl.oneshot.search import run_search

    def as_row(row: dict[str, Any]) -> dict[str, Any]:  # NNI's metrics are numbers: the arch is its parameter
        return {"default": row["map"], **{k: v for k, v in row.items() if k != "arch" or not out.nni}}

    result = run_search(load_config(args.config, SearchConfig), on_candidate=lambda row: out.intermediate(
        as_row(row)))
    out.final({**as_row(result.best), "candidates": len(result.evaluated)})


def cmd_report(args: argparse.Namespace) -> None:
    from hrnas_automl.report import write_report

    paths = write_report(args.inputs, args.output, target=args.target)
    print(f"{paths['markdown'].read_text()}\nwrote " + ", ".join(str(p) for p in paths.values()))


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every subcommand."""
    parser = argparse.ArgumentParser(prog="hrnas-automl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def space_cmd(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("space", help="a registered space (see `hrnas-automl spaces`)")
        p.add_argument("--space-arg", action="append", default=[], metavar="KEY=VALUE",
                       help="space constructor argument, e.g. num_classes=10 (repeatable)")
        return p

    p = sub.add_parser("spaces", help="the registered spaces, their sizes and presets")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_spaces)

    p = space_cmd("describe", "labels and candidate values of a space")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_describe)

    p = space_cmd("sample", "a seeded random architecture as JSON, optionally under MACs/params limits")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-macs", type=_budget, help="MACs limit at --input")
    p.add_argument("--max-params", type=_budget, help="parameter limit")
    p.add_argument("--input", help="CxHxW for the limits (default: the space's paper input)")
    p.add_argument("--max-latency-ms", type=_budget, help="latency limit (lookup table measured on this machine)")
    p.add_argument("--threads", type=_positive, default=None, help="torch threads for the latency table")
    p.add_argument("--backend", default="torch", help="latency backend of the table: torch or onnxruntime")
    p.add_argument("--max-attempts", type=_positive, default=2000, help="random draws before giving up on the limits")
    p.set_defaults(func=cmd_sample)

    p = space_cmd("cost", "params and MACs of an architecture: analytic table and ptflops side by side")
    p.add_argument("--arch", required=True, help="a JSON file or preset:NAME")
    p.add_argument("--input", help="CxHxW (default: the space's paper input)")
    p.add_argument("--latency", action="store_true",
                   help="also measure latency on this machine and predict it from the latency table")
    p.add_argument("--threads", type=_positive, default=None, help="torch threads for --latency")
    p.add_argument("--backend", default="torch", help="latency backend for --latency: torch or onnxruntime")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_cost)

    p = space_cmd("export-space", "the NNI search-space JSON of a space (for nnictl's searchSpaceFile)")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.add_argument("--strategies", metavar="TAG,TAG", help="also the strategy parameter of a MultiStrategyTuner with "
                   "these tags, in its order (the web UI then filters trials by strategy)")
    p.set_defaults(func=cmd_export_space)

    p = space_cmd("export", "an architecture as model.onnx, a torch.export program, weights and arch.json, checked "
                  "against PyTorch (--space-arg head=detector: the DetNAS backbone in the FPN + FCOS detector)")
    p.add_argument("--arch", help="a JSON file or preset:NAME")
    p.add_argument("--from", dest="source", metavar="SOURCE", help="a prune/trial output folder, a oneshot search "
                   "state (or its folder), nni:EXPERIMENT[:TRIAL] (best trial without one) or "
                   "optuna:STORAGE:STUDY:NUMBER; with the run's weights where it saved them")
    p.add_argument("--input", help="CxHxW (default: the space's paper input, or the one-shot detector's)")
    p.add_argument("-o", "--output", required=True, help="the export folder")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed when the source saved no weights")
    p.add_argument("--threads", type=_positive, default=1, help="threads for the latency figures")
    p.add_argument("--tolerance", type=_budget, default=1e-4,
                   help="largest difference of ONNX Runtime / the program / the folded network against PyTorch, "
                        "relative to each output's largest value")
    p.add_argument("--no-latency", action="store_true", help="skip the eager / folded / ONNX Runtime latency")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("trial", help="train and evaluate one architecture (nnictl's trialCommand)")
    p.add_argument("--config", required=True, help="trial YAML (space, data, train, latency)")
    p.add_argument("--arch", help="outside nnictl: a JSON file or preset:NAME (default: config.arch or random)")
    p.set_defaults(func=cmd_trial)

    p = sub.add_parser("prune", help="one fine-grained (HR-NAS) search as a trial: prune.yml = trial config + prune:")
    p.add_argument("--config", required=True)
    p.set_defaults(func=cmd_prune)
    p = sub.add_parser("make-data", help="write seeded generated data in a real dataset format (for examples, tests)")
    p.add_argument("dataset", choices=("segmentation", "keypoints"),
                   help="segmentation: shapes in the Cityscapes or ADE20K layout; keypoints: COCO stick figures")
    p.add_argument("--out", required=True, help="a new or empty folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layout", choices=("cityscapes", "ade20k"), default="cityscapes", help="segmentation only")
    p.add_argument("--train-size", type=_positive, default=64, help="images in the training split")
    p.add_argument("--val-size", type=_positive, default=32, help="images in the validation split")
    p.add_argument("--image-size", type=_positive, help="square image side (default 64 segmentation, 128 keypoints)")
    p.set_defaults(func=cmd_make_data)

    p = sub.add_parser("oneshot", help="DetNAS one-shot: train a detection supernet, search on its weights")
    p.add_argument("action", choices=("train", "search", "eval"), help="train: path-wise supernet training "
                   "(resumable); search: evolution/random on the supernet's weights (resumable); eval: one "
                   "architecture on the supernet's weights (an nnictl trial per candidate)")
    p.add_argument("--config", required=True, help="YAML, e.g. examples/detnas/oneshot_supernet.yml")
    p.add_argument("--arch", help="eval outside nnictl: a JSON file or preset:NAME")
    p.set_defaults(func=cmd_oneshot)

    p = sub.add_parser("search", help="run an nnictl experiment, wait, print the best architecture")
    p.add_argument("config", help="an nnictl experiment YAML, e.g. examples/detnas/evolution.yml")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the experiment")
    p.add_argument("--stop", action="store_true", help="stop the experiment at the end (default: keep the web UI)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("tune", help="run (or resume) an Optuna study over lam, threshold and warm-up")
    p.add_argument("--config", required=True, help="tune YAML (study_name, n_trials, objective, ranges, ...)")
    p.add_argument("--n-trials", type=_positive, help="finished trials the study should hold (overrides n_trials)")
    p.add_argument("--plot", metavar="PNG", help="also save the Pareto front (MACs vs metric) to this PNG")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("front", help="the Pareto front of a stored study (table, --json, or -o PNG)")
    p.add_argument("--config", required=True, help="the tune YAML that names the study and its storage")
    p.add_argument("-o", "--output", metavar="PNG", help="save the plot to this PNG")
    p.add_argument("--json", action="store_true", help="every finished trial as JSON")
    p.set_defaults(func=cmd_front)

    p = sub.add_parser("tune-space", help="the nnictl search-space JSON of a tune config's ranges")
    p.add_argument("--config", required=True)
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.set_defaults(func=cmd_tune_space)

    p = sub.add_parser("tune-trial", help="one tuning trial (the trialCommand of an OptunaTuner experiment)")
    p.add_argument("--config", required=True, help="the tune YAML naming the objective and its arguments")
    p.add_argument("--params", help="outside nnictl: YAML/JSON mapping {lam, threshold, warmup}")
    p.set_defaults(func=cmd_tune_trial)

    p = sub.add_parser("report", help="compare search strategies over seeds: an offline HTML page, PNGs, a table")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="an NNI experiment id (or nni:ID) or folder, "
                   "optuna:STORAGE:STUDY, a oneshot search state, or a prune / trial result.json")
    p.add_argument("-o", "--output", required=True, help="the report folder (report.html, PNGs, JSON, Markdown)")
    p.add_argument("--target", type=float, help="metric level for 'trials to target' (default: the median of the "
                   "runs' bests)")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hrnas-automl`` console script."""
    args = build_parser().parse_args(argv)
    from hrnas_automl.nni.compat import in_nni_trial, trial_log_output

    if in_nni_trial():  # an nnictl trial: its errors reach the web UI's trial log, even a bad config's
        trial_log_output()
    try:
        args.func(args)
    except (ValueError, KeyError, FileNotFoundError, PermissionError, RuntimeError, TimeoutError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"hrnas-automl: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hrnas-automl: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
