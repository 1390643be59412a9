"""The package layout the README describes: what may import NNI and Optuna, how many top-level modules there are,
and no import cycle between modules (lazy imports inside functions count; type-checking-only imports do not)."""
from __future__ import annotations

import ast
from pathlib import Path

from tests import REPO

PACKAGE = REPO / "hrnas_automl"
# spaces/ and strategies/ install as hrnas_automl.spaces / hrnas_automl.strategies
SOURCES = {"hrnas_automl": PACKAGE, "hrnas_automl.spaces": REPO / "spaces",
           "hrnas_automl.strategies": REPO / "strategies"}


def _modules() -> dict[str, Path]:
    modules = {}
    for prefix, root in SOURCES.items():
        for path in root.rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            if prefix == "hrnas_automl" and parts[0] in ("spaces", "strategies"):
                continue
            name = ".".join((prefix, *parts)).removesuffix(".__init__")
            modules[name] = path
    return modules


def _imports(path: Path, *, typing_only: bool, module_level_only: bool = False) -> set[str]:
    """Modules ``path`` imports (absolute names), wherever the import stands (lazy imports in functions too, unless
    ``module_level_only``); the ``if TYPE_CHECKING:`` blocks only with ``typing_only``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if module_level_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING" \
                and not typing_only:
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def test_nni_and_optuna_are_imported_only_by_their_glue() -> None:
    """NNI: spaces/, the space core (arch.py) and the nni/ package; Optuna: the tuning/ package (issue 16)."""
    allowed = {"nni": lambda m: m.startswith(("hrnas_automl.spaces", "hrnas_automl.nni")) or m == "hrnas_automl.arch",
               "optuna": lambda m: m.startswith("hrnas_automl.tuning")}
    offenders = [(name, lib) for name, path in _modules().items()
                 for lib, ok in allowed.items()
                 if any(i == lib or i.startswith(f"{lib}.") for i in _imports(path, typing_only=True))
                 and not ok(name)]
    assert offenders == []


def test_top_level_holds_at_most_eight_modules() -> None:
    modules = [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert len(modules) <= 8, modules


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per depth-first search that finds one (empty: the graph is acyclic)."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack, node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*stack, node])):
                return cycle
        state[node] = 2
        return None

    return [c for name in sorted(graph) if name not in state and (c := visit(name, []))]


def test_no_import_cycle() -> None:
    """Between modules, counting the imports inside functions too, no module needs one that needs it back."""
    modules = _modules()
    graph = {name: {i for i in _imports(path, typing_only=False) if i in modules and i != name}
             for name, path in modules.items()}
    assert _cycles(graph) == []


def test_no_import_cycle_when_importing() -> None:
    """Module-level imports, where importing a submodule also runs its packages' ``__init__``: what could leave a
    module half-initialised."""
    modules = _modules()
    graph = {name: {i for i in _imports(path, typing_only=False, module_level_only=True) if i in modules and i != name}
             for name, path in modules.items()}
    for name in graph:
        graph[name] |= {".".join(i.split(".")[:k]) for i in set(graph[name]) for k in range(2, i.count(".") + 1)
                        if ".".join(i.split(".")[:k]) in modules and ".".join(i.split(".")[:k]) != name
                        and not name.startswith(".".join(i.split(".")[:k]) + ".")}
    assert _cycles(graph) == []
