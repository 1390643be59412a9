"""DetNAS one-shot: supernet weight sharing, MACs table, path sampling, resumable training and search, and
evolution on the fine-tuned supernet beating random candidates under the same backbone MACs limit."""
from __future__ import annotations

import random
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tests import EXAMPLES
from hrnas_automl.cli import main
from hrnas_automl.oneshot.paths import path_choices, set_path
from hrnas_automl.oneshot.config import SearchConfig, SupernetConfig, SupernetTrainSettings
from hrnas_automl.oneshot.search import SearchResult, run_search
from hrnas_automl.oneshot.supernet import build_supernet, sample_path, train_supernet
from hrnas_automl.registry import get_preset
from hrnas_automl.tasks.detection import fcos_loss

EVOLUTION = {"population_size": 8, "select_num": 3, "mutation_num": 3, "crossover_num": 3}
CANDIDATES = 24  # 3 generations of 8
LIMIT = 300e6  # DetNAS's backbone limit in Conv2d MACs (REFERENCE §3.3); the space spans 237-365 M at 224x224


def _supernet_config(data_root: Path, checkpoint: str | Path, **train: Any) -> SupernetConfig:
    return SupernetConfig.model_validate({
        "data": {"kind": "shapes", "root": str(data_root), "train_size": 48, "val_size": 12, "image_size": 64},
        "detector": {"fpn_channels": 32}, "checkpoint": str(checkpoint),
        "train": {"batch_size": 8, "lr": 0.02, "checkpoint_every": 50, **train}})


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shapes")


