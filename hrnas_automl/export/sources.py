"""Where an exported architecture comes from (``hrnas-automl export --from``): an NNI trial, an Optuna trial, or the
folder of a ``prune`` / ``trial`` run or a ``oneshot`` search, with the weights the run saved.

* ``nni:EXPERIMENT[:TRIAL]``: a trial of an nnictl experiment (stopped or not), read from its SQLite database
  (:mod:`hrnas_automl.nni.database`; EXPERIMENT an id or the experiment's folder). No
  trial: the best by ``default`` (the tuner's ``optimize_mode``). The space and its arguments come from the
  tuner's classArgs where it names them (``StrategyTuner``); weights from the trial folder's ``weights.pt`` (a
  ``prune`` trial writes one).
* ``optuna:STORAGE:STUDY:NUMBER``: trial ``NUMBER`` (or ``best``) of a study whose parameters are an architecture
  (an ``OptunaTuner`` search); ``STORAGE`` is an SQLAlchemy URL (``sqlite:///studies.db``) or a journal file.
* a folder with ``result.json`` (``prune`` or ``trial`` with ``output_dir``, or an NNI trial folder) and, from
  ``prune``, ``weights.pt``.
* a ``oneshot search`` state file (or its folder): the best candidate, with the supernet's weights along its path
  after the BatchNorm re-statistics the search scored it with, as the whole FCOS detector.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Source", "read_source", "read_weights"]

_ONESHOT_KIND = "hrnas-automl oneshot search"  # hrnas_automl.oneshot.search writes its state with this kind


@dataclass(frozen=True)
class Source:
    """An architecture to export and what its run knew about it.

    Attributes:
        space: the space the source names (None: not recorded; the command's space is taken).
        arch: ``{label: value}``.
        space_args: the space arguments the run used, where recorded (the command's ``--space-arg`` win).
        state_dict: the run's weights, or None (the network is exported with a seeded random initialisation).
        origin: one line saying where it came from.
        detector: for a detector (one-shot): its ``num_classes``, ``fpn_channels``, ``head_depth`` and the input
            shape it was trained at.
    """

    space: str | None
    arch: dict[str, Any]
    origin: str
    space_args: dict[str, Any] = field(default_factory=dict)
    state_dict: dict[str, Any] | None = None
    detector: dict[str, Any] | None = None


def read_weights(path: Path) -> dict[str, Any]:
    """A state dict saved by a run (``torch.load(weights_only=True)``); one-line ``ValueError`` otherwise."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means: not a state dict of ours
        raise ValueError(f"{path} is not a readable weights file ({type(exc).__name__}); give the folder the run "
                         "wrote, or export without --from for a random initialisation") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state dict (name -> tensor); give the weights.pt a run wrote")
    return state


def read_source(ref: str) -> Source:
    """The :class:`Source` that ``--from ref`` names (module docstring); one-line ``ValueError`` if it names none."""
    if ref.startswith("nni:"):
        return _nni_trial(ref.removeprefix("nni:"))
    if ref.startswith("optuna:"):
        return _optuna_trial(ref.removeprefix("optuna:"))
    path = Path(ref)
    if not path.exists():
        raise ValueError(f"--from {ref}: no such file or folder; give a run folder, a oneshot search state, "
                         "nni:EXPERIMENT[:TRIAL] or optuna:STORAGE:STUDY:NUMBER")
    if path.is_dir() and (path / "result.json").is_file():
        return _result_folder(path)
    states = [path] if path.is_file() else sorted(path.glob("*.json"))
    for state in states:
        data = _json_file(state) if state.suffix == ".json" else None
        if isinstance(data, Mapping) and data.get("kind") == _ONESHOT_KIND:
            return _oneshot(state, data)
    raise ValueError(f"--from {ref} holds no result.json (prune / trial output) and no oneshot search state; "
                     "give the folder a run wrote")


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _result_folder(folder: Path) -> Source:
    """A ``prune`` / ``trial`` output folder (or an NNI trial folder): result.json, and weights.pt from prune."""
    result = _json_file(folder / "result.json")
    if not isinstance(result, Mapping) or not isinstance(result.get("arch"), Mapping):
        raise ValueError(f"{folder / 'result.json'} holds no architecture ('arch'); give the folder a prune or "
                         "trial run wrote")
    weights = folder / "weights.pt"
    kind = "prune" if "prune" in result else "trial"
    if kind == "prune" and not weights.is_file():  # prune writes weights.pt before result.json: it was removed
        raise ValueError(f"prune result {folder} has no weights.pt (prune writes it beside result.json); copy it back, "
                         "or export the architecture alone with --arch " + str(folder / "result.json"))
    state = read_weights(weights) if weights.is_file() else None
    return Source(result.get("space"), dict(result["arch"]), f"{kind} result {folder}", state_dict=state)


def _nni_trial(ref: str) -> Source:
    from hrnas_automl.nni.database import read_experiment

    experiment, _, trial = ref.partition(":")
    try:
        data = read_experiment(experiment) if experiment else None
    except ValueError as exc:
        raise ValueError(f"--from nni:{ref}: {exc}") from None
    if data is None:
        raise ValueError(f"--from nni:{ref}: give an experiment id; `nnictl experiment list --all` lists them")
    tuner_args = data.tuner_args
    finished = sorted((row for row in data.trials if row.final_ms is not None), key=lambda row: row.final_ms)
    scored = [(row.trial_id, float(row.metrics["default"]), row) for row in finished  # ties: the first to finish
              if row.metrics is not None and isinstance(row.metrics.get("default"), (int, float))]
    if trial in ("", "best"):
        if not scored:
            raise ValueError(f"NNI experiment {experiment} has no trial with a final metric yet; give a trial id "
                             "(nni:EXPERIMENT:TRIAL) or wait for one to finish")
        sign = 1.0 if data.maximize else -1.0
        trial, metric, row = max(scored, key=lambda item: sign * item[1])
    else:
        found = [item for item in scored if item[0] == trial]
        if not found:
            known = ", ".join(sorted({item[0] for item in scored})) or "none"
            raise ValueError(f"NNI experiment {experiment} has no finished trial {trial!r} (finished: {known})")
        _, metric, row = found[0]
    weights = row.folder / "weights.pt" if row.folder is not None else None
    state = read_weights(weights) if weights is not None and weights.is_file() else None
    origin = f"NNI experiment {experiment} trial {trial} (default {metric:g})"
    from hrnas_automl.nni.compat import STRATEGY_KEY

    arch = {label: value for label, value in row.params.items() if label != STRATEGY_KEY}  # a MultiStrategyTuner's tag
    return Source(tuner_args.get("space"), arch, origin,
                  space_args=dict(tuner_args.get("space_args") or {}), state_dict=state)


def _optuna_trial(ref: str) -> Source:
    """Trial ``NUMBER`` (or the best) of a stored study, read through the tuning package's storage (no study is
    created: a missing storage file or study is an error)."""
    from hrnas_automl.tuning.config import StorageConfig
    from hrnas_automl.tuning.storage import open_storage, storage_file

    storage, study_name, number = (ref.rsplit(":", 2) + ["", ""])[:3] if ref.count(":") >= 2 else (ref, "", "")
    if not storage or not study_name or not (number.isdigit() or number == "best"):
        raise ValueError(f"--from optuna:{ref} must look like optuna:STORAGE:STUDY:NUMBER (NUMBER a trial number or "
                         "best), e.g. optuna:sqlite:///studies.db:my-study:3")
    config = StorageConfig(url=storage) if "://" in storage else StorageConfig(journal=storage)
    file = storage_file(config)
    if file is not None and not file.is_file():
        raise ValueError(f"--from optuna:{ref}: the storage {file} does not exist")
    store = open_storage(config)
    try:
        study_id = store.get_study_id_from_name(study_name)
    except KeyError:
        raise ValueError(f"--from optuna:{ref}: no study {study_name!r} in {storage}") from None
    if number == "best":
        try:
            trial = store.get_best_trial(study_id)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"--from optuna:{ref}: no best trial ({exc}); give a trial number") from None
    else:
        trials = [t for t in store.get_all_trials(study_id, deepcopy=False) if t.number == int(number)]
        if not trials:
            raise ValueError(f"--from optuna:{ref}: study {study_name!r} has no trial {number}")
        trial = trials[0]
    return Source(None, dict(trial.params), f"Optuna study {study_name} trial {trial.number} ({trial.state.name})")


def _oneshot(state_path: Path, state: Mapping[str, Any]) -> Source:
    """The best candidate of a oneshot search, with its weights: the supernet's along its path, after the BatchNorm
    re-statistics the search scored it with (the same batches, so the exported network is the one it scored)."""
    import torch

    from hrnas_automl.oneshot.config import SearchConfig
    from hrnas_automl.oneshot.paths import PathChoice, set_path
    from hrnas_automl.oneshot.search import _bn_batches, load_supernet, recalibrate_bn

    evaluated = state.get("evaluated") or []
    if not evaluated:
        raise ValueError(f"oneshot search state {state_path} has no evaluated candidate yet; run the search longer")
    best = max(evaluated, key=lambda row: row["map"])  # earliest on ties, as run_search
    fingerprint = state["fingerprint"]
    config = SearchConfig.model_validate({**fingerprint["search"], "state": str(state_path)})
    net, _ = load_supernet(config.supernet)
    with torch.no_grad():
        set_path(net.model.backbone, best["arch"])
        recalibrate_bn(net.model, _bn_batches(config, net))
    paths = {name: module for name, module in net.model.named_modules() if isinstance(module, PathChoice)}
    state_dict = {}
    for key, value in net.model.state_dict().items():
        owner = next((name for name in paths if key.startswith(f"{name}.")), None)
        if owner is None:
            state_dict[key] = value
        elif key.startswith(f"{owner}.{paths[owner].active}."):
            state_dict[owner + key[len(owner) + len(paths[owner].active) + 1:]] = value
    supernet = fingerprint["supernet_config"]
    detector = {"num_classes": net.model.num_classes, **supernet.get("detector", {}),
                "input": list(net.data.input_shape)}
    space_args = {**supernet.get("space_args", {}), "in_channels": net.data.input_shape[0]}
    return Source(supernet.get("space"), dict(best["arch"]), f"oneshot search {state_path} candidate "
                  f"{best.get('index')} (map {best['map']:g})", space_args=space_args, state_dict=state_dict,
                  detector=detector)
