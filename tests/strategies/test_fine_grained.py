"""The fine-grained (HR-NAS) search on the tiny HR-NAS setting and 32x32 generated shapes: λ orders the MACs,
pruning is physical and lands on the grid, the result is a sample that freezes with its weights, BN
recalibration re-estimates statistics, runs are seeded, the budget is met, and the search reads one YAML dialect as a
prune trial and as a tuning objective."""
from __future__ import annotations

import dataclasses

import functools
import io
from pathlib import Path

import pytest
import torch

from tests import EXAMPLES
from hrnas_automl.arch import choices_of, freeze, validate_arch
from hrnas_automl.config import ConfigError, TrainSettings
from hrnas_automl.cost import cost_table, count_cost
from hrnas_automl.data.shapes import build_shapes
from hrnas_automl.strategies.fine_grained import (FineGrainedResult, FineGrainedSettings, fine_grained_search,
                                                  penalties, prunable_root, shrink)
from hrnas_automl.trial.prune import tuning_objective
from hrnas_automl.cost.latency import latency_table
from hrnas_automl.spaces.hrnas import hrnas_network
from hrnas_automl.tasks.training import recalibrate_bn

SPACE_ARGS = {"setting": "tiny", "transformer": False}
DATA = {"image_size": 32, "train_size": 16, "val_size": 8}
SHAPE = (3, 32, 32)
TRAIN = TrainSettings(epochs=4, batch_size=8)
PRUNE_CONFIG = {"space": "hrnas", "space_args": SPACE_ARGS, "task": "segmentation", "data": {"kind": "shapes", **DATA},
                "train": {"epochs": 2, "batch_size": 8}, "threads": 1}


@functools.cache
def search(lam: float, transformer: bool = False, max_macs: float | None = None) -> FineGrainedResult:
    settings = FineGrainedSettings(lam=lam, threshold=1e-3, warmup=0, max_macs=max_macs)
    return fine_grained_search("hrnas", "segmentation", "shapes", DATA, settings, train=TRAIN,
                               space_args={**SPACE_ARGS, "transformer": transformer})


def model_args(transformer: bool = False) -> dict:
    return {**SPACE_ARGS, "transformer": transformer, "head": "segmentation", "num_classes": 4, "in_channels": 3}


def test_larger_lambda_gives_fewer_macs() -> None:
    macs = [search(lam).metrics["macs"] for lam in (3.0, 10.0, 30.0)]
    assert macs[0] > macs[1] > macs[2]
    assert macs[0] < search(3.0).supernet_macs


def test_pruning_removes_weights_and_the_result_is_a_sample_with_its_weights() -> None:
    result = search(10.0)
    args = model_args()
    choices = choices_of("hrnas", **args)
    assert validate_arch(result.arch, choices, "hrnas") == result.arch  # on the grid
    assert any(v == 0 for v in result.arch.values())  # whole kernel paths were removed
    frozen = hrnas_network(result.arch, **args)  # an independent build of the sample
    independent = count_cost(frozen, SHAPE)
    widest = count_cost(freeze("hrnas", {k: max(v) for k, v in choices.items()}, **args), SHAPE)
    assert result.metrics["params"] == independent.params < widest.params
    assert result.metrics["macs"] == independent.macs
    buffer = io.BytesIO()
    torch.save(result.state_dict, buffer)  # exported weights reload into the frozen sample
    frozen.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    data = build_shapes(**DATA)
    images = torch.stack([data.val[i][0] for i in range(4)])
    frozen.eval()
    assert frozen(images).shape == (4, 4, 8, 8)


def test_prune_steps_report_metric_and_shrinking_macs() -> None:
    result = search(10.0)
    assert [s.epoch for s in result.steps] == [0, 1, 2, 3]
    macs = [s.macs for s in result.steps]
    assert macs == sorted(macs, reverse=True) and macs[-1] == result.metrics["macs"]
    assert all(0 <= s.metric <= 1 for s in result.steps) and result.metrics["default"] == result.steps[-1].metric


def test_same_seed_same_result() -> None:
    settings = FineGrainedSettings(lam=10.0, threshold=1e-3, warmup=0)
    again = fine_grained_search("hrnas", "segmentation", "shapes", DATA, settings, train=TRAIN, space_args=SPACE_ARGS)
    assert again.arch == search(10.0).arch and again.metrics == search(10.0).metrics