@pytest.fixture(scope="module")
def supernet(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A supernet trained path-wise on the shapes data (about a minute on one core)."""
    checkpoint = tmp_path_factory.mktemp("supernet") / "supernet.pt"
    train_supernet(_supernet_config(data_root, checkpoint, steps=200))
    return checkpoint


def _search(supernet: Path, state: Path, strategy: str, seed: int, **kw: Any) -> SearchResult:
    return run_search(SearchConfig.model_validate({"supernet": str(supernet), "state": str(state), "seed": seed,
                                                   "strategy": strategy,
                                                   "strategy_args": EVOLUTION if strategy == "evolution" else {},
                                                   "candidates": CANDIDATES, "max_conv_macs": LIMIT,
                                                   "bn_batches": 2}), **kw)


@pytest.fixture(scope="module")
def evolution(supernet: Path, tmp_path_factory: pytest.TempPathFactory) -> SearchResult:
    return _search(supernet, tmp_path_factory.mktemp("evo") / "state.json", "evolution", 0)


def test_macs_table_reproduces_detnas_300m(data_root: Path, tmp_path: Path) -> None:
    net = build_supernet(_supernet_config(data_root, tmp_path / "x.pt"))
    # REFERENCE §5.11: the COCO-FPN-300M backbone is 288.1 M Conv2d MACs at 224x224.
    assert round(net.conv_macs(get_preset("detnas-coco-fpn-300m").arch) / 1e6, 1) == 288.1
    lo, hi = net.conv_macs_bounds()
    assert lo < LIMIT < hi
    k3, k7 = (net.conv_macs({label: op for label in net.choices}) for op in ("k3", "k7"))
    assert lo <= k3 < k7 <= hi


def test_one_path_runs_and_only_it_gets_gradients(data_root: Path, tmp_path: Path) -> None:
    net = build_supernet(_supernet_config(data_root, tmp_path / "x.pt"))
    images, targets = torch.utils.data.default_collate([net.data.train[i] for i in range(2)])
    arch = {label: "k3" for label in net.choices}
    set_path(net.model.backbone, arch)
    fcos_loss(net.model(images), targets).backward()
    for choice in path_choices(net.model.backbone):
        for name in choice.names:
            grads = [p.grad for p in choice._modules[name].parameters()]
            assert all(g is not None for g in grads) if name == "k3" else all(g is None for g in grads)
    net.model.eval()
    with torch.no_grad():
        a = net.model(images)["logits"]
        set_path(net.model.backbone, {label: "xception" for label in net.choices})
        assert not torch.allclose(a, net.model(images)["logits"])
    with pytest.raises(ValueError, match="s1_b0='k9' is not a candidate"):
        set_path(net.model.backbone, {**arch, "s1_b0": "k9"})


def test_macs_binned_sampling_draws_each_bin_alike(data_root: Path, tmp_path: Path) -> None:
    net = build_supernet(_supernet_config(data_root, tmp_path / "x.pt"))
    uniform = sorted(net.conv_macs(sample_path(net.choices, random.Random(i))) for i in range(200))
    low, high = uniform[20], uniform[-20]  # 10% quantiles of uniform paths
    lo, hi = net.conv_macs_bounds()
    bins = [(lo, low), (high, hi + 1)]
    rng = random.Random(0)
    binned = [net.conv_macs(sample_path(net.choices, rng, net.conv_macs, bins)) for _ in range(100)]
    # Uniform paths fall in the outer bins 10% of the time each; bins drawn uniformly (REFERENCE §3.3) half.
    assert 30 < sum(m < low for m in binned) < 70 and 30 < sum(m >= high for m in binned) < 70


def test_training_resumes_exactly(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    config = _supernet_config(data_root, "supernet.pt", steps=4, checkpoint_every=2)
    monkeypatch.chdir(tmp_path / "a")
    train_supernet(config)

    def stop(step: int, _loss: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        train_supernet(config, on_checkpoint=stop)
    ckpt = torch.load("supernet.pt", weights_only=True)
    assert ckpt["step"] == 2
    for key in ("epochs", "label_smoothing", "device", "progress"):  # as written before train: had these keys
        del ckpt["config"]["train"][key]
    torch.save(ckpt, "supernet.pt")
    steps: list[int] = []
    train_supernet(config, on_checkpoint=lambda step, _loss: steps.append(step))
    assert steps == [4]  # resumed at step 2
    a = torch.load(tmp_path / "a" / "supernet.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "supernet.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["loss"] == b["loss"] == train_supernet(config)["loss"]  # a finished run just reports its loss
    other = _supernet_config(data_root, "supernet.pt", steps=4, checkpoint_every=2, lr=0.1)
    with pytest.raises(ValueError, match="written by a different supernet config"):
        train_supernet(other)


def test_train_settings_are_the_trainers_with_the_supernets_defaults(data_root: Path, tmp_path: Path) -> None:
    config = SupernetConfig.model_validate({"data": {"kind": "shapes"}, "checkpoint": "x.pt", "train": {"lr": 0.02}})
    assert config.train == SupernetTrainSettings(steps=200, batch_size=8, lr=0.02)  # the rest: SUPERNET_TRAIN's
    checkpoints: list[int] = []
    by_epochs = _supernet_config(data_root, tmp_path / "s.pt", steps=None, epochs=1, checkpoint_every=4)
    result = train_supernet(by_epochs, on_checkpoint=lambda step, _loss: checkpoints.append(step))
    assert result["steps"] == 6 and checkpoints == [4, 6]  # one pass: 48 images in batches of 8


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad_ckpt = tmp_path / "garbage.pt"
    bad_ckpt.write_bytes(b"not a checkpoint")
    search = tmp_path / "search.yml"
    search.write_text(yaml.safe_dump({"supernet": str(bad_ckpt), "state": str(tmp_path / "s.json")}))
    unknown = tmp_path / "train.yml"
    unknown.write_text(yaml.safe_dump({"data": {"kind": "shapes"}, "checkpoint": "x.pt", "epochs": 3}))
    bad_lr = tmp_path / "bad_lr.yml"
    bad_lr.write_text(yaml.safe_dump({"data": {"kind": "shapes"}, "checkpoint": "x.pt", "train": {"lr": 0}}))
    cases = [(["oneshot", "search", "--config", str(tmp_path / "missing.yml")], "missing.yml does not exist"),
             (["oneshot", "train", "--config", str(unknown)], "unknown key 'epochs'"),
             (["oneshot", "train", "--config", str(bad_lr)], "train.lr must be > 0, got 0.0"),
             (["oneshot", "search", "--config", str(search)], "garbage.pt is not a readable supernet checkpoint")]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err


@pytest.mark.slow
def test_evolution_beats_mean_of_random_candidates(evolution: SearchResult, supernet: Path, tmp_path: Path) -> None:
    random_run = _search(supernet, tmp_path / "random.json", "random", 1)
    assert len(evolution.evaluated) == len(random_run.evaluated) == 24
    assert all(row["conv_macs"] <= LIMIT for row in evolution.evaluated + random_run.evaluated)
    assert [row["generation"] for row in evolution.evaluated] == [g for g in range(3) for _ in range(8)]
    mean_random = statistics.mean(row["map"] for row in random_run.evaluated)
    assert evolution.best["map"] > mean_random > 0.05  # the supernet learned to detect
    # The later generations, bred from the best parents, score higher than random ones on average.
    assert statistics.mean(row["map"] for row in evolution.evaluated[8:]) > mean_random


def _search_yaml(supernet: Path, path: Path, state: Path) -> Path:
    path.write_text(yaml.safe_dump({"supernet": str(supernet), "state": str(state), "seed": 0, "max_conv_macs": LIMIT,
                                    "strategy_args": EVOLUTION, "candidates": CANDIDATES, "bn_batches": 2}))
    return path


@pytest.mark.slow
def test_killed_search_resumes_without_losing_finished_candidates(evolution: SearchResult, supernet: Path,
                                                                  tmp_path: Path) -> None:
    import json
    import subprocess
    import sys
    import time

    state = tmp_path / "state.json"
    config = _search_yaml(supernet, tmp_path / "search.yml", state)
    cli = [sys.executable, "-m", "hrnas_automl", "oneshot", "search", "--config", str(config)]
    proc = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (state.exists() and len(json.loads(state.read_text())["evaluated"]) >= 10):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the search wrote no state in 300 s"
            time.sleep(0.2)
    finally:
        proc.kill()  # SIGKILL mid-search: no cleanup runs
        proc.wait()
    finished = json.loads(state.read_text())["evaluated"]
    assert 10 <= len(finished) < 24
    resumed: list[dict[str, Any]] = []
    result = _search(supernet, state, "evolution", 0, on_candidate=resumed.append)
    assert [r["index"] for r in resumed] == list(range(len(finished), 24))  # nothing finished is evaluated again
    assert result.evaluated[:len(finished)] == finished
    assert result.evaluated == evolution.evaluated  # the same search as an uninterrupted one
    with pytest.raises(ValueError, match="belongs to another search"):
        _search(supernet, state, "evolution", 1)


@pytest.mark.slow
def test_eval_cli_scores_an_arch_like_the_search(evolution: SearchResult, supernet: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import json

    arch = tmp_path / "best.json"
    arch.write_text(json.dumps(evolution.best["arch"]))
    config = _search_yaml(supernet, tmp_path / "search.yml", tmp_path / "unused.json")
    assert main(["oneshot", "eval", "--config", str(config), "--arch", str(arch)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["map"] == pytest.approx(evolution.best["map"], abs=1e-6)
    assert out["conv_macs"] == evolution.best["conv_macs"]


@pytest.mark.slow
def test_nnictl_search_trial_reports_every_candidate(supernet: Path, tmp_path: Path, nni_home: Path) -> None:
    import shutil

    from hrnas_automl.nni.experiment import NniExperiment, nni_env

    examples = EXAMPLES / "detnas"
    shutil.copy(examples / "nnictl_oneshot_search.yml", tmp_path)
    shutil.copy(examples / "oneshot_space.json", tmp_path)
    search = yaml.safe_load((examples / "oneshot_search.yml").read_text())
    search.update(supernet=str(supernet), state="state.json", candidates=3, strategy_args={
        "population_size": 3, "select_num": 1, "mutation_num": 1, "crossover_num": 1})
    (tmp_path / "oneshot_search.yml").write_text(yaml.safe_dump(search))
    config = tmp_path / "nnictl_oneshot_search.yml"
    with NniExperiment.start(config, env=nni_env(home=nni_home)) as exp:
        trials = exp.wait(timeout=420)
    assert [t.status for t in trials] == ["SUCCEEDED"]
    rows = trials[0].intermediate
    assert [row["index"] for row in rows] == [0, 1, 2]
    assert trials[0].metrics["default"] == max(row["default"] for row in rows)
    assert trials[0].metrics["candidates"] == 3
