"""The kept space descriptions (``hrnas_automl/space_descriptions.json``): equal to fresh ones built from the spaces,
covering the examples' space arguments, and what lets `spaces` / `describe` / `sample` / `export-space` run without
importing NNI's NAS package, pytorch-lightning or torch."""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import yaml

from hrnas_automl import registry
from hrnas_automl.arch import KEPT_SPACE_ARGS, _choices_key, describe_space, resolve_space
from hrnas_automl.registry import DESCRIPTIONS_FILE, SPACES, kept_description
from tests import EXAMPLES

KEPT = json.loads(DESCRIPTIONS_FILE.read_text())["spaces"]
STALE = f"{DESCRIPTIONS_FILE.name} is stale: run `make descriptions` (and commit the file)"


def test_every_built_in_space_is_kept() -> None:
    assert sorted(KEPT) == sorted(SPACES.names()), STALE


@pytest.mark.parametrize("name", sorted(KEPT_SPACE_ARGS))
def test_kept_description_equals_a_fresh_one(name: str) -> None:
    """Built from the space now, for every kept set of space arguments; repr-equal, so a tuple that became a list or
    an int that became a float in the JSON would fail too."""
    fresh = describe_space(name, KEPT_SPACE_ARGS[name])
    assert repr(KEPT[name]) == repr(fresh), f"{name}: {STALE}"


def _space_uses(node: Any) -> list[tuple[str, dict[str, Any], str | None]]:
    """``(space, space_args, task)`` of every mapping of a YAML document that names a space; the task (default
    classification) only for a trial config (one with data)."""
    found = []
    if isinstance(node, dict):
        if isinstance(node.get("space"), str):
            task = node.get("task", "classification") if "data" in node else None
            found.append((node["space"], dict(node.get("space_args") or {}), task))
        for value in node.values():
            found += _space_uses(value)
    elif isinstance(node, list):
        for value in node:
            found += _space_uses(value)
    return found


def _example_space_args() -> list[tuple[str, str, dict[str, Any]]]:
    """Every (example file, space, space arguments) whose choices the tools read: an nnictl tuner's (or a tune
    config's) space_args, and a trial config's with its task's head (a standalone trial draws from those)."""
    from hrnas_automl.tasks import get_task

    uses = []
    for path in sorted(EXAMPLES.rglob("*.yml")):
        for document in yaml.safe_load_all(path.read_text()):
            for space, args, task in _space_uses(document):
                if task is not None:
                    args = {**args, "head": get_task(task).head}
                uses.append((path.name, space, args))
    return uses


def test_examples_space_args_are_kept() -> None:
    uses = _example_space_args()
    assert len(uses) >= 15
    missing = [(file, space, args) for file, space, args in uses
               if _choices_key(KEPT[space], args) not in KEPT[space]["choices"]]
    assert missing == [], f"add these space arguments to arch.KEPT_SPACE_ARGS, then run `make descriptions`: {missing}"


def test_arguments_at_their_defaults_read_the_kept_choices() -> None:
    kept = KEPT["detnas-small"]
    assert _choices_key(kept, {"head": "classifier", "num_classes": 1000}) == "{}"
    assert _choices_key(kept, {"num_classes": 10, "in_channels": 3}) == '{"num_classes": 10}'
    assert _choices_key(kept, {"num_classes": 1000.0}) == '{"num_classes": 1000.0}'  # not the default: built


def test_other_space_arguments_build_the_space() -> None:
    space = resolve_space("ranet", num_classes=7)  # no kept choices: read from a build
    assert _choices_key(KEPT["ranet"], space.args) not in KEPT["ranet"]["choices"]
    assert space.choices == resolve_space("ranet").choices


def test_a_space_registered_anew_is_not_read_from_the_kept_description(monkeypatch: pytest.MonkeyPatch) -> None:
    assert kept_description("ranet") is not None
    spec = SPACES.get("ranet")
    assert kept_description("ranet") is not None  # imported from its target: still the kept one
    monkeypatch.setitem(registry.SPACES._objects, "ranet", registry.SpaceSpec("ranet", spec.factory, "other",
                                                                             (3, 8, 8)))
    assert kept_description("ranet") is None
    assert resolve_space("ranet").description == "other"


# Run in a fresh interpreter: which modules each command imported.
_WRAPPER = """
import io, json, sys
from contextlib import redirect_stdout
from hrnas_automl.cli import main
with redirect_stdout(io.StringIO()):
    code = main(sys.argv[1:])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "pytorch_lightning", "lightning_fabric")
               or m.startswith("nni.nas"))
print(json.dumps({"code": code, "heavy": heavy[:5]}))
"""


@pytest.mark.parametrize("argv", [
    ("spaces",), ("spaces", "--json"), ("describe", "hrnas", "--json"), ("describe", "detnas-small"),
    ("describe", "lite-hrnet", "--space-arg", "head=keypoints", "--space-arg", "num_keypoints=17"),
    ("sample", "ranet", "--seed", "3", "--space-arg", "num_classes=4"), ("sample", "hrnas", "--seed", "1"),
    ("export-space", "detnas-small", "--space-arg", "num_classes=10"),
])
def test_listing_describing_and_sampling_import_neither_nni_nas_nor_torch(argv: tuple[str, ...]) -> None:
    out = subprocess.run([sys.executable, "-c", _WRAPPER, *argv], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == {"code": 0, "heavy": []}
