"""`hrnas-automl prune` as real processes: killed with SIGKILL after 3 of 5 prune steps and re-run, it ends
bit-identical to an uninterrupted run; a second process given the same output folder is refused naming the first,
whose outputs stay intact; every command with an output folder refuses a folder another process holds."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from hrnas_automl.cli import main
from hrnas_automl.files import OutputLock
from hrnas_automl.spaces.hrnas import hrnas_network
from hrnas_automl.trial.prune import CHECKPOINT

# 5 prune steps (one per epoch) of the tiny HR-NAS on 16 generated 32x32 images, budget-driven: ~1 s per step.
PRUNE = {"space": "hrnas", "space_args": {"setting": "tiny", "transformer": False}, "task": "segmentation",
         "data": {"kind": "shapes", "image_size": 32, "train_size": 16, "val_size": 8},
         "train": {"epochs": 5, "batch_size": 8, "seed": 1}, "threads": 1, "latency": {"enabled": False},
         "prune": {"lam": 3.0, "warmup": 1, "max_macs": "1.5e6"}}
TIMINGS = ("trial_s", "latency_measured_ms", "latency_measured_iqr_ms")  # measured: never equal between two runs


def _config(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump({**PRUNE, "output_dir": str(tmp_path / name)}))
    return path


def _prune(config: Path, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "hrnas_automl.cli", "prune", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _outputs(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    record = json.loads((folder / "result.json").read_text())
    for key in TIMINGS:
        record["metrics"].pop(key, None)
    return record, torch.load(folder / "weights.pt", weights_only=True)


def _assert_same(a: Path, b: Path) -> None:
    (ra, wa), (rb, wb) = _outputs(a), _outputs(b)
    assert ra == rb  # arch, metrics (exact floats), every step, supernet MACs
    assert wa.keys() == wb.keys() and all(wa[k].dtype == wb[k].dtype and torch.equal(wa[k], wb[k]) for k in wa)


@dataclass
class FirstRun:
    """An uninterrupted prune process, stopped (SIGSTOP) once it held its output folder while a second prune
    process was given the same folder, then continued to its end."""

    out: Path
    pid: int
    returncode: int
    second_returncode: int
    second_stderr: str


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> FirstRun:
    tmp = tmp_path_factory.mktemp("first")
    config = _config(tmp, "out")
    run = _prune(config)
    lock = tmp / "out" / OutputLock.FILE
    try:
        while run.poll() is None and not (lock.exists() and str(run.pid) in lock.read_text()):
            time.sleep(0.02)
        run.send_signal(signal.SIGSTOP)  # it holds the folder while the second process tries it
        second = _prune(config)
        _, second_err = second.communicate(timeout=120)
    finally:
        run.send_signal(signal.SIGCONT)
    _, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    return FirstRun(tmp / "out", run.pid, run.returncode, second.returncode, second_err)


def _steps_done(checkpoint: Path) -> int:
    return len(torch.load(checkpoint, weights_only=True)["steps"]) if checkpoint.exists() else 0


@pytest.mark.slow
def test_a_second_prune_on_the_same_folder_is_refused_and_the_first_ends_intact(first: FirstRun) -> None:
    assert first.second_returncode == 2
    assert first.second_stderr.strip().splitlines() == [
        f"hrnas-automl: error: {first.out} is in use by process {first.pid} (prune); wait for it to end or choose "
        "another output folder"]
    record, weights = _outputs(first.out)
    assert len(record["steps"]) == 5 and _steps_done(first.out / CHECKPOINT) == 5
    args = {**PRUNE["space_args"], "head": "segmentation", "num_classes": 4, "in_channels": 3}
    hrnas_network(record["arch"], **args).load_state_dict(weights)  # the searched sample with its weights


def _signal_after(tmp_path: Path, steps: int, sig: signal.Signals) -> tuple[Path, Path, subprocess.Popen[str], str]:
    """A prune process sent ``sig`` once its checkpoint holds ``steps`` steps: its config, checkpoint, process and
    stderr."""
    config = _config(tmp_path, "out")
    checkpoint = tmp_path / "out" / CHECKPOINT
    # SIGINT as a terminal sends it, even when this test runs where it is ignored (a background job): Python turns
    # it into KeyboardInterrupt only if its disposition is the default when the process starts
    run = _prune(config, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while run.poll() is None and _steps_done(checkpoint) < steps:
        time.sleep(0.02)
    run.send_signal(sig)
    _, err = run.communicate(timeout=120)
    return config, checkpoint, run, err


@pytest.mark.slow
def test_prune_killed_after_3_of_5_steps_resumes_bit_identically(first: FirstRun, tmp_path: Path) -> None:
    config, checkpoint, run, _ = _signal_after(tmp_path, 3, signal.SIGKILL)
    done = _steps_done(checkpoint)  # 3, or 4 when the kill landed after the next step (2 busy cores)
    assert run.returncode == -signal.SIGKILL and done in (3, 4)
    assert not (tmp_path / "out" / "result.json").exists()
    again = _prune(config)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert err.splitlines()[0] == f"resuming from {checkpoint} (delete it to start afresh)"
    reported = [json.loads(line)["epoch"] for line in out.splitlines() if line.startswith('{"default"')]
    assert reported == list(range(done, 5))  # resumed after the last checkpointed step, not started afresh
    _assert_same(first.out, tmp_path / "out")  # the first run's outputs, intact, equal the resumed run's


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume_instead_of_a_traceback(tmp_path: Path) -> None:
    _, checkpoint, run, err = _signal_after(tmp_path, 1, signal.SIGINT)
    assert run.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == f"interrupted; rerun the same command to resume from {checkpoint}"


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding ``tmp_path/held`` as its output folder."""
    proc = subprocess.Popen([sys.executable, "-c", (
        "import time\nfrom hrnas_automl.files import OutputLock\n"
        f"with OutputLock({str(tmp_path / 'held')!r}, 'holder'):\n"
        "    print('held', flush=True)\n    time.sleep(120)\n")],
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


def _write(tmp_path: Path, name: str, data: dict) -> str:
    (tmp_path / name).write_text(yaml.safe_dump(data))
    return str(tmp_path / name)


TRIAL = {"space": "detnas-small", "data": {"kind": "synthetic", "num_classes": 4, "image_size": 32},
         "train": {"epochs": 1, "batch_size": 32}}
COMMANDS = {
    "prune": lambda t, held: ["prune", "--config", _write(t, "p.yml", {**PRUNE, "output_dir": held})],
    "trial": lambda t, held: ["trial", "--config", _write(t, "t.yml", {**TRIAL, "output_dir": held})],
    "make-data": lambda t, held: ["make-data", "segmentation", "--out", held],
    "oneshot train": lambda t, held: ["oneshot", "train", "--config", _write(
        t, "s.yml", {"data": {"kind": "shapes"}, "checkpoint": f"{held}/supernet.pt"})],
    "oneshot search": lambda t, held: ["oneshot", "search", "--config", _write(
        t, "o.yml", {"supernet": f"{t}/supernet.pt", "state": f"{held}/state.json"})],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_with_an_output_folder_refuses_one_another_process_holds(
        command: str, holder: subprocess.Popen[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NNI_OUTPUT_DIR", raising=False)
    held = tmp_path / "held"
    assert main(COMMANDS[command](tmp_path, str(held))) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"hrnas-automl: error: {held} is in use by process {holder.pid} (holder); wait for it to end or "
                   "choose another output folder")
    assert sorted(p.name for p in held.iterdir()) == [OutputLock.FILE]  # nothing written into the held folder
