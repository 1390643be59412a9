"""Optuna studies over λ, the pruning threshold and the warm-up length, plus sampling spaces in Optuna.

Two objectives, task metric (max) and MACs (min), with NSGA-II, or the metric alone with TPE and a
pruner. A MACs budget goes through Optuna 5's constraint API (``trial.set_constraint``: over-budget
trials stay in the study, marked infeasible, and never enter the Pareto front). Studies live in an RDB
storage (default a local SQLite file) or a journal file, resume by name, and take any number of parallel
workers (``hrnas-automl tune`` run several times on one config).

Example::

    from hrnas_automl.tuning.config import parse_tune_config
    from hrnas_automl.tuning.study import plot_front, run_study

    config = parse_tune_config({"study_name": "demo", "n_trials": 8, "objective": "network-slimming",
                                "ranges": {"lam": {"low": 1e-4, "high": 1e-1, "log": True}}})
    study = run_study(config)
    plot_front(study, "front.png")
"""
from __future__ import annotations

import logging
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, Trial, TrialState

from hrnas_automl.arch import choices_of, validate_arch
from hrnas_automl.tuning.config import StorageConfig, TuneConfig, TuneRanges
from hrnas_automl.tuning.objectives import NonFiniteResultError, TuneObjective, TuneParams, as_result, make_objective
from hrnas_automl.tuning.sampling import VERDICT_ATTR, PerTrialSeededSampler
from hrnas_automl.tuning.storage import FAIL_REASON, creation_guard, fail_dead_trials, open_storage, storage_file

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Trial", "TrialState", "running_trials", "log_warnings_only", "to_optuna_distributions", "tell_failed",
           "make_sampler", "make_pruner", "open_study", "open_named_study", "load_study", "suggest_params", "run_study",
           "front_trials", "front_figure", "plot_front", "study_summary", "stored_study", "study_history",
           "suggest_choices", "suggest_architecture", "METRIC_ATTR", "MACS_ATTR", "CONSTRAINT_KEY", "FAILS_IN_A_ROW"]

METRIC_ATTR, MACS_ATTR = "metric", "macs"  # user attributes every finished trial carries, whatever the objectives
CONSTRAINT_KEY = "max_macs"  # trial.constraints[CONSTRAINT_KEY] = macs - budget (feasible when <= 0)
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
FAILS_IN_A_ROW = 10  # a worker whose last this many trials all failed (diverged, non-finite) stops with an error
UNMARKED_WAIT = 5.0  # seconds a starting worker gives a RUNNING trial without a worker mark before failing it


def log_warnings_only(*, trial_failures: bool = True) -> None:
    """Optuna logs every trial at INFO; keep only its warnings. ``trial_failures=False`` also drops its warning
    (with a traceback) for each failed trial, for a caller that prints one line per trial itself (``tune``: a
    diverged trial's reason, Ctrl-C's "interrupted", an error's one line)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not trial_failures:
        # the records come from the optimize loop's own logger; a filter on it sees them before any handler
        logging.getLogger("optuna.study._optimize").addFilter(
            lambda record: not record.getMessage().startswith("Trial ") or " failed " not in record.getMessage())


def to_optuna_distributions(search_space: Mapping[str, Any]) -> tuple[dict[str, BaseDistribution],
                                                                       dict[str, list[Any]]]:
    """An NNI search space (flat) -> Optuna distributions, plus the candidate lists of choices whose values
    are not JSON scalars (those are sampled by index)."""
    dists: dict[str, BaseDistribution] = {}
    by_index: dict[str, list[Any]] = {}
    for key, spec in search_space.items():
        kind, value = spec.get("_type"), spec.get("_value")
        if kind == "choice":
            if all(v is None or isinstance(v, (bool, int, float, str)) for v in value):
                dists[key] = CategoricalDistribution(value)
            else:
                dists[key], by_index[key] = CategoricalDistribution(list(range(len(value)))), list(value)
        elif kind == "randint":  # NNI's randint excludes the upper bound
            dists[key] = IntDistribution(int(value[0]), int(value[1]) - 1)
        elif kind in ("uniform", "loguniform", "quniform", "qloguniform"):
            step = value[2] if kind.startswith("q") else None
            dists[key] = FloatDistribution(value[0], value[1], log=kind.endswith("loguniform") and step is None,
                                           step=step)
        else:
            raise ValueError(f"OptunaTuner: search-space key {key!r} has _type {kind!r}; supported: choice, randint, "
                             "uniform, loguniform, quniform, qloguniform")
    return dists, by_index


def tell_failed(study: optuna.Study, trial: Trial) -> None:
    """Store an asked trial that ended without a result as FAIL."""
    study.tell(trial, state=TrialState.FAIL)


def running_trials(study: optuna.Study, attr: str) -> dict[Any, Trial]:
    """The study's RUNNING trials that carry user attribute ``attr``, as live trials keyed by its value (the NNI
    tuner finds what it asked before a stop). FrozenTrial has no public id; a live Trial of a stored one is built
    from it as Optuna's own ``Study.tell`` does."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return {t.user_attrs[attr]: Trial(study, t._trial_id) for t in running if attr in t.user_attrs}