def test_tokens_are_pruned_to_the_token_grid() -> None:
    result = search(10.0, transformer=True)
    tokens = {k: v for k, v in result.arch.items() if k.endswith("_tokens")}
    assert tokens and all(v % 4 == 0 for v in tokens.values()) and min(tokens.values()) < 64
    frozen = hrnas_network(result.arch, **model_args(True))
    frozen.load_state_dict(result.state_dict)
    assert count_cost(frozen, SHAPE).params == result.metrics["params"]


def test_budget_of_half_the_supernet_is_met() -> None:
    supernet = search(10.0).supernet_macs
    result = search(0.3, max_macs=supernet / 2)  # λ too small to reach the budget by the threshold alone
    assert search(0.3).metrics["macs"] > supernet / 2 >= result.metrics["macs"]


class _Killed(Exception):
    pass


def test_a_search_stopped_in_its_third_epoch_resumes_from_its_checkpoint_bit_identically(tmp_path: Path) -> None:
    # Tokens too: shrinking a Transformer draws a new embedding's init from torch's RNG, which the checkpoint restores.
    reference = search(10.0, transformer=True)
    settings = FineGrainedSettings(lam=10.0, threshold=1e-3, warmup=0)
    args = {**SPACE_ARGS, "transformer": True}
    checkpoint = tmp_path / "checkpoint.pt"
    seen: list[object] = []

    def stop_at_third(step: object) -> None:
        seen.append(step)
        if len(seen) == 3:
            raise _Killed  # in the third epoch's prune step: the checkpoint holds two epochs

    with pytest.raises(_Killed):
        fine_grained_search("hrnas", "segmentation", "shapes", DATA, settings, train=TRAIN, space_args=args,
                            on_step=stop_at_third, checkpoint=checkpoint)
    state = torch.load(checkpoint, weights_only=True)
    assert len(state["steps"]) == 2 and state["trainer"]["epoch"] == 2
    assert state["arch"] == reference.steps[1].arch  # the widths the network is rebuilt to
    resumed = []
    workers = dataclasses.replace(TRAIN, num_workers=2)  # loading settings change no result: the checkpoint resumes
    result = fine_grained_search("hrnas", "segmentation", "shapes", DATA, settings, train=workers, space_args=args,
                                 on_step=resumed.append, checkpoint=checkpoint)
    assert [s.epoch for s in resumed] == [2, 3]
    assert result.arch == reference.arch and result.metrics == reference.metrics and result.steps == reference.steps
    assert result.state_dict.keys() == reference.state_dict.keys()
    assert all(torch.equal(result.state_dict[k], reference.state_dict[k]) for k in result.state_dict)
    again = fine_grained_search("hrnas", "segmentation", "shapes", DATA, settings, train=TRAIN, space_args=args,
                                on_step=resumed.append, checkpoint=checkpoint)  # finished: no training, same result
    assert len(resumed) == 2 and again.metrics == reference.metrics and again.steps == reference.steps
    with pytest.raises(ValueError, match=r"checkpoint.pt was written by a different prune config .*; delete it"):
        fine_grained_search("hrnas", "segmentation", "shapes", DATA, FineGrainedSettings(lam=3.0), train=TRAIN,
                            space_args=args, checkpoint=checkpoint)
    checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"checkpoint.pt is not a readable fine-grained checkpoint"):
        fine_grained_search("hrnas", "segmentation", "shapes", DATA, settings, train=TRAIN, space_args=args,
                            checkpoint=checkpoint)


