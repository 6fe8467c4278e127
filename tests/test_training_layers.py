"""The training package's own layering (issue #23): the loss math in core/losses/ takes
tensors and never imports the model, training, evaluation or serving; the trainer's
pieces stay within what training may import."""
from __future__ import annotations

import ast

from conftest import REPO


def _imports(path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_losses_import_no_model_training_evaluation_or_serving():
    banned = ("core.model", "core.training", "core.evaluation", "core.serving", "core.bert")
    found = {p.name: sorted(m for m in _imports(p) if m.startswith(banned)) for p in (REPO / "core" / "losses").glob("*.py")}
    assert {name: mods for name, mods in found.items() if mods} == {}


def test_training_imports_no_serving_jobs_or_experiments():
    banned = ("core.serving", "core.jobs", "core.experiments", "analysis", "app")
    found = {p.name: sorted(m for m in _imports(p) if m.startswith(banned))
             for p in (REPO / "core" / "training").glob("*.py")}
    assert {name: mods for name, mods in found.items() if mods} == {}
