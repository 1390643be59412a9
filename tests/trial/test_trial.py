"""The trial config (one-line errors) and the trial entry point run by hand."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hrnas_automl.cli import main
from hrnas_automl.cost import arch_cost
from hrnas_automl.cost.latency import predicted_latency
from hrnas_automl.registry import get_preset
from hrnas_automl.trial import resolve_arch, run_trial
from hrnas_automl.config import ConfigError
from hrnas_automl.trial.config import load_trial_config, parse_trial_config

ARCH = "preset:detnas-coco-fpn-300m"
TINY = {"space": "detnas-small",
        "data": {"kind": "synthetic", "num_classes": 4, "image_size": 32, "train_size": 64, "val_size": 32},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.05, "seed": 0},
        "latency": {"repeats": 2, "warmup": 0}}


@pytest.mark.parametrize(("patch", "message"), [
    ({"epoch": 3}, r"unknown key 'epoch'; allowed keys here: "
                   r"space, space_args, task, task_args, metric, data, train, arch, threads, latency"),
    ({"train": {"epoch": 3}}, r"unknown key 'train.epoch'; allowed keys here: device, amp, channels_last, epochs, "
                              r"steps, batch_size, lr"),
    ({"train": {"lr": 0}}, r"train: Value error, train.lr must be > 0, got 0.0"),
    ({"train": {"epochs": "many"}}, r"train.epochs: Input should be a valid integer"),
    ({"latency": {"repeats": 0}}, r"latency.repeats: Input should be greater than or equal to 1"),
    ({"space": "detnas-tiny"}, r"space: unknown space 'detnas-tiny'; registered spaces: detnas-large, detnas-small"),
    ({"data": {"kind": "imagenet"}}, r"data.kind 'imagenet' is not a dataset of task 'classification'; "
                                     r"use one of: synthetic, digits, folder"),
    ({"task": "no-such-task"}, r"task: unknown task 'no-such-task'; registered tasks: .*classification"),
    ({"task": "detection"}, r"data.kind 'synthetic' is not a dataset of task 'detection'; use one of: shapes, coco"),
    ({"space": "ranet"},
     r"space ranet has no 'classifier' head, which task 'classification' needs \(its heads: exits\)"),
    ({"space_args": {"head": "backbone"}}, r"space_args.head is 'backbone', but task 'classification' trains"),
    ({"task_args": {"budget": 3}}, r"task_args: task 'classification' takes no task_args \(got budget\)"),
])
def test_config_errors_are_one_line_and_name_the_key(patch: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_trial_config({**TINY, **patch}, "trial.yml")
    assert "\n" not in str(info.value) and str(info.value).startswith("trial.yml: ")


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist; pass the YAML file with --config"):
        load_trial_config(tmp_path / "nope.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("space: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_trial_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_trial_config(bad)
    bad.write_text(yaml.safe_dump({k: v for k, v in TINY.items() if k != "space"}))
    with pytest.raises(ConfigError, match="missing required key 'space'"):
        load_trial_config(bad)


def test_run_trial_reports_every_epoch_and_the_common_keys() -> None:
    config = parse_trial_config(TINY)
    arch = dict(get_preset("detnas-coco-fpn-300m").arch)
    seen: list[dict] = []
    finals: list[dict] = []
    result = run_trial(config, arch, report_intermediate=seen.append, report_final=finals.append)
    assert [row["epoch"] for row in seen] == [0, 1]
    assert finals == [result.metrics]
    assert {"default", "macs", "params", "latency_ms"} <= set(result.metrics)
    assert result.metrics["default"] == seen[-1]["default"]
    assert result.metrics["macs"] == arch_cost("detnas-small", arch, (3, 32, 32), num_classes=4).macs
    # latency_ms is the table's prediction for this arch (threads 1: the trial config's default), not a timing
    assert result.metrics["latency_ms"] == predicted_latency("detnas-small", arch, (3, 32, 32), threads=1,
                                                             num_classes=4, head="classifier", in_channels=3)
    measured, iqr = result.metrics["latency_measured_ms"], result.metrics["latency_measured_iqr_ms"]
    assert measured > 0 and iqr >= 0
    again = run_trial(config, arch)
    assert again.metrics["default"] == result.metrics["default"]  # same seed, same result


def test_the_config_names_which_metric_is_default() -> None:
    """``metric:`` ranks another of the task's metrics as ``default`` (Lite-HRNet's short searches: OKS AP is 0 for
    every trial, PCK differs); a metric the task does not report fails at the first epoch, naming those it does."""
    one_epoch = {**TINY, "train": {**TINY["train"], "epochs": 1}, "latency": {"enabled": False}}
    arch = dict(get_preset("detnas-coco-fpn-300m").arch)
    result = run_trial(parse_trial_config({**one_epoch, "metric": "loss"}), arch)
    assert result.metrics["default"] == result.metrics["loss"] == result.epochs[0]["default"]
    with pytest.raises(ConfigError, match=r"^metric: task classification reports no metric 'pck'; use one of: "
                                          r"accuracy, loss, train_loss$"):
        run_trial(parse_trial_config({**one_epoch, "metric": "pck"}), arch)


def test_standalone_arch_resolution(tmp_path: Path) -> None:
    config = parse_trial_config(TINY)
    assert resolve_arch(config) == resolve_arch(config)  # seeded random sample
    assert resolve_arch(config, "preset:detnas-coco-fpn-300m") == dict(get_preset("detnas-coco-fpn-300m").arch)
    with pytest.raises(ConfigError, match="belongs to space detnas-large, but the trial config searches detnas-small"):
        resolve_arch(config, "preset:detnas-coco-fpn-1.3g")


def test_trial_command_by_hand_writes_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "trial.yml"
    cfg.write_text(yaml.safe_dump({**TINY, "output_dir": str(tmp_path / "out")}))
    assert main(["trial", "--config", str(cfg), "--arch", "preset:detnas-coco-retinanet-300m"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["arch"] == dict(get_preset("detnas-coco-retinanet-300m").arch)
    saved = json.loads((tmp_path / "out" / "result.json").read_text())
    assert saved["metrics"]["default"] == lines[-1]["default"] and len(saved["epochs"]) == 2


def test_a_trial_process_imports_neither_lightning_nor_nni_strategies(tmp_path: Path) -> None:
    """What nnictl's trialCommand starts: the modules a trial does not need stay out of its process (issue 21)."""
    cfg = tmp_path / "trial.yml"
    cfg.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "epochs": 1}, "latency": {"enabled": False}}))
    script = ("import sys\nfrom hrnas_automl.cli import main\nassert main(sys.argv[1:]) == 0\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pytorch_lightning', 'lightning_fabric', "
              "'optuna', 'matplotlib') or m.startswith(('nni.nas.strategy', 'nni.nas.experiment', 'nni.nas.oneshot', "
              "'nni.nas.evaluator.pytorch'))))")
    out = subprocess.run([sys.executable, "-c", script, "trial", "--config", str(cfg), "--arch",
                          "preset:detnas-coco-retinanet-300m"], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "[]"


@pytest.mark.slow
def test_two_trials_started_together_report_the_same_latency(tmp_path: Path) -> None:
    """Two trial processes of one architecture started at once on a fresh cache (as nnictl starts two trials):
    the latency table is compiled once, by one of them while the other waits, so both report the same
    ``latency_ms`` however they disturb each other's timing (issue 18: measured, it varied 3x)."""
    import os

    cfg = tmp_path / "trial.yml"
    cfg.write_text(yaml.safe_dump({**TINY, "data": {**TINY["data"], "image_size": 16, "train_size": 32,
                                                    "val_size": 16}, "train": {**TINY["train"], "epochs": 1}}))
    env = {**os.environ, "HRNAS_AUTOML_CACHE": str(tmp_path / "cache")}
    argv = [sys.executable, "-m", "hrnas_automl", "trial", "--config", str(cfg), "--arch", ARCH]
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    finals = [json.loads(proc.communicate(timeout=300)[0].splitlines()[-1]) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert finals[0]["latency_ms"] == finals[1]["latency_ms"] > 0
    assert len(list((tmp_path / "cache" / "tables").glob("*.json"))) == 2  # the raw table and its calibration
