"""The layout rules of the tree: no import loop among core/, analysis/ and app/ (imports
inside functions included), and no module importing another module's private names."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGES = ("core", "analysis", "app")


def _modules(root: Path) -> dict[str, Path]:
    return {".".join(p.relative_to(root).with_suffix("").parts): p
            for pkg in PACKAGES for p in (root / pkg).rglob("*.py")}


def import_graph(root: Path) -> tuple[dict[str, set[str]], list[str]]:
    """module -> the project modules it imports; and every ``from X import _private``."""
    mods = _modules(root)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    private = []
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in mods:
                graph[name].add(node.module)
                private += [f"{name}: from {node.module} import {a.name}" for a in node.names
                            if a.name.startswith("_") and not a.name.startswith("__")]
            elif isinstance(node, ast.ImportFrom) and node.module:
                graph[name].update(f"{node.module}.{a.name}" for a in node.names
                                   if f"{node.module}.{a.name}" in mods)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in mods)
    return graph, private


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import loop, as the path that closes it (depth-first search)."""
    found, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_the_checker_finds_a_loop_and_a_private_import(tmp_path):
    for pkg, text in (("core", "from analysis.b import _hidden\n"), ("analysis", "import core.a\n")):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / ("a.py" if pkg == "core" else "b.py")).write_text(text)
    (tmp_path / "app").mkdir()
    graph, private = import_graph(tmp_path)
    assert cycles(graph) == [["analysis.b", "core.a", "analysis.b"]]
    assert private == ["core.a: from analysis.b import _hidden"]


def test_no_import_loop_and_no_private_imports():
    graph, private = import_graph(REPO)
    assert "core.model.multitask" in graph and "core.model.precision" in graph["core.model.multitask"]   # the graph is real
    assert cycles(graph) == []
    assert private == []
