"""The package's shape as tests: no import cycles between qbench's subpackages, and modules a reader can hold
in mind (the import-linter contracts in pyproject.toml run in .ci/run: `lint-imports`)."""

from __future__ import annotations

from pathlib import Path

import pytest

import qbench

grimp = pytest.importorskip("grimp")
PACKAGE = Path(qbench.__file__).parent
MAX_MODULE_LINES = 420  # "no module over ~400 lines"


def _subpackage_edges() -> dict[str, set[str]]:
    """qbench.X -> qbench.Y whenever a module of X imports a module of Y (function-level imports included)."""
    # type-only imports (under TYPE_CHECKING) never run, so they cannot form a runtime cycle
    graph = grimp.build_graph("qbench", exclude_type_checking_imports=True)
    edges: dict[str, set[str]] = {}

    def top(module: str) -> str:
        return ".".join(module.split(".")[:2])

    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            a, b = top(module), top(imported)
            if a != b and b.startswith("qbench."):
                edges.setdefault(a, set()).add(b)
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_subpackages() -> None:
    cycle = _cycle(_subpackage_edges())
    assert cycle is None, "import cycle between subpackages: " + " -> ".join(cycle or [])


def test_cycle_detection_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None


def test_no_module_is_too_long() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"
