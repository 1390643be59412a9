"""The report's numbers on runs written by hand (best-so-far, Pareto fronts, the table, the rank test), a
multi-strategy experiment split by its trials' ``strategy`` parameter, the other inputs (one-shot state, prune
result), and the page: self-contained, and rendered by headless Chromium where it is installed."""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from hrnas_automl.cli import main
from hrnas_automl.report.analysis import best_so_far, pareto_front, significance, strategy_table
from hrnas_automl.report.page import build_report, write_report
from hrnas_automl.report.runs import Run, TrialPoint, read_runs
from tests.nni.nni_db import write_experiment


def _run(strategy: str, seed: int, metrics: list[float], macs: list[float] | None = None) -> Run:
    macs = macs or [1.0] * len(metrics)
    return Run(f"{strategy}{seed}", strategy, seed, True,
               [TrialPoint(m, 10.0 * (i + 1), {"macs": c}) for i, (m, c) in enumerate(zip(metrics, macs))])


def test_best_so_far_and_the_pareto_front() -> None:
    trials = [TrialPoint(m, None, {"macs": c}, str(i)) for i, (m, c) in
              enumerate([(0.3, 5), (0.5, 4), (0.4, 2), (0.5, 6), (0.2, 1), (0.5, 4)])]
    assert best_so_far(trials, True) == [0.3, 0.5, 0.5, 0.5, 0.5, 0.5]
    assert best_so_far(trials, False) == [0.3, 0.3, 0.3, 0.3, 0.2, 0.2]
    # cheaper-or-equal and better-or-equal removes a point; of the two equal (0.5, 4) the first stays
    assert [t.name for t in pareto_front(trials, "macs", True)] == ["4", "2", "1"]
    assert [t.name for t in pareto_front(trials, "params", True)] == []


def test_table_counts_trials_and_time_to_the_target() -> None:
    runs = [_run("a", 0, [0.1, 0.6, 0.5]), _run("a", 1, [0.2, 0.3, 0.4]), _run("b", 0, [0.7])]
    a, b = strategy_table(runs, target=0.5)
    assert (a["seeds"], a["trials"], a["best"], a["median_best"], a["min_best"]) == (2, 6, 0.6, 0.5, 0.4)
    assert a["reached_target"] == 1 and a["median_trials_to_target"] == 2 and a["median_time_to_target_s"] == 20.0
    assert [r["trials_to_target"] for r in a["runs"]] == [2, None]
    assert (b["best"], b["median_trials_to_target"], b["median_time_s"]) == (0.7, 1, 10.0)


def test_rank_test_over_seeds_and_too_few_seeds() -> None:
    good = [_run("evolution", s, [0.8 + s / 100]) for s in range(5)]
    bad = [_run("random", s, [0.5 + s / 100]) for s in range(5)]
    (c,) = significance(good + bad)
    assert c.p_two_sided == pytest.approx(2 / 252) and c.p_first_better == pytest.approx(1 / 252)
    assert c.p_second_better == pytest.approx(1.0) and c.sentence.startswith("evolution is better than random")
    (few,) = significance(good[:2] + bad[:3])
    assert few.p_two_sided is None and "too few seeds" in few.sentence and "0.2 >= 0.05" in few.sentence
    (same,) = significance([_run("x", s, [0.5 + s / 10]) for s in range(4)] +
                           [_run("y", s, [0.55 + s / 10]) for s in range(4)])
    assert same.p_two_sided > 0.05 and same.sentence.startswith("no significant difference between x and y")


def test_a_multi_strategy_experiment_is_split_by_its_trials_strategy(tmp_path: Path) -> None:
    tuner = {"className": "hrnas_automl.nni.MultiStrategyTuner", "classArgs": {"strategies": [
        {"strategy": "random", "seed": 7}, {"strategy": "evolution", "seed": 8, "population_size": 2}]}}
    trials = [({"strategy": "random", "x": 1}, {"default": 0.2, "macs": 5.0, "latency_ms": 2.0}),
              ({"strategy": "evolution", "x": 2}, {"default": 0.6, "macs": 4.0, "params": 9.0}),
              ({"strategy": "random", "x": 3}, {"default": 0.4, "macs": 3.0}),
              ({"strategy": "evolution", "x": 4}, None)]
    runs = read_runs([str(write_experiment(tmp_path, "multi", tuner, trials))])
    assert [(r.strategy, r.seed, [t.metric for t in r.trials], r.unscored) for r in runs] == [
        ("random", 7, [0.2, 0.4], 0), ("evolution", 8, [0.6], 1)]
    assert [t.time_s for t in runs[0].trials] == [10.0, 30.0]  # from the first trial's start, when results arrived
    assert runs[0].trials[0].costs == {"macs": 5.0, "latency_ms": 2.0}