def test_shrink_keeps_the_largest_factors_and_removes_empty_paths() -> None:
    torch.manual_seed(0)
    model = hrnas_network({k: max(v) for k, v in choices_of("hrnas", **model_args()).items()}, **model_args())
    root = prunable_root(model)
    unit, other, tied, kept = root.prunable_units()[:4]
    with torch.no_grad():
        unit.alpha.copy_(torch.arange(unit.alpha.numel(), dtype=torch.float32))
        tied.alpha.fill_(-0.5)  # equal |α|: the lower indices stay
    top = unit.alpha.detach()[-4:].clone()
    first = tied.module.dw.weight.detach()[:3].clone()
    before = kept.module.dw
    shrink(model, {unit.label: 4, other.label: 0, tied.label: 3, kept.label: kept.alpha.numel()})
    arch = root.arch()
    assert arch[unit.label] == 4 and arch[other.label] == 0 and arch[tied.label] == 3
    assert torch.equal(unit.module.dw_bn.weight.detach(), top) and unit.module.dw.groups == 4
    assert torch.equal(tied.module.dw.weight.detach(), first) and kept.module.dw is before  # a full count: untouched
    assert other.label not in {u.label for u in root.prunable_units()}
    model.eval()
    assert model(torch.zeros(1, *SHAPE)).shape == (1, 4, 8, 8)


def test_shrink_slices_the_momentum_of_the_survivors() -> None:
    torch.manual_seed(0)
    model = hrnas_network({k: max(v) for k, v in choices_of("hrnas", **model_args()).items()}, **model_args())
    unit = prunable_root(model).prunable_units()[0]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, *SHAPE)).square().mean().backward()
    optimizer.step()
    with torch.no_grad():
        unit.alpha.copy_(torch.randperm(unit.alpha.numel()).float())
    keep = unit.alpha.detach().argsort(descending=True)[:4].sort().values
    old_dw = optimizer.state[unit.module.dw_bn.weight]["momentum_buffer"].clone()
    old_project = optimizer.state[unit.module.project.weight]["momentum_buffer"].clone()
    shrink(model, {unit.label: 4}, optimizer.state)
    assert torch.equal(optimizer.state[unit.module.dw_bn.weight]["momentum_buffer"], old_dw[keep])
    assert torch.equal(optimizer.state[unit.module.project.weight]["momentum_buffer"], old_project[:, keep])
    shapes = {p: p.shape for p in model.parameters()}
    assert all(v["momentum_buffer"].shape == shapes[p] for p, v in optimizer.state.items() if p in shapes)


def test_penalty_is_the_cost_models_macs_per_channel_normalised() -> None:
    args = model_args()
    grids = {k: tuple(sorted(v)) for k, v in choices_of("hrnas", **args).items()}
    widest = {k: max(v) for k, v in grids.items()}
    model = hrnas_network(widest, **args)
    units = prunable_root(model).prunable_units()
    result = penalties(model, cost_table("hrnas", SHAPE, **args), grids)
    for unit in (units[0], units[-1]):  # Δ = ptflops of the network minus that of one grid step fewer, per channel
        lower = max(g for g in grids[unit.label] if g < widest[unit.label])
        fewer = count_cost(hrnas_network({**widest, unit.label: lower}, **args), SHAPE).macs
        step = count_cost(model, SHAPE).macs - fewer
        assert result[unit.label][0] == step / (widest[unit.label] - lower) > 0
    widths = {u.label: u.alpha.numel() for u in units}
    mean = sum(widths[k] * d for k, (d, _) in result.items()) / sum(widths.values())
    assert all(p == pytest.approx(d / mean) for d, p in result.values())


def test_latency_penalty_weighs_the_measured_latency_table() -> None:
    args = model_args()
    grids = {k: tuple(sorted(v)) for k, v in choices_of("hrnas", **args).items()}
    model = hrnas_network({k: max(v) for k, v in grids.items()}, **args)
    table = latency_table("hrnas", SHAPE, threads=1, warmup=1, repeats=3, **args)
    by_latency, by_macs = penalties(model, table, grids), penalties(model, cost_table("hrnas", SHAPE, **args), grids)
    assert by_latency.keys() == by_macs.keys() and by_latency != by_macs
    arch = prunable_root(model).arch()
    label = next(iter(by_latency))
    lower = max(g for g in grids[label] if g < arch[label])
    expected = -table.marginal(arch, label, lower)[0] / (arch[label] - lower)
    assert by_latency[label][0] == max(expected, 0.0)


