"""examples/detnas/remote.yml for real: nnictl's `remote` training service runs the trials over SSH, here against an
OpenSSH server the test starts on localhost (a free port, a temporary host key, a key authorized for the current
user only). NNI copies the trial code over SSH, starts its trial keeper there with the configured pythonPath and
reads the trials' metrics back. Skipped, with the reason, where sshd or ssh-keygen is missing."""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_nnictl import shrunk_example
from hrnas_automl.nni.experiment import NniExperiment, free_port, nni_env

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
PRIVSEP = Path("/run/sshd")  # sshd started as root refuses to run without it (Debian's service creates it)


@dataclass(frozen=True)
class SshServer:
    port: int
    user: str
    key: Path
    home: Path  # the HOME of SSH sessions: where NNI's remote side keeps its files


def _missing() -> str | None:
    if not os.access(SSHD, os.X_OK):
        return f"no OpenSSH server at {SSHD}: install openssh-server to run NNI's remote training service test"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen not found: install openssh-client"
    if os.geteuid() == 0 and not PRIVSEP.is_dir():
        try:
            PRIVSEP.mkdir(mode=0o755)
        except OSError as exc:
            return f"sshd as root needs {PRIVSEP} and it cannot be created ({exc})"
    return None


def _listening(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


@pytest.fixture
def ssh_server(tmp_path: Path) -> Iterator[SshServer]:
    """sshd on 127.0.0.1 at a free port, key authentication only, stopped at the end."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    folder = tmp_path / "sshd"
    home = tmp_path / "remote_home"
    home.mkdir()
    folder.mkdir()
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True)
    shutil.copy(folder / "user_key.pub", folder / "authorized_keys")
    port = free_port()
    (folder / "sshd_config").write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {folder / 'host_key'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}", f"PidFile {folder / 'sshd.pid'}",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
        "PermitRootLogin prohibit-password", f"AllowUsers {getpass.getuser()}", "StrictModes no", "UsePAM no",
        f"SetEnv HOME={home}", "Subsystem sftp internal-sftp", ""]))
    with open(folder / "sshd.log", "w") as log:
        server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(folder / "sshd_config")], stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        if not _listening(port, 20):
            server.kill()
            pytest.fail(f"sshd did not start: {(folder / 'sshd.log').read_text()[-1000:]}")
        yield SshServer(port, getpass.getuser(), folder / "user_key", home)
    finally:
        server.terminate()
        server.wait(timeout=20)


def _python_path(folder: Path) -> Path:
    """The pythonPath NNI gets: this environment's python, whose ``-m pip`` is skipped (NNI's remote worker first
    runs ``python -m pip install nni --upgrade``: no package index here, and a test does not change the
    environment), and this environment's ``hrnas-automl`` for the trial command."""
    folder.mkdir()
    (folder / "python").write_text(f'#!/bin/sh\nif [ "$1" = "-m" ] && [ "$2" = "pip" ]; then exit 0; fi\n'
                                   f'exec {sys.executable} "$@"\n')
    (folder / "python").chmod(0o755)
    (folder / "python3").symlink_to("python")
    (folder / "hrnas-automl").symlink_to(Path(sys.executable).parent / "hrnas-automl")
    return folder


@pytest.mark.slow
def test_remote_example_runs_trials_over_ssh(ssh_server: SshServer, tmp_path: Path, nni_home: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    config_path = shrunk_example("remote.yml", code, trials=2)
    config = yaml.safe_load(config_path.read_text())
    config["nniManagerIp"] = "127.0.0.1"  # the trial keeper connects back to the manager there
    config["trainingService"]["machineList"] = [{
        "host": "127.0.0.1", "port": ssh_server.port, "user": ssh_server.user, "sshKeyFile": str(ssh_server.key),
        "pythonPath": str(_python_path(tmp_path / "bin"))}]
    config_path.write_text(yaml.safe_dump(config))
    trial = yaml.safe_load((code / "trial.yml").read_text())
    trial["train"]["epochs"] = 1
    (code / "trial.yml").write_text(yaml.safe_dump(trial))
    with NniExperiment.start(config_path, env=nni_env(home=nni_home)) as exp:
        trials = exp.wait(timeout=420)
    assert len(trials) == 2 and all(t.status == "SUCCEEDED" for t in trials), [(t.trial_id, t.status) for t in trials]
    assert all({"default", "macs", "latency_ms"} <= set(t.metrics) for t in trials)
    remote = ssh_server.home / "nni-experiments" / exp.id / "environments"
    assert sorted(p.name for p in (remote / "remote-worker1" / "trials").iterdir()) == sorted(
        t.trial_id for t in trials)  # the trials ran on the SSH side, in its HOME
