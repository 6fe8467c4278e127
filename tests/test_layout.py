"""The layout rules of the tree: no import loop among core/, analysis/ and app/ (imports
inside functions included), no module importing another module's private names, and the
layer table of docs/layout.md ("Layers: who may import whom"): every module in one layer,
every import of a project module allowed by its layer's row, no forbidden library."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
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
    assert "core.model.multitask" in graph and "core.model.checkpoint" in graph["core.model.multitask"]   # the graph is real
    assert cycles(graph) == []
    assert private == []


# --------------------------------------------------------------------------- layers
LAYOUT_DOC = REPO / "docs" / "layout.md"


def read_layers(text: str) -> dict[str, dict]:
    """docs/layout.md's layer table: ``{layer: {"modules": [...], "may": {...}, "never": {...}}}``."""
    block = re.search(r"<!-- layers.*?-->(.*?)<!-- /layers -->", text, re.S)
    assert block, "docs/layout.md has no layer table between <!-- layers --> and <!-- /layers -->"
    layers = {}
    for line in block.group(1).strip().splitlines()[2:]:          # after the header and |---|
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name, modules, may, never = (cells + [""] * 4)[:4]
        layers[name] = {"modules": re.findall(r"`([\w.]+)`", modules),
                        "may": {m.strip() for m in may.split(",") if m.strip()} | {name},
                        "never": {m.strip() for m in never.split(",") if m.strip()}}
    return layers


def layer_of(module: str, layers: dict[str, dict]) -> str | None:
    """The layer whose module prefix is the longest match (``core.model.bert`` -> model)."""
    best = None
    for name, layer in layers.items():
        for prefix in layer["modules"]:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[1])):
                best = (name, prefix)
    return best and best[0]


def imported_names(path: Path) -> list[str]:
    """Every module an import in the file names (inside functions too): ``from a.b import c``
    gives ``a.b`` and ``a.b.c`` (c may be a module)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    return names


def layer_violations(root: Path, layers: dict[str, dict]) -> list[str]:
    mods = _modules(root)
    found = []
    for name, path in sorted(mods.items()):
        if name == "core.__init__":      # the package root: a docstring, no imports
            assert imported_names(path) == [], "core/__init__.py imports nothing"
            continue
        mine = layer_of(name.removesuffix(".__init__"), layers)
        if mine is None:
            found.append(f"{name}: in no layer of the table")
            continue
        for target in imported_names(path):
            top = target.split(".")[0]
            if top in layers[mine]["never"]:
                found.append(f"{name} ({mine}) imports {target}: never in layer {mine}")
            if target not in mods and target.removesuffix(".__init__") not in {
                    m.removesuffix(".__init__") for m in mods}:
                continue
            theirs = layer_of(target, layers)
            if theirs not in layers[mine]["may"]:
                found.append(f"{name} ({mine}) imports {target} ({theirs})")
    return sorted(set(found))


def test_the_layer_checker_finds_a_forbidden_import_and_a_module_of_no_layer(tmp_path):
    layers = read_layers("<!-- layers -->\n| layer | modules | may import | never imports |\n|---|---|---|---|\n"
                         "| leaf | `core.errors` | leaf | torch |\n| model | `core.model` | leaf | |\n<!-- /layers -->")
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
    (tmp_path / "core" / "errors.py").write_text("def f():\n    from core.model import m\n    import torch\n")
    (tmp_path / "core" / "model").mkdir()
    (tmp_path / "core" / "model" / "__init__.py").write_text("")
    (tmp_path / "core" / "model" / "m.py").write_text("from core.errors import f\n")
    (tmp_path / "core" / "jobs.py").write_text("")
    assert layer_violations(tmp_path, layers) == [
        "core.errors (leaf) imports core.model (model)", "core.errors (leaf) imports core.model.m (model)",
        "core.errors (leaf) imports torch: never in layer leaf", "core.jobs: in no layer of the table"]


def test_every_import_follows_the_layer_table():
    layers = read_layers(LAYOUT_DOC.read_text())
    assert {"leaf", "model", "losses", "training", "serving", "jobs"} <= set(layers)   # the table is real
    assert layer_of("core.model.bert", layers) == "model" and layer_of("core.train", layers) == "entry"
    assert layer_violations(REPO, layers) == []


def test_every_core_package_has_a_face_that_says_what_it_owns():
    for init in sorted((REPO / "core").glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 40, f"{init.relative_to(REPO)}: say what the package owns"


# --------------------------------------------------------------------------- aliases
API_DOC = REPO / "docs" / "api.md"
SHIM_NODES = (ast.Expr, ast.Import, ast.ImportFrom, ast.If)    # docstring, imports, the __main__ guard


def read_aliases(text: str) -> list[tuple[str, str, str]]:
    """docs/api.md's table of entry points and aliases: (public name, kind, code module)."""
    block = re.search(r"<!-- aliases.*?-->(.*?)<!-- /aliases -->", text, re.S)
    assert block, "docs/api.md has no alias table between <!-- aliases --> and <!-- /aliases -->"
    rows = []
    for line in block.group(1).strip().splitlines()[2:]:
        name, kind, code = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        rows.append((name, kind, code))
    return rows