def test_finetune_epochs_train_the_pruned_network_without_pruning() -> None:
    supernet = search(10.0).supernet_macs
    settings = FineGrainedSettings(lam=0.3, threshold=1e-3, warmup=0, finetune_epochs=2, max_macs=supernet / 2)
    result = fine_grained_search("hrnas", "segmentation", "shapes", DATA, settings, train=TRAIN, space_args=SPACE_ARGS)
    assert [s.epoch for s in result.steps] == [0, 1, 3]  # two prune steps, then the end of fine-tuning
    assert result.steps[1].macs <= supernet / 2 and result.steps[2].macs == result.steps[1].macs
    assert result.steps[2].lam == 0 and result.steps[2].arch == result.steps[1].arch
    with pytest.raises(ValueError, match=r"finetune_epochs must be in \[0, epochs=4\), got 4"):
        fine_grained_search("hrnas", "segmentation", "shapes", DATA, FineGrainedSettings(finetune_epochs=4),
                            train=TRAIN, space_args=SPACE_ARGS)


def test_settings_are_checked_and_max_macs_is_parsed_as_a_number() -> None:
    import yaml

    from hrnas_automl.trial.prune import prune_settings

    written = yaml.safe_load("max_macs: 6.9e6")  # PyYAML leaves 6.9e6 (no sign in the exponent) a string
    assert written == {"max_macs": "6.9e6"} and prune_settings(written).max_macs == 6.9e6
    written = yaml.safe_load("{lam: 1e-3, threshold: 5e-2}")  # so are the small numbers of λ and the threshold
    assert written == {"lam": "1e-3", "threshold": "5e-2"}
    assert (prune_settings(written).lam, prune_settings(written).threshold) == (1e-3, 5e-2)
    for bad, message in (({"max_macs": "lots"}, "max_macs must be a number, got 'lots'"),
                         ({"max_macs": 0}, "max_macs must be > 0 or null"), ({"lam": -1}, "lam must be >= 0")):
        with pytest.raises(ValueError, match=message):
            FineGrainedSettings(**bad)
    with pytest.raises(ValueError, match="batches of >= 2 images"):
        fine_grained_search("hrnas", "segmentation", "shapes", DATA, train=TrainSettings(batch_size=1),
                            space_args=SPACE_ARGS)


def test_bn_recalibration_reestimates_running_stats() -> None:
    model = hrnas_network({k: max(v) for k, v in choices_of("hrnas", **model_args()).items()}, **model_args())
    bn = prunable_root(model).prunable_units()[0].module.dw_bn
    assert torch.all(bn.running_mean == 0)
    images = torch.stack([build_shapes(**DATA).train[i][0] for i in range(8)])
    recalibrate_bn(model, [images[:4], images[4:]])
    first = bn.running_mean.clone()
    assert not torch.all(first == 0) and not model.training and bn.momentum == 0.01
    recalibrate_bn(model, [images[:4], images[4:]])  # a cumulative average, not a moving one: same again
    assert torch.allclose(bn.running_mean, first)


def test_space_without_prunable_units_is_refused() -> None:
    with pytest.raises(ValueError, match="no module with prunable_units"):
        fine_grained_search("detnas-small", "classification", "synthetic", {"image_size": 16, "train_size": 8,
                                                                            "val_size": 4})


def test_tuning_objective_reports_each_step(tmp_path: Path) -> None:
    objective = tuning_objective(**PRUNE_CONFIG, prune={"prune_every": 1})
    seen: list[tuple[int, float, float]] = []
    result = objective({"lam": 10.0, "threshold": 1e-3, "warmup": 0}, lambda *row: seen.append(row))
    assert [s for s, _, _ in seen] == [0, 1] and (seen[-1][1], seen[-1][2]) == (result.metric, result.macs)
    with pytest.raises(ConfigError, match=r"objective_args: prune: the study tunes lam, warmup; remove them"):
        tuning_objective(**PRUNE_CONFIG, prune={"lam": 1.0, "warmup": 1})
    with pytest.raises(ConfigError, match=r"objective_args: prune: unknown keys \['epochs'\]"):
        tuning_objective(**PRUNE_CONFIG, prune={"epochs": 3})
    with pytest.raises(ConfigError, match=r"objective_args: unknown key 'settings'"):
        tuning_objective(**PRUNE_CONFIG, settings={"epochs": 3})
    with pytest.raises(ConfigError, match=r"prune: fine-grained setting max_macs must be a number, got '1e6x'"):
        tuning_objective(**PRUNE_CONFIG, prune={"max_macs": "1e6x"})


