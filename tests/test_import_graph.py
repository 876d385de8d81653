"""The layering of both packages: no import cycle (lazy imports inside functions included), and no
two modules of one package with the same name."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGES = ("reward_plugin", "dataset_formats")


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of both packages."""
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(module: str, path: Path, known: dict[str, Path], node: ast.AST) -> list[str]:
    """The modules of ``known`` that an import statement in ``module`` loads."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = package[: len(package) - node.level + 1] if node.level else []
        prefix = ".".join([*base, *([node.module] if node.module else [])])
        names = [prefix, *(f"{prefix}.{alias.name}" for alias in node.names)]
    # A submodule's own packages are imported before it runs: an import of them is no dependency cycle.
    ancestors = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
    return [name for name in names if name in known and name != module and name not in ancestors]


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[name].update(imported(name, path, known, node))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (depth-first search, white/grey/black)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_passes_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_relative_and_lazy_imports():
    graph = import_graph()
    assert "dataset_formats.pipeline" in graph["dataset_formats.workers"]  # module level, relative
    assert "reward_plugin.training.plan" in graph["reward_plugin.evaluation.predict"]  # inside a function


def test_evaluation_predicts_without_the_trainer():
    """`reward-plugin eval` predicts through the model loader and the batch plan, not RewardTrainer."""
    graph = import_graph()
    assert "reward_plugin.trainer" not in graph["reward_plugin.evaluation.predict"]
    assert "reward_plugin.model.loading" in graph["reward_plugin.evaluation.predict"]


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_two_modules_of_a_package_share_a_name(package):
    # __init__ and __main__ are names Python gives a package and its `python -m` entry, not concepts.
    names = Counter(
        p.name for p in (ROOT / package).rglob("*.py") if p.name not in ("__init__.py", "__main__.py")
    )
    assert [name for name, count in names.items() if count > 1] == []
