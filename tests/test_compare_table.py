"""analysis.compare.checkpoint_table: which checkpoint Compare lists (and picks) first."""
from __future__ import annotations

import json

from analysis.compare import checkpoint_table


def _write(root, name, dev, tasks):
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"tasks": tasks, "config": {"name": name}}))
    score = sum(dev[k] for k in ("sst_acc", "qqp_acc", "sts_pearson") if k in dev) / len(tasks)
    (d / "metrics.json").write_text(json.dumps({"dev": dev, "mean_score": score}))


def test_models_serving_more_tasks_come_first_then_the_best_mean(tmp_path):
    # the zero-shot model's mean over two easy tasks (0.81) is higher than a full model's
    # mean over three (0.73), but the two means are not comparable
    _write(tmp_path, "zero-shot", {"qqp_acc": 0.784, "sts_pearson": 0.839}, ["qqp", "sts"])
    _write(tmp_path, "full-a", {"sst_acc": 0.48, "qqp_acc": 0.85, "sts_pearson": 0.875}, ["sst", "qqp", "sts"])
    _write(tmp_path, "full-b", {"sst_acc": 0.45, "qqp_acc": 0.81, "sts_pearson": 0.872}, ["sst", "qqp", "sts"])
    assert list(checkpoint_table(tmp_path)["name"]) == ["full-a", "full-b", "zero-shot"]


def test_the_table_says_which_runs_have_their_weights_here(tmp_path):
    """The Compare page's count of runs with their weights here: a run with model.safetensors, and a
    results-only run (metrics and predictions kept, weights dropped: the study's runs)."""
    _write(tmp_path, "trained", {"sst_acc": 0.48}, ["sst"])
    (tmp_path / "trained" / "model.safetensors").write_bytes(b"")
    _write(tmp_path, "results-only", {"sst_acc": 0.45}, ["sst"])
    table = checkpoint_table(tmp_path).set_index("name")
    assert bool(table.loc["trained", "weights"])
    assert not table.loc["results-only", "weights"]