def make_sampler(name: str, seed: int, **args: Any) -> optuna.samplers.BaseSampler:
    """A seeded Optuna sampler: ``nsga2``, ``tpe`` or ``random`` (same seed and history, same suggestions)."""
    samplers: dict[str, type[optuna.samplers.BaseSampler]] = {
        "nsga2": optuna.samplers.NSGAIISampler, "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler}
    if name not in samplers:
        raise ValueError(f"unknown sampler {name!r}; samplers: {', '.join(samplers)}")
    try:
        return samplers[name](seed=seed, **args)
    except TypeError as exc:
        raise ValueError(f"sampler_args of {name}: {exc}") from None


def make_pruner(name: str, **args: Any) -> optuna.pruners.BasePruner:
    """``median`` (stop a trial below the median of earlier ones at the same step), ``hyperband`` or ``none``."""
    pruners: dict[str, Callable[..., optuna.pruners.BasePruner]] = {
        "median": optuna.pruners.MedianPruner, "hyperband": optuna.pruners.HyperbandPruner,
        "none": optuna.pruners.NopPruner}
    if name not in pruners:
        raise ValueError(f"unknown pruner {name!r}; pruners: {', '.join(pruners)}")
    try:
        return pruners[name](**args)
    except TypeError as exc:
        raise ValueError(f"pruner_args of {name}: {exc}") from None


def open_study(config: TuneConfig) -> optuna.Study:
    """Create the study a tune config names, or load it by name with every trial it already holds; safe when
    several workers open it at once. Its sampler is seeded per trial (:mod:`hrnas_automl.tuning.sampling`)."""
    args = dict(config.sampler_args)
    if config.sampler_name == "tpe":
        args.setdefault("constant_liar", True)  # running trials of other workers count as bad: they spread out
    sampler = PerTrialSeededSampler(lambda seed: make_sampler(config.sampler_name, seed, **args), config.seed)
    study = _create_study(config.study_name, open_storage(config.storage), str(config.storage),
                          multi_objective=config.multi_objective, sampler=sampler,
                          pruner=make_pruner(config.pruner_name, **config.pruner_args),
                          guard=creation_guard(config.storage))
    make_sampler(config.sampler_name, config.seed, **args)  # a bad sampler_args fails here, not in the first trial
    return study


def _create_study(study_name: str, storage: BaseStorage, where: str, *, multi_objective: bool,
                  sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner | None,
                  guard: Callable[[Callable[[], Any]], Any]) -> optuna.Study:
    directions = ["maximize", "minimize"] if multi_objective else ["maximize"]
    study = guard(lambda: optuna.create_study(study_name=study_name, storage=storage, directions=directions,
                                              sampler=sampler, pruner=pruner, load_if_exists=True))
    stored = [d.name.lower() for d in study.directions]
    if stored != directions:
        raise ValueError(f"study {study_name!r} in {where} optimizes {stored}, but {directions} was asked for; "
                         "use another study_name")
    return study


def open_named_study(study_name: str, storage: str | None, *, multi_objective: bool, sampler: str, seed: int,
                     sampler_args: Mapping[str, Any] | None = None,
                     pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Create or load (by name) a study of (metric max[, MACs min]) with a seeded sampler (the nnictl tuner's
    study; ``storage`` is a URL, None for in memory).

    The sampler is seeded with ``seed + number of trials already stored``, so a resumed study does not
    replay the suggestions it made before the interruption, and a rerun from the same state repeats.

    Raises:
        ValueError: the stored study has other objectives, or the storage cannot be opened.
    """
    config = StorageConfig(url=storage) if storage else None
    study = _create_study(study_name, open_storage(config) if config else optuna.storages.InMemoryStorage(),
                          storage or "memory", multi_objective=multi_objective,
                          sampler=optuna.samplers.RandomSampler(), pruner=pruner,
                          guard=creation_guard(config) if config else lambda step: step())
    study.sampler = make_sampler(sampler, seed + len(study.trials), **dict(sampler_args or {}))
    return study


def load_study(config: TuneConfig) -> optuna.Study:
    """The stored study a config names (to plot or inspect it without running trials); creates nothing."""
    file = storage_file(config.storage)
    if file is not None and not file.is_file():  # opening it would create an empty storage there
        raise ValueError(f"no study {config.study_name!r}: {file} does not exist; run `hrnas-automl tune --config` "
                         "first or fix storage")
    try:
        return optuna.load_study(study_name=config.study_name, storage=open_storage(config.storage))
    except KeyError:
        raise ValueError(f"no study {config.study_name!r} in {config.storage}; run `hrnas-automl tune --config` "
                         "first or fix study_name/storage") from None


def suggest_params(trial: Trial, ranges: TuneRanges) -> TuneParams:
    """Suggest {lam, threshold, warmup} from ``ranges`` (Optuna params of the same names)."""
    return TuneParams(
        lam=trial.suggest_float("lam", ranges.lam.low, ranges.lam.high, log=ranges.lam.log),
        threshold=trial.suggest_float("threshold", ranges.threshold.low, ranges.threshold.high,
                                      log=ranges.threshold.log),
        warmup=trial.suggest_int("warmup", ranges.warmup.low, ranges.warmup.high))


def _trial_function(config: TuneConfig, objective: TuneObjective) -> Callable[[Trial], float | tuple[float, float]]:
    def run(trial: Trial) -> float | tuple[float, float]:
        params = suggest_params(trial, config.ranges)
        steps: list[dict[str, float]] = []

        def report(step: int, metric: float, macs: float) -> None:
            steps.append({"step": step, METRIC_ATTR: float(metric), MACS_ATTR: float(macs)})
            trial.set_user_attr("steps", steps)  # kept in both modes (Optuna's report is single-objective only)
            if not config.multi_objective:
                trial.report(float(metric), step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"metric {metric:.4g} at step {step} is below the pruner's cut")

        try:
            result = as_result(objective(params, report))
        except _failures() as exc:
            trial.set_user_attr(FAIL_REASON, f"{type(exc).__name__}: {exc}")
            trial.storage.set_trial_system_attr(trial._trial_id, VERDICT_ATTR, True)
            raise
        trial.set_user_attr(METRIC_ATTR, result.metric)
        trial.set_user_attr(MACS_ATTR, result.macs)
        if config.max_macs is not None:
            trial.set_constraint(CONSTRAINT_KEY, result.macs - config.max_macs)
        return (result.metric, result.macs) if config.multi_objective else result.metric

    return run


def _failures() -> tuple[type[Exception], ...]:
    """What fails one trial (stored as FAIL with its ``fail_reason``) without stopping the worker: a diverged
    training and a non-finite result."""
    from hrnas_automl.tasks.training import DivergedError  # torch: only once a trial runs

    return DivergedError, NonFiniteResultError


def run_study(config: TuneConfig, objective: TuneObjective | None = None,
              callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] | None = None) -> optuna.Study:
    """Run (or resume) the study until it holds ``config.n_trials`` finished (complete or pruned) trials; any
    number of workers may run this on one study at once.

    Before each trial the worker fails the RUNNING trials of dead workers of this machine (see
    :mod:`~hrnas_automl.tuning.storage`; at its start also those still without a worker mark after
    :data:`UNMARKED_WAIT` seconds), then starts one only while finished + running trials stay below
    ``n_trials``: workers that check at the same instant may each start one, so a study ends with at most
    (workers - 1) trials over ``n_trials``. FAIL trials do not count; their worker goes on with a new trial.
    ``objective`` defaults to the one the config names. A trial that diverges or returns a non-finite result
    is stored as FAIL (``fail_reason``) and the worker goes on, up to :data:`FAILS_IN_A_ROW` in a row (then a
    RuntimeError); any other exception (KeyboardInterrupt included) is stored as FAIL and propagates; every
    finished trial is already in the storage, so running again continues the study.
    """
    objective = objective or make_objective(config.objective, config.objective_args)
    study = open_study(config)
    function, failures = _trial_function(config, objective), _failures()
    deadline = None if config.timeout is None else time.monotonic() + config.timeout
    mine: list[FrozenTrial] = []  # this worker's trials (the study's last trial may be another worker's)
    while deadline is None or time.monotonic() < deadline:
        fail_dead_trials(study, config.storage.max_retry, unmarked_wait=0.0 if mine else UNMARKED_WAIT)
        counts = Counter(t.state for t in study.get_trials(deepcopy=False))
        if sum(counts[s] for s in _FINISHED) + counts[TrialState.RUNNING] >= config.n_trials:
            break
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.optimize(function, n_trials=1, callbacks=[*(callbacks or []), lambda _, t: mine.append(t)],
                           catch=failures, gc_after_trial=False)
        last = mine[-FAILS_IN_A_ROW:]
        if len(last) == FAILS_IN_A_ROW and all(t.state == TrialState.FAIL for t in last):
            raise RuntimeError(f"{FAILS_IN_A_ROW} trials in a row failed (the last: "
                               f"{last[-1].user_attrs.get(FAIL_REASON)}); fix the objective's settings or the ranges")
    return study


def _feasible(trial: FrozenTrial) -> bool:
    return all(v <= 0 for v in trial.constraints.values())


def front_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Feasible complete trials not dominated in (metric max, MACs min), by MACs; also for single-objective
    studies, whose MACs are in the trials' user attributes."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if _feasible(t) and METRIC_ATTR in t.user_attrs]

    def dominates(a: FrozenTrial, b: FrozenTrial) -> bool:
        am, ac, bm, bc = a.user_attrs[METRIC_ATTR], a.user_attrs[MACS_ATTR], b.user_attrs[METRIC_ATTR], \
            b.user_attrs[MACS_ATTR]
        return am >= bm and ac <= bc and (am > bm or ac < bc)

    front = [t for t in done if not any(dominates(o, t) for o in done)]
    return sorted(front, key=lambda t: (t.user_attrs[MACS_ATTR], t.number))


def front_figure(study: optuna.Study, *, metric_name: str = "metric", max_macs: float | None = None) -> Figure:
    """Every complete trial in (MACs, metric): the Pareto front joined, infeasible trials greyed out,
    the MACs budget as a dashed line (a bare matplotlib Figure; PNG output needs no display).

    Raises:
        ValueError: the study has no complete trial yet.
    """
    from matplotlib.figure import Figure  # no pyplot: no display, no global backend switch

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if METRIC_ATTR in t.user_attrs]
    if not done:
        raise ValueError(f"study {study.study_name!r} has no complete trial to plot yet; run `hrnas-automl tune` first")
    front = front_trials(study)
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    groups = (([t for t in done if not _feasible(t)], dict(c="0.6", marker="x", label="over budget")),
              ([t for t in done if _feasible(t) and t not in front], dict(c="C0", alpha=0.5, label="trial")),
              (front, dict(c="C3", label="Pareto front")))
    for trials, style in groups:
        if trials:
            ax.scatter([t.user_attrs[MACS_ATTR] for t in trials], [t.user_attrs[METRIC_ATTR] for t in trials], **style)
    ax.plot([t.user_attrs[MACS_ATTR] for t in front], [t.user_attrs[METRIC_ATTR] for t in front], c="C3", lw=1)
    if max_macs is not None:
        ax.axvline(max_macs, c="k", ls="--", lw=1, label="MACs budget")
    ax.set_xlabel("MACs")
    ax.set_ylabel(metric_name)
    ax.set_title(f"{study.study_name}: {len(done)} trials, {len(front)} on the front")
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    return fig


def plot_front(study: optuna.Study, path: str | Path, *, metric_name: str = "metric",
               max_macs: float | None = None) -> Path:
    """Save :func:`front_figure` as a PNG; returns the path."""
    path = Path(path)
    front_figure(study, metric_name=metric_name, max_macs=max_macs).savefig(path, dpi=100)
    return path


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def suggest_choices(trial: Trial, choices: Mapping[str, list[Any]]) -> dict[str, Any]:
    """One ``suggest_categorical`` per label. Labels whose candidates are not all JSON scalars (e.g. an
    InputChoice's ``[[0], [1]]``) are suggested by index, so the Optuna param is the index into the list."""
    arch = {}
    for label, values in choices.items():
        if all(_is_scalar(v) for v in values):
            arch[label] = trial.suggest_categorical(label, list(values))
        else:
            arch[label] = values[trial.suggest_categorical(label, list(range(len(values))))]
    return arch


def suggest_architecture(trial: Trial, space: str, **space_args: Any) -> dict[str, Any]:
    """Sample an architecture of a registered space inside an Optuna objective; freeze it with
    :func:`hrnas_automl.arch.freeze` (same ``space_args``).

    Example::

        def objective(trial):
            arch = suggest_architecture(trial, "detnas-small", num_classes=10)
            net = freeze("detnas-small", arch, num_classes=10)
            ...
    """
    choices = choices_of(space, **space_args)
    return validate_arch(suggest_choices(trial, choices), choices, space)


def study_summary(study: optuna.Study) -> list[dict[str, Any]]:
    """Finished trials as JSON-ready rows: number, state, params, metric, MACs, feasible, on the front."""
    front = {t.number for t in front_trials(study)}
    return [{"number": t.number, "state": t.state.name, "params": t.params,
             METRIC_ATTR: t.user_attrs.get(METRIC_ATTR, t.value if t.state == TrialState.PRUNED else None),
             MACS_ATTR: t.user_attrs.get(MACS_ATTR), "feasible": _feasible(t), "pareto": t.number in front}
            for t in study.get_trials(deepcopy=False, states=_FINISHED)]


def stored_study(storage: str, study_name: str) -> optuna.Study:
    """A stored study by its storage (an SQLAlchemy URL, or a journal file) and name, creating nothing; one-line
    ``ValueError`` when the storage file or the study does not exist."""
    config = StorageConfig(url=storage) if "://" in storage else StorageConfig(journal=storage)
    file = storage_file(config)
    if file is not None and not file.is_file():
        raise ValueError(f"the Optuna storage {file} does not exist; give the file a study was stored in")
    try:
        return optuna.load_study(study_name=study_name, storage=open_storage(config), sampler=None)
    except KeyError:
        names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(open_storage(config))) or "none"
        raise ValueError(f"no Optuna study {study_name!r} in {storage} (its studies: {names})") from None


def study_history(study: optuna.Study) -> list[dict[str, Any]]:
    """Completed trials in the order they completed, as plain rows: number, params, the metric and MACs (the
    user attributes every finished trial carries, else the first objective), the other numeric user attributes,
    and start / completion as seconds since the epoch."""
    done = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                  key=lambda t: (t.datetime_complete is None, t.datetime_complete, t.number))
    rows = []
    for t in done:
        numeric = {k: float(v) for k, v in t.user_attrs.items() if isinstance(v, (int, float))
                   and not isinstance(v, bool)}
        rows.append({**numeric, "number": t.number, "params": dict(t.params),
                     METRIC_ATTR: numeric.get(METRIC_ATTR, t.values[0] if t.values else None),
                     MACS_ATTR: numeric.get(MACS_ATTR),
                     "start_s": t.datetime_start.timestamp() if t.datetime_start else None,
                     "complete_s": t.datetime_complete.timestamp() if t.datetime_complete else None})
    return rows
