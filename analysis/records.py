"""One checkpoint directory as a record of its dev figures, read from the files training
leaves behind (``metrics.json``, else the stored per-example predictions): what the
Compare page's table, Home and the comparison report (analysis/report.py) show.

No Streamlit here.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from analysis.checkpoints import has_weights
from analysis.predictions import load_predictions
from core.evaluation.metrics import task_metrics
from core.tasks import METRIC_NAMES, PRIMARY, TASKS, mean_score

METRIC_COLUMNS = ["mean_score", *METRIC_NAMES]


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}


def metrics_from_predictions(directory: str | os.PathLike) -> dict:
    """Dev metrics recomputed from the per-example prediction files."""
    metrics: dict = {}
    for task in TASKS:
        df = load_predictions(directory, task, missing_ok=True)
        if df is None or "label" not in df.columns or not len(df):
            continue
        if task == "sst":
            scores = df[[f"prob_{k}" for k in range(5)]].to_numpy() if "prob_0" in df else df["pred"].to_numpy()
        elif task == "qqp":
            scores = df["prob"].to_numpy() if "prob" in df else df["pred"].to_numpy()
        else:
            scores = df["pred"].to_numpy(dtype=float)
        metrics.update(task_metrics(task, df["label"].to_numpy(), scores))
    return metrics


def checkpoint_record(directory: str | os.PathLike, name: str | None = None) -> dict:
    """One checkpoint's row: dev metrics, mean score, recipe, training time and size.
    ``name``: how the pickers call it (default: the directory's name)."""
    directory = Path(directory)
    meta = _read_json(directory / "config.json")
    summary = _read_json(directory / "metrics.json")
    config = meta.get("config") or {}
    dev = summary.get("dev") or {}
    source = "metrics.json"
    if not dev:
        dev, source = metrics_from_predictions(directory), "predictions"
    tasks = meta.get("tasks") or [t for t in TASKS if PRIMARY[t] in dev]
    score = summary.get("mean_score")
    if score is None and dev:
        score = mean_score(dev, [t for t in TASKS if PRIMARY[t] in dev])
    train_cfg = config.get("train") or {}
    return {
        "name": name or directory.name,
        "path": str(directory),
        **{k: dev.get(k) for k in METRIC_COLUMNS if k != "mean_score"},
        "mean_score": score,
        "tasks": ", ".join(tasks),
        "recipe": config.get("name") or directory.name,
        "description": config.get("description", ""),
        "frozen_encoder": bool(train_cfg.get("freeze_encoder", False)),
        "epochs": train_cfg.get("epochs"),
        "best_epoch": summary.get("best_epoch"),
        "steps": summary.get("steps"),
        "train_time_s": summary.get("wall_time_s"),
        "device": summary.get("device"),
        "finished": summary.get("finished"),
        "weights": has_weights(directory),      # False: a results-only run (no saliency / attention / Predict)
        "dev_examples": {t: dev.get(f"{t}_n") for t in TASKS if dev.get(f"{t}_n")},
        "subset": dev.get("subset") if isinstance(dev.get("subset"), dict) else None,   # core.evaluation.evaluator's mark
        "metrics_source": source,
        "config": config,
        "history": summary.get("history") or [],
    }


