"""Every code snippet of README.md runs as printed: each is a fenced block naming its language; Python blocks run
(the quick ones here, the ones that train or export in the slow test), shell blocks parse with ``bash -n`` and
their ``hrnas-automl`` commands parse with the CLI's own parser, and the files and make targets they name exist."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests import EXAMPLES
from hrnas_automl.cli import build_parser

ROOT = EXAMPLES.parent
README = (ROOT / "README.md").read_text()
FENCED = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
BLOCKS = [(lang, code) for lang, code in FENCED.findall(README)]
SHELL = [code for lang, code in BLOCKS if lang in ("sh", "bash")]
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
# snippets that train a network or read what an earlier snippet wrote: run in order by the slow test
SLOW = ("fine_grained_search", "runs/export_detnas")


def commands(code: str) -> list[list[str]]:
    """The commands of a shell block, one per (backslash-continued) line, comments dropped."""
    lines = code.replace("\\\n", " ").splitlines()
    return [shlex.split(line, comments=True) for line in lines if shlex.split(line, comments=True)]


def launched(argv: list[str]) -> list[str]:
    """What ``torchrun ... (-m hrnas_automl | --no-python hrnas-automl | script.py) ARGS`` runs, as a command line
    (``hrnas-automl ARGS`` or ``python script.py ARGS``)."""
    for i, arg in enumerate(argv):
        if arg == "-m" and argv[i + 1] == "hrnas_automl" or arg == "--no-python" and argv[i + 1] == "hrnas-automl":
            return ["hrnas-automl", *argv[i + 2:]]
        if arg.endswith(".py"):
            return ["python", *argv[i:]]
    raise AssertionError(f"torchrun line without a program: {argv}")


def test_every_snippet_is_fenced_with_its_language() -> None:
    """An indented block would escape these tests: every snippet is fenced and names what it is."""
    assert {lang for lang, _ in BLOCKS} <= {"python", "sh", "bash", "toml", "yaml", "text"}, "a fence without language"
    outside = FENCED.sub("", README)
    indented = re.findall(r"\n\n((?: {4}\S.*\n)+)", outside)
    assert not indented, f"indented code outside a fence (fence it with its language): {indented[0][:80]!r}"
    assert len(PYTHON) >= 4 and len(SHELL) >= 8


@pytest.mark.parametrize("code", SHELL, ids=[f"shell{i}" for i in range(len(SHELL))])
def test_shell_blocks_parse_and_name_what_exists(code: str) -> None:
    subprocess.run(["bash", "-n"], input=code, text=True, check=True)
    parser = build_parser()
    targets = set(re.findall(r"^(\w[\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    for argv in commands(code):
        if argv[0] == "torchrun":
            argv = launched(argv)
        if argv[0] == "hrnas-automl":
            parser.parse_args(argv[1:])  # an unknown subcommand or option exits 2 (SystemExit fails the test)
        elif argv[0] == "make":
            assert set(argv[1:]) - {a for a in argv[1:] if "=" in a} <= targets, argv
        else:
            assert argv[0] in ("nnictl", "python", "pip"), f"a command this test does not know: {argv}"
        for path in (a.split("=")[-1] for a in argv if a.startswith(("examples/", "bench/"))):
            assert (ROOT / path).exists(), f"{path} does not exist"


def test_other_blocks_parse() -> None:
    for lang, code in BLOCKS:
        if lang == "toml":
            tomllib.loads(code)
        elif lang == "yaml":  # alternatives of one key, one per line
            assert all(isinstance(yaml.safe_load(line), dict) for line in code.splitlines())


def test_quick_python_snippets_run_as_printed() -> None:
    quick = [code for code in PYTHON if not any(mark in code for mark in SLOW)]
    assert quick
    for code in quick:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})


def run_snippet(code: str, folder: Path) -> None:
    """Run a Python snippet in its own process, in ``folder`` as a user's working directory."""
    done = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
def test_export_snippets_run_as_printed(tmp_path: Path) -> None:
    """The shell block that exports, then the Python blocks that load what it wrote."""
    (export,) = [code for code in SHELL if "hrnas-automl export " in code]
    (argv,) = commands(export)
    subprocess.run([str(Path(sys.executable).parent / "hrnas-automl"), *argv[1:]], cwd=tmp_path, check=True,
                   capture_output=True, timeout=600)
    loading = [code for code in PYTHON if "runs/export_detnas" in code]
    assert len(loading) == 2
    for code in loading:
        run_snippet(code, tmp_path)


@pytest.mark.slow
def test_fine_grained_snippet_runs_as_printed(tmp_path: Path) -> None:
    (code,) = [code for code in PYTHON if "fine_grained_search" in code]
    run_snippet(code, tmp_path)
