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


def test_the_trainer_module_still_runs_the_command_line():
    """``python -m core.training.trainer`` (tests and old scripts) is ``python -m core.train``."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "core.training.trainer", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "usage: python -m core.train" in out.stdout and "--max-steps" in out.stdout
