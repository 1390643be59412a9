"""The one registry: built-ins imported on first lookup, plugins through entry points, one-line errors; and the
resolved Space every layer passes."""
from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from hrnas_automl import registry
from hrnas_automl.arch import resolve_space
from hrnas_automl.registry import DATA, OBJECTIVES, SPACES, STRATEGIES, TASKS, Registry


def test_every_builtin_entry_resolves() -> None:
    for kind in (SPACES, TASKS, DATA, OBJECTIVES, STRATEGIES):
        assert all(obj is not None for _, obj in kind.items())
    assert {spec.name for _, spec in SPACES.items()} == set(SPACES.names())  # each spec is filed under its name


def test_plugins_come_from_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """A third-party package registers by entry point (group hrnas_automl.strategies); nothing is imported until a
    lookup, and a plugin whose module is missing gives one line naming it."""
    groups = {"hrnas_automl.strategies": [
        EntryPoint("mine", "hrnas_automl.strategies.random_search:RandomSearch", "hrnas_automl.strategies"),
        EntryPoint("gone", "no_such_package.strategies:Gone", "hrnas_automl.strategies")]}
    monkeypatch.setattr(registry, "entry_points", lambda group: groups.get(group, []))
    strategies = Registry("strategy", {"random": "hrnas_automl.strategies.random_search:RandomSearch"},
                          plural="strategies")
    assert strategies.names() == ["random", "mine", "gone"]
    assert strategies.get("mine") is strategies.get("random")
    with pytest.raises(ValueError, match=r"strategy 'gone' \(no_such_package.strategies:Gone\) cannot be imported"):
        strategies.get("gone")
    with pytest.raises(KeyError, match="unknown strategy 'evo'; registered strategies: random, mine, gone"):
        strategies.get("evo")


def test_register_refuses_a_taken_name() -> None:
    tasks = Registry("task", {"classification": "hrnas_automl.tasks.classification:TASK"})
    tasks.register("mine", object())
    for name in ("classification", "mine"):
        with pytest.raises(ValueError, match=f"task '{name}' is already registered"):
            tasks.register(name, object())


def test_a_space_is_resolved_once_and_keeps_what_is_compiled_for_it() -> None:
    space = resolve_space("detnas-small", num_classes=10)
    assert resolve_space("detnas-small", num_classes=10) is space
    assert resolve_space(space) is space and resolve_space(space, head="backbone") is not space
    assert resolve_space(space, head="backbone").args == {"num_classes": 10, "head": "backbone"}
    calls = []
    assert space.memo("k", lambda: calls.append(1) or 7) == space.memo("k", lambda: calls.append(1) or 8) == 7
    assert calls == [1]
    choices = space.choices
    choices["s1_b0"].clear()  # a copy: the space's own choices are untouched
    assert space.choices["s1_b0"] == ["k3", "k5", "k7", "xception"] and space.size == 4 ** 20