def test_oneshot_state_and_prune_result_are_runs(tmp_path: Path) -> None:
    state = {"kind": "hrnas-automl oneshot search", "fingerprint": {"search": {"strategy": "evolution", "seed": 4}},
             "evaluated": [{"index": 0, "map": 0.1, "macs": 7.0}, {"index": 1, "map": 0.3, "macs": 8.0}]}
    (tmp_path / "state.json").write_text(json.dumps(state))
    (tmp_path / "prune").mkdir()
    (tmp_path / "prune" / "result.json").write_text(json.dumps({
        "space": "hrnas", "arch": {"a": 1}, "metrics": {"default": 0.6}, "prune": {"lam": 0.1},
        "steps": [{"epoch": 0, "default": 0.5, "macs": 9.0, "params": 3.0}, {"epoch": 1, "default": 0.6, "macs": 6.0,
                                                                            "params": 2.0}]}))
    oneshot, prune = read_runs([str(tmp_path / "state.json"), str(tmp_path / "prune")])
    assert (oneshot.strategy, oneshot.seed, [t.metric for t in oneshot.trials]) == ("oneshot-evolution", 4, [0.1, 0.3])
    assert oneshot.trials[1].costs == {"macs": 8.0} and oneshot.trials[1].time_s is None
    assert (prune.strategy, [t.costs["macs"] for t in prune.trials]) == ("fine-grained", [9.0, 6.0])


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def _experiments(root: Path) -> list[str]:
    folders = []
    for strategy, base in (("random", 0.3), ("evolution", 0.5)):
        for seed in range(3):
            tuner = {"className": "hrnas_automl.nni.StrategyTuner", "classArgs": {"strategy": strategy, "seed": seed}}
            trials = [({"x": i}, {"default": base + 0.05 * ((i * (seed + 1)) % 4), "macs": 1e6 * (5 + i),
                                  "params": 1e5 * (9 - i), "latency_ms": 1.0 + i}) for i in range(4)]
            folders.append(str(write_experiment(root, f"{strategy}{seed}", tuner, trials)))
    return folders


def test_page_is_self_contained_and_the_cli_writes_every_file(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    inputs = _experiments(tmp_path / "exps")
    assert main(["report", *inputs, "-o", str(tmp_path / "out"), "--target", "0.6"]) == 0
    printed = capsys.readouterr().out
    assert "| evolution | 3 | 12 |" in printed and "too few seeds" in printed
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 2 and "http" not in page and "<script" not in page
    assert "min-max over seeds" in page
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    evo = next(row for row in data["strategies"] if row["strategy"] == "evolution")
    assert evo["best"] == pytest.approx(0.65) and (evo["reached_target"], data["target"]) == (3, 0.6)
    rnd = next(row for row in data["strategies"] if row["strategy"] == "random")
    assert rnd["reached_target"] == 0 and rnd["median_trials_to_target"] is None
    for name in ("progress.png", "pareto.png"):
        assert _png_size(tmp_path / "out" / name)[0] > 1000


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_headless_chromium_renders_the_page(tmp_path: Path) -> None:
    paths = write_report(_experiments(tmp_path / "exps"), tmp_path / "out")
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1400,2000", paths["html"].resolve().as_uri()], check=True, capture_output=True,
                   timeout=120)
    assert _png_size(shot) == (1400, 2000)
    from PIL import Image

    with Image.open(shot) as image:
        colours = image.convert("L").getextrema()
        histogram = image.convert("L").histogram()
    assert colours[0] < 50 and colours[1] > 200  # text and figures on white, not a blank page
    assert sum(histogram[:200]) > 0.01 * 1400 * 2000  # more than a few dark pixels: the tables and plots drew


def test_build_report_default_target_is_the_median_of_the_runs_bests(tmp_path: Path) -> None:
    report = build_report(_experiments(tmp_path / "exps"))
    bests = sorted(max(t.metric for t in run.trials) for run in report.runs)
    assert report.target == pytest.approx((bests[2] + bests[3]) / 2)