def test_tuning_objective_reads_prune_yml_as_the_prune_command_does() -> None:
    import yaml

    from hrnas_automl.trial.prune import load_prune_config

    example = EXAMPLES / "hrnas" / "prune.yml"
    config, prune = load_prune_config(example)
    raw = yaml.safe_load(example.read_text())
    tuned = {key: raw["prune"].pop(key) for key in ("lam", "threshold", "warmup")}
    objective = tuning_objective(**raw)
    assert objective.config == config and {**objective.prune, **tuned} == prune


def test_example_study_reaches_its_trials_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """examples/hrnas/tune.yml at 32x32 and 2 epochs runs one NSGA-II generation of 4 trials with a plot (resuming a
    study, and a study past its first generation: tests/tuning)."""
    import optuna
    import yaml

    from hrnas_automl.cli import main
    from hrnas_automl.tuning.study import CONSTRAINT_KEY, load_study
    from hrnas_automl.tuning.config import load_tune_config

    example = EXAMPLES / "hrnas" / "tune.yml"
    config = yaml.safe_load(example.read_text())
    config["objective_args"].update(data={"kind": "shapes", **DATA}, train={"epochs": 2, "batch_size": 8})
    config.update(n_trials=4, sampler_args={"population_size": 4}, max_macs=search(10.0).supernet_macs / 2)
    path = tmp_path / "tune.yml"
    path.write_text(yaml.safe_dump(config))
    assert main(["tune", "--config", str(path), "--plot", str(tmp_path / "front.png")]) == 0
    study = load_study(load_tune_config(path))
    assert [t.number for t in study.trials if t.state.name == "COMPLETE"] == list(range(4))
    assert "4 finished trials" in capsys.readouterr().out
    assert (tmp_path / "front.png").read_bytes()[:4] == b"\x89PNG"
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):  # the example's budget reached each trial
        assert t.constraints == {CONSTRAINT_KEY: pytest.approx(t.values[1] - config["max_macs"])}


def test_prune_command_reports_each_step_and_writes_the_sample(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import yaml

    from hrnas_automl.cli import main

    config = {"space": "hrnas", "space_args": SPACE_ARGS, "task": "segmentation", "data": {"kind": "shapes", **DATA},
              "train": {"epochs": 2, "batch_size": 8}, "threads": 1, "output_dir": str(tmp_path / "out"),
              "latency": {"repeats": 2, "warmup": 0}, "prune": {"lam": 10.0, "warmup": 0}}
    (tmp_path / "prune.yml").write_text(yaml.safe_dump(config))
    assert main(["prune", "--config", str(tmp_path / "prune.yml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    steps = [json.loads(line) for line in lines[:2]]
    final = json.loads("\n".join(lines[2:]))
    assert [s["epoch"] for s in steps] == [0, 1] and steps[1]["macs"] == final["metrics"]["macs"]
    assert {"default", "miou", "macs", "params", "latency_ms", "trial_s"} <= set(final["metrics"])
    stored = json.loads((tmp_path / "out" / "result.json").read_text())
    frozen = hrnas_network(stored["arch"], **model_args())
    frozen.load_state_dict(torch.load(tmp_path / "out" / "weights.pt", weights_only=True))
    config["prune"] = {"epochs": 3}
    (tmp_path / "bad.yml").write_text(yaml.safe_dump(config))
    assert main(["prune", "--config", str(tmp_path / "bad.yml")]) == 2
    assert "prune: unknown keys ['epochs']" in capsys.readouterr().err


def test_nnictl_example_grids_prune_keys_of_a_valid_prune_config() -> None:
    import json

    import yaml

    from hrnas_automl.trial.prune import PRUNE_KEYS, load_prune_config

    folder = EXAMPLES / "hrnas"
    experiment = yaml.safe_load((folder / "fine_grained.yml").read_text())
    command = experiment["trialCommand"].split()
    assert command[:2] == ["hrnas-automl", "prune"]
    config, prune = load_prune_config(folder / command[command.index("--config") + 1])
    assert config.space == "hrnas" and set(prune) <= set(PRUNE_KEYS)
    assert set(json.loads((folder / experiment["searchSpaceFile"]).read_text())) <= set(PRUNE_KEYS)
