"""Bad input at every entry point gets a clear one-line error and exit status 2, never a traceback: one table of
(command line, files it reads, the pattern of the error line). Issue 17 extends this table."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from hrnas_automl.cli import main
from tests import EXAMPLES

# {tmp} in an argument is the test's temporary folder; FILES are written there first (bytes for a non-UTF-8 file)
FILES: dict[str, str | bytes] = {
    "latin1.yml": b"space: d\xe9tnas-small\n",
    "str_arch.json": '{"space": "detnas-small", "arch": "k3k3"}',
    "gpu99.yml": "space: detnas-small\nspace_args: {num_classes: 4}\ntask: classification\n"
                 "data: {kind: synthetic, train_size: 8, val_size: 4, image_size: 32}\ntrain: {device: 'cuda:99'}\n",
    "banana.yml": "space: detnas-small\ntask: classification\ndata: {kind: synthetic}\ntrain: {device: banana}\n",
}
CASES = [
    (("describe", "detnas-small", "--space-arg", "nclasses=10"),
     r"space detnas-small takes no argument 'nclasses'; its arguments: head, num_classes, in_channels, dropout"),
    (("describe", "ranet", "--space-arg", "nclasses=10"), r"space ranet takes no argument 'nclasses'"),
    (("sample", "detnas-small", "--space-arg", "num_classes=-1"), r"num_classes must be a positive integer, got -1"),
    (("describe", "hrnas", "--space-arg", "bn_momentum=2"), r"bn_momentum must be a number in \[0, 1\], got 2"),
    (("describe", "detnas-small", "--space-arg", "dropout=1.5"), r"dropout must be a number in \[0, 1\], got 1.5"),
    (("describe", "hrnas", "--space-arg", "channel_steps=0"), r"channel_steps must be a positive integer, got 0"),
    (("cost", "ranet", "--arch", "preset:ranet-cifar", "--input", "3x8x8"),
     r"the network does not run at input 3x8x8 \(.*too small\); give a larger input"),
    (("sample", "detnas-small", "--threads", "0"), r"argument --threads: must be an integer >= 1, got '0'"),
    (("tune", "--config", str(EXAMPLES / "hrnas" / "tune_slimming.yml"), "--n-trials", "-3"),
     r"argument --n-trials: must be an integer >= 1, got '-3'"),
    (("make-data", "segmentation", "--out", "{tmp}/data", "--train-size", "0"),
     r"argument --train-size: must be an integer >= 1, got '0'"),
    (("trial", "--config", "{tmp}"), r"trial config .* is a directory; pass the YAML file itself with --config"),
    (("trial", "--config", "{tmp}/latin1.yml"), r"latin1.yml: not UTF-8 text \(byte 8\); save the YAML file as UTF-8"),
    (("cost", "detnas-small", "--arch", "{tmp}/str_arch.json"),
     r"str_arch.json: 'arch' must be a \{label: value\} mapping, got str 'k3k3'"),
    (("trial", "--config", "{tmp}/gpu99.yml"), r"train.device is 'cuda:99' but this machine has \d+ CUDA device"),
    (("trial", "--config", "{tmp}/banana.yml"), r"train.device must be cpu, cuda, cuda:N or mps, got 'banana'"),
    (("export-space", "detnas-small", "-o", "{tmp}/banana.yml/space.json"),
     r"cannot write .*banana.yml/space.json \(Not a directory\); choose a writable path with -o"),
]


@pytest.mark.parametrize(("argv", "pattern"), CASES, ids=[" ".join(argv[:2]) + f" #{i}" for i, (argv, _) in
                                                          enumerate(CASES)])
def test_bad_input_is_one_clear_line(argv: tuple[str, ...], pattern: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    for name, content in FILES.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    try:
        code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    except SystemExit as exc:  # argparse rejects a bad argument before the command runs
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    message = [line for line in err.splitlines() if "error:" in line]
    assert len(message) == 1 and re.search(pattern, message[0]), err
