"""Every example nnictl config names things that exist: its tuner class and arguments, its search-space
file (current), and a trial config that validates. Catches a broken example without running nnictl."""
from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

import pytest
import yaml

from tests import EXAMPLES
from hrnas_automl.arch import choices_of
from hrnas_automl.cost.latency import latency_table
from hrnas_automl.nni.compat import to_nni_search_space
from hrnas_automl.nni.tuners import StrategyTuner
from hrnas_automl.oneshot.config import SearchConfig, SupernetConfig, load_config
from hrnas_automl.strategies import Evolution
from hrnas_automl.tasks import get_task
from hrnas_automl.trial.config import load_trial_config

DETNAS = EXAMPLES / "detnas"
EXAMPLES = sorted((EXAMPLES).glob("*/*.yml"))
EXPERIMENTS = [p for p in EXAMPLES  # architecture searches; the Optuna tuning examples: test_tune_examples.py
               if yaml.safe_load(p.read_text()).get("trialCommand", "").startswith("hrnas-automl trial ")]


def test_there_are_examples() -> None:
    assert {p.name for p in EXPERIMENTS} >= {"random.yml", "evolution.yml", "tpe.yml"}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_experiment_config_is_consistent(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    command = config["trialCommand"].split()
    config_file = path.parent / config["trialCodeDirectory"] / command[command.index("--config") + 1]
    if command[:2] == ["hrnas-automl", "oneshot"]:  # one trial runs the whole one-shot step
        model = {"train": SupernetConfig, "search": SearchConfig}[command[2]]
        load_config(config_file, model)
        assert config["maxTrialNumber"] == 1
        return
    assert command[:2] == ["hrnas-automl", "trial"]
    trial = load_trial_config(config_file)
    space_file = json.loads((path.parent / config["searchSpaceFile"]).read_text())
    task = get_task(trial.task)
    built = {**trial.space_args, **task.model_args(task.build_data(trial.data.kind, trial.data.options())),
             "head": task.head}  # the space the trial builds (trial.run_trial)
    space_args = built
    tuner = config["tuner"]
    if "className" in tuner:
        module, _, name = tuner["className"].rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        args = dict(tuner.get("classArgs", {}))
        assert args["space"] == trial.space
        space_args = args.get("space_args", {})
        assert trial.space_args.items() <= space_args.items()
        assert {k: built[k] for k in space_args} == space_args, "the tuner's space differs from the trial's"
        known = set(inspect.signature(cls.__init__).parameters) | set(inspect.signature(Evolution.__init__).parameters)
        assert set(args) <= known, f"unknown classArgs {set(args) - known}"
        if "max_latency_ms" in args:  # this machine's latency, not the example's: a limit inside this machine's range
            (lo,), (hi,) = latency_table(trial.space, args.get("input_shape"), threads=args.get("latency_threads"),
                                         backend=args.get("latency_backend", "torch"), **space_args).bounds()
            args["max_latency_ms"] = (lo + hi) / 2
        built_tuner = cls(**args)
        for hosted in getattr(built_tuner, "tuners", {"": built_tuner}).values():  # a MultiStrategyTuner hosts several
            assert not isinstance(hosted, StrategyTuner) or hosted.strategy is not None  # builds it: valid arguments
    tags = list(getattr(built_tuner, "tuners", {})) if "className" in tuner else []
    assert space_file == to_nni_search_space(choices_of(trial.space, **space_args), strategies=tags)


@pytest.mark.parametrize("name", ["gpu_local.yml", "remote.yml"])
def test_gpu_and_remote_experiments_validate_with_nni(name: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """NNI's own config classes accept them as nnictl would (``ExperimentConfig.load`` + its canonical validation:
    search space read, GPU settings consistent, the SSH key file present: a placeholder under a temporary HOME)."""
    from nni.experiment.config import ExperimentConfig

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_ed25519").write_text("placeholder\n")
    config = ExperimentConfig.load(DETNAS / name).canonical_copy()
    service = config.training_service
    if name == "gpu_local.yml":
        assert service.platform == "local" and config.trial_gpu_number == 1 and service.use_active_gpu is False
        assert config.trial_concurrency == len(service.gpu_indices) * service.max_trial_number_per_gpu
    else:
        assert service.platform == "remote" and config.nni_manager_ip is not None
        assert all(m.python_path and Path(m.ssh_key_file) == tmp_path / ".ssh" / "id_ed25519"
                   for m in service.machine_list)
    assert config.search_space == json.loads((DETNAS / "search_space_small.json").read_text())