def shim_path(name: str, kind: str) -> Path:
    module = name.split()[-1] if kind == "command" else name.split()[1]
    path = REPO.joinpath(*module.split("."))
    return path / "__main__.py" if path.is_dir() and kind == "command" else (
        path / "__init__.py" if path.is_dir() else path.with_suffix(".py"))


def test_every_entry_point_and_alias_of_the_table_works_and_holds_no_code(capsys):
    import importlib
    import runpy
    import sys

    rows = read_aliases(API_DOC.read_text())
    assert ("python -m core.train", "command", "core.training.cli") in rows    # the table is real
    for name, kind, code in rows:
        shim = shim_path(name, kind)
        tree = ast.parse(shim.read_text())
        extra = [type(n).__name__ for n in tree.body if not isinstance(n, SHIM_NODES)
                 and not (isinstance(n, ast.Assign) and [t.id for t in n.targets] == ["__all__"])]
        assert extra in ([], ["FunctionDef"]), f"{shim.relative_to(REPO)} holds code: {extra}"
        if extra:   # a package face may resolve its public name lazily (core.model), nothing else
            assert [n.name for n in tree.body if isinstance(n, ast.FunctionDef)] == ["__getattr__"]
        assert code in shim.read_text(), f"{shim.relative_to(REPO)} does not front {code}"
        if kind == "command":
            argv = sys.argv
            sys.argv = [name.split()[-1], "--help"]
            try:
                with pytest.raises(SystemExit) as done:
                    runpy.run_module(name.split()[-1], run_name="__main__", alter_sys=True)
            finally:
                sys.argv = argv
            assert done.value.code in (0, None) and "usage:" in capsys.readouterr().out, name
        else:
            module, attr = name.split()[1], name.split()[-1]
            assert getattr(importlib.import_module(module), attr) is getattr(importlib.import_module(code), attr)


def test_core_has_no_alias_but_the_table():
    """A re-export (``# noqa: F401``) or a module that only hands names on is an alias; the
    public ones are the table of docs/api.md, every other name has one home."""
    shims = {shim_path(n, k) for n, k, _ in read_aliases(API_DOC.read_text())}
    found = []
    for path in sorted((REPO / "core").rglob("*.py")):
        text = path.read_text()
        if path in shims or path.name == "__main__.py":
            continue
        found += [f"{path.relative_to(REPO)}:{i}" for i, line in enumerate(text.splitlines(), 1) if "noqa: F401" in line]
        body = [n for n in ast.parse(text).body if not isinstance(n, ast.Expr)]
        if path.name != "__init__.py" and body and all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in body):
            found.append(f"{path.relative_to(REPO)}: only imports")
    assert found == []


def test_no_class_over_250_lines_and_no_function_over_60_in_core():
    """Issue 23: a class or function that grows past these holds more than one job; split it
    (or, where one is justified, say so here with the reason)."""
    justified: dict[str, str] = {}
    found = []
    for path in sorted((REPO / "core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            limit = 250 if isinstance(node, ast.ClassDef) else 60 if isinstance(
                node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
            name = f"{path.relative_to(REPO)}:{getattr(node, 'name', '')}"
            if limit and node.end_lineno - node.lineno + 1 > limit and name not in justified:
                found.append(f"{name} {node.end_lineno - node.lineno + 1} lines")
    assert found == []
