"""Export sources: a prune result folder (its weights), a oneshot search (the best candidate with the supernet's
weights along its path after the search's BatchNorm re-statistics, as the whole detector), an NNI experiment's
database and trial folder (as nnictl leaves them), an Optuna study, and the CLI."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import optuna
import pytest
import torch

from hrnas_automl.arch import load_arch, resolve_space
from hrnas_automl.cli import main
from hrnas_automl.export.command import export
from hrnas_automl.export.network import FORMS
from hrnas_automl.export.sources import read_source
from hrnas_automl.files import save_torch_atomic, write_json_atomic
from hrnas_automl.nni.compat import STRATEGY_KEY
from tests.export.helpers import expected_outputs, loader_diffs, onnx_diff, random_statistics

PRESET = load_arch("preset:detnas-coco-fpn-300m")[1]


def _prune_folder(folder: Path) -> tuple[dict[str, object], dict[str, torch.Tensor]]:
    """A folder as ``hrnas-automl prune`` leaves it (result.json + weights.pt of the searched sample), for a narrow
    tiny HR-NAS segmentation network whose BatchNorms have trained-looking statistics."""
    space = resolve_space("hrnas", setting="tiny", head="segmentation", num_classes=3)
    arch = {label: values[1] if label.endswith("_k3") else 0 for label, values in space.choices.items()}
    state = random_statistics(space.freeze(arch)).state_dict()
    save_torch_atomic(state, folder / "weights.pt")
    write_json_atomic({"space": "hrnas", "arch": arch, "metrics": {"default": 0.5}, "prune": {"lam": 1e-3},
                       "supernet_macs": 1, "steps": []}, folder / "result.json", indent=2)
    return arch, state


def test_prune_folder_exports_with_its_weights(tmp_path: Path) -> None:
    arch, state = _prune_folder(tmp_path / "prune")
    out, lines = tmp_path / "out", []
    record = export("hrnas", output=out, source_ref=str(tmp_path / "prune"), input_shape=(3, 32, 32),
                    space_args={"setting": "tiny", "head": "segmentation", "num_classes": 3}, latency=False,
                    log=lines.append)
    assert record["arch"] == arch and record["weights"]["from"].startswith("prune result") and "seed" not in record
    assert "random initialisation" not in lines[0] and "prune result" in lines[0]
    exported = torch.load(out / "weights.pt", weights_only=True)
    assert exported.keys() == state.keys() and all(torch.equal(exported[k], v) for k, v in state.items())
    x, expected = expected_outputs(out)
    assert onnx_diff(out, x, expected) <= 1e-4
    assert loader_diffs(out)["diffs"][str(out)] <= 1e-4


def test_prune_weights_that_do_not_fit_the_space_arguments_are_one_line(tmp_path: Path) -> None:
    _prune_folder(tmp_path / "prune")
    with pytest.raises(ValueError, match=r"the weights of prune result .* do not fit the network built with space "
                                         r"arguments .*; give the run's space arguments with --space-arg"):
        export("hrnas", output=tmp_path / "out", source_ref=str(tmp_path / "prune"),
               space_args={"setting": "tiny", "head": "segmentation", "num_classes": 5}, latency=False)
    assert not (tmp_path / "out" / "arch.json").exists()


def _nni_experiment(home: Path, exp_id: str = "abc123") -> Path:
    """An experiment as nnictl leaves it in ``$HOME/nni-experiments``: the registry, the SQLite database (the
    manager's schema, parameters in TrialJobEvent, final metrics JSON-encoded twice) and the trial folders; trial B's
    folder holds weights.pt (a prune trial under nnictl writes one)."""
    root = home / "nni-experiments"
    (root / exp_id / "db").mkdir(parents=True)
    (root / ".experiment").write_text(json.dumps({exp_id: {"id": exp_id, "logDir": str(root), "status": "STOPPED"}}))
    archs = {"A": {**PRESET, "s1_b0": "k3"}, "B": {**PRESET, "s1_b0": "k5", STRATEGY_KEY: "evolution"},  # B: tagged
             "C": {**PRESET, "s1_b0": "k7"}}
    metrics = {"A": 0.4, "B": 0.7, "C": None}  # C failed: no final metric
    conn = sqlite3.connect(root / exp_id / "db" / "nni.sqlite")
    conn.executescript("""
        create table TrialJobEvent (timestamp integer, trialJobId text, event text, data text, logPath text,
                                    sequenceId integer, message text, environmentId text);
        create table MetricData (timestamp integer, trialJobId text, parameterId text, type text, sequence integer,
                                 data text);
        create table ExperimentProfile (params text, id text, execDuration integer, startTime integer,
                                        endTime integer, logDir text, nextSequenceId integer, revision integer);""")
    profile = {"experimentName": "x", "tuner": {"className": "hrnas_automl.nni.StrategyTuner", "classArgs": {
        "strategy": "evolution", "space": "detnas-small", "space_args": {"num_classes": 10},
        "optimize_mode": "maximize"}}}
    conn.execute("insert into ExperimentProfile values (?,?,?,?,?,?,?,?)",
                 (json.dumps(profile), exp_id, 0, 0, 0, str(root / exp_id), 3, 1))
    for pid, (trial, arch) in enumerate(archs.items()):  # parameters go to trials in another order (NNI.md §3)
        folder = root / exp_id / "environments" / "local-env" / "trials" / trial
        folder.mkdir(parents=True)
        hp = {"parameter_id": pid, "parameter_source": "algorithm", "parameters": arch, "parameter_index": 0}
        conn.execute("insert into TrialJobEvent values (?,?,?,?,?,?,?,?)",
                     (pid, trial, "WAITING", json.dumps(hp), str(folder), pid, None, None))
        conn.execute("insert into TrialJobEvent values (?,?,?,?,?,?,?,?)",
                     (pid, trial, "SUCCEEDED", "", str(folder), pid, None, None))
        if metrics[trial] is not None:
            data = json.dumps(json.dumps({"default": metrics[trial], "macs": 1.0}))
            conn.execute("insert into MetricData values (?,?,?,?,?,?)", (pid, trial, str(pid), "FINAL", 0, data))
    conn.commit()
    conn.close()
    return root / exp_id / "environments" / "local-env" / "trials"


def test_nni_trial_best_or_named_with_the_tuners_space_arguments(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    trials = _nni_experiment(tmp_path)
    best = read_source("nni:abc123")
    assert best.arch["s1_b0"] == "k5" and "trial B (default 0.7)" in best.origin and STRATEGY_KEY not in best.arch
    assert best.space == "detnas-small" and best.space_args == {"num_classes": 10} and best.state_dict is None
    assert read_source("nni:abc123:A").arch["s1_b0"] == "k3"
    with pytest.raises(ValueError, match=r"no finished trial 'C' \(finished: A, B\)"):
        read_source("nni:abc123:C")
    with pytest.raises(ValueError, match=r"no NNI experiment 'nope' \(.*nope/db/nni.sqlite does not exist\)"):
        read_source("nni:nope")
    net = resolve_space("detnas-small", num_classes=10).freeze(best.arch)
    save_torch_atomic(random_statistics(net).state_dict(), trials / "B" / "weights.pt")
    assert read_source("nni:abc123").state_dict.keys() == net.state_dict().keys()
    write_json_atomic({"space": "detnas-small", "arch": {**PRESET, "s1_b0": "k3"}, "metrics": {}, "epochs": []},
                      trials / "A" / "result.json")  # what `hrnas-automl trial` writes to $NNI_OUTPUT_DIR
    folder = read_source(str(trials / "A"))
    assert folder.arch["s1_b0"] == "k3" and folder.state_dict is None and folder.origin.startswith("trial result")


def test_cli_exports_an_nni_trial_with_the_weights_in_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    trials = _nni_experiment(tmp_path)
    net = random_statistics(resolve_space("detnas-small", num_classes=10).freeze({**PRESET, "s1_b0": "k5"}))
    save_torch_atomic(net.state_dict(), trials / "B" / "weights.pt")
    out = tmp_path / "out"
    assert main(["export", "detnas-small", "--from", "nni:abc123", "--input", "3x32x32", "-o", str(out),
                 "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "weights: NNI experiment abc123 trial B" in printed and "ONNX Runtime max abs difference" in printed
    assert "latency ms (batch 1, 1 thread(s), interleaved medians): eager" in printed
    record = json.loads((out / "arch.json").read_text())
    ms = record["cost"]["latency_ms"]
    assert set(ms) == {"eager", "folded", "onnxruntime"}
    assert record["fastest"] == min(("folded", "onnxruntime"), key=ms.get)  # the faster exported form, named
    assert f"fastest: {FORMS[record['fastest']]}" in printed
    x, expected = expected_outputs(out)
    with torch.no_grad():
        assert torch.allclose(net(x), expected[0])  # the trial's weights, not an initialisation
    assert onnx_diff(out, x, expected) <= 1e-4


def test_optuna_trial_parameters_are_the_architecture(tmp_path: Path) -> None:
    journal = tmp_path / "studies.log"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.create_study(study_name="arch", storage=storage, direction="maximize")
    choices = resolve_space("detnas-small").choices
    for value, op in ((0.3, "k3"), (0.9, "xception")):
        arch = {**PRESET, "s2_b1": op}
        study.add_trial(optuna.trial.create_trial(
            params=arch, distributions={k: optuna.distributions.CategoricalDistribution(choices[k]) for k in arch},
            value=value))
    assert read_source(f"optuna:{journal}:arch:0").arch == {**PRESET, "s2_b1": "k3"}
    best = read_source(f"optuna:{journal}:arch:best")
    assert best.arch["s2_b1"] == "xception" and "trial 1" in best.origin and best.space is None
    with pytest.raises(ValueError, match="has no trial 7"):
        read_source(f"optuna:{journal}:arch:7")


@pytest.fixture(scope="module")
def oneshot_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny) one-shot run: a supernet trained 4 steps on 64x64 shapes, then 3 random candidates (at 32x32 the
    C5 map is 1x1, where the head's GroupNorm of one channel per group refuses a batch of 1)."""
    from hrnas_automl.oneshot.config import SearchConfig, SupernetConfig
    from hrnas_automl.oneshot.search import run_search
    from hrnas_automl.oneshot.supernet import train_supernet

    root = tmp_path_factory.mktemp("oneshot")
    train_supernet(SupernetConfig.model_validate({
        "data": {"kind": "shapes", "root": str(root / "data"), "train_size": 16, "val_size": 4, "image_size": 64},
        "detector": {"fpn_channels": 16, "head_depth": 1}, "checkpoint": str(root / "supernet.pt"),
        "train": {"steps": 4, "batch_size": 4, "lr": 0.01, "checkpoint_every": 4}}))
    run_search(SearchConfig.model_validate({"supernet": str(root / "supernet.pt"), "state": str(root / "search" /
               "state.json"), "strategy": "random", "candidates": 3, "bn_batches": 1, "batch_size": 4}))
    return root / "search"


def test_oneshot_search_exports_the_detector_it_scored(oneshot_state: Path, tmp_path: Path) -> None:
    from hrnas_automl.oneshot.config import SearchConfig
    from hrnas_automl.oneshot.paths import set_path
    from hrnas_automl.oneshot.search import _bn_batches, load_supernet, recalibrate_bn

    out = tmp_path / "out"
    record = export("detnas-small", output=out, source_ref=str(oneshot_state), latency=False)
    state = json.loads((oneshot_state / "state.json").read_text())
    best = max(state["evaluated"], key=lambda row: row["map"])
    assert record["arch"] == best["arch"] and record["head"] == "detector" and record["input"] == [3, 64, 64]
    assert record["detector"]["fpn_channels"] == 16 and record["outputs"][:3] == ["logits", "dist", "centerness"]
    config = SearchConfig.model_validate({**state["fingerprint"]["search"], "state": str(oneshot_state)})
    net, _ = load_supernet(config.supernet)  # the search's own scoring of this candidate
    set_path(net.model.backbone, best["arch"])
    with torch.no_grad():
        recalibrate_bn(net.model, _bn_batches(config, net))
    x, expected = expected_outputs(out)
    with torch.no_grad():
        scored = net.model.eval()(x)
    assert all(torch.allclose(scored[k], e, rtol=1e-5, atol=1e-5) for k, e in zip(scored, expected))
    assert loader_diffs(out)["diffs"][str(out)] <= 1e-4
