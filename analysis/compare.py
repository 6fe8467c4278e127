"""Comparing checkpoints on the dev sets, from the files training leaves behind.

Every checkpoint directory holds ``metrics.json`` (best dev metrics, per-epoch
history, training time) and ``predictions/{sst,qqp,sts}-dev.csv`` (one row per dev
example: texts, gold label, prediction). Nothing here runs a model: the Compare page
reads these files only, so it is instant for any number of checkpoints.

    checkpoint_table(root)          one row per checkpoint: dev metrics, recipe, time
    qqp_precision_recall(df)        precision/recall curve over thresholds + the 0.5 point

    python -m analysis.compare A B --out DIR [--format md|html] [--no-behaviour] [--resamples N]
        the comparison report of two checkpoints (analysis/report.py): dev metrics, A - B
        with 95 % paired-bootstrap intervals and McNemar per metric and slice, seed noise,
        calibration, behaviour tests; figures as PNG + SVG, tables as CSV

Reading the per-example predictions and deciding which dev examples two checkpoints
disagree on is analysis/predictions.py; confusion matrices are analysis/mistakes.py.

No Streamlit here.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.checkpoints import has_results, run_dirs
from analysis.records import METRIC_COLUMNS, checkpoint_record
from core.evaluation.metrics import precision_recall_f1

def checkpoint_dirs(root: str | os.PathLike) -> list[Path]:
    """Run directories under ``root`` with something to compare: a ``metrics.json`` or dev
    predictions (:func:`analysis.checkpoints.has_results`; ``python -m core.evaluate
    pretrained`` writes ``pretrained/predictions``). Results-only runs (kept without
    weights) are among them."""
    return [p for p in run_dirs(root) if has_results(p)]


def checkpoint_table(root: str | os.PathLike) -> pd.DataFrame:
    """Every comparable checkpoint under ``root``: those serving more tasks first (a mean
    over two tasks is not comparable with a mean over three), then best mean dev score."""
    records = [checkpoint_record(d, d.relative_to(root).as_posix()) for d in checkpoint_dirs(root)]
    columns = ["name", *METRIC_COLUMNS, "tasks", "recipe", "description", "frozen_encoder", "epochs",
               "best_epoch", "steps", "train_time_s", "device", "finished", "weights", "dev_examples",
               "metrics_source", "path", "config", "history"]
    df = pd.DataFrame(records, columns=columns)
    if len(df):
        n_tasks = df["tasks"].map(lambda t: len([x for x in str(t).split(",") if x.strip()]))
        df = (df.assign(_n=-n_tasks).sort_values(["_n", "mean_score"], ascending=[True, False], na_position="last",
                                                kind="stable").drop(columns="_n").reset_index(drop=True))
    return df


def metrics_long(table: pd.DataFrame) -> pd.DataFrame:
    """(checkpoint, metric, value) rows of the dev metrics, for grouped bar charts."""
    long = table.melt(id_vars=["name"], value_vars=METRIC_COLUMNS[1:], var_name="metric", value_name="value")
    return long.dropna(subset=["value"]).reset_index(drop=True)


def history_long(record: dict) -> pd.DataFrame:
    """(epoch, metric, value) rows of a checkpoint's per-epoch dev metrics."""
    rows = [{"epoch": h.get("epoch"), "metric": k, "value": h[k]}
            for h in record.get("history") or [] for k in METRIC_COLUMNS[1:] + ["score"] if k in h]
    return pd.DataFrame(rows, columns=["epoch", "metric", "value"])


# ----------------------------------------------------------------- per task
def qqp_precision_recall(df: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Precision and recall of "paraphrase" over decision thresholds (from the predicted
    probabilities), and the precision / recall / F1 at the 0.5 threshold."""
    labels = df["label"].astype(int).to_numpy()
    probs = (df["prob"] if "prob" in df else df["pred"]).astype(float).to_numpy()
    rows = []
    for threshold in np.round(np.linspace(0.05, 0.95, 19), 2):
        p, r, f = precision_recall_f1(labels, (probs >= threshold).astype(int))
        rows.append({"threshold": float(threshold), "precision": p, "recall": r, "f1": f})
    p, r, f = precision_recall_f1(labels, (probs >= 0.5).astype(int))
    return pd.DataFrame(rows), {"precision": p, "recall": r, "f1": f}


# ----------------------------------------------------------------------- CLI
def main(argv=None) -> int:
    """``python -m analysis.compare A B --out DIR``: write the comparison report."""
    import argparse

    from analysis.report import FORMATS, write_report
    from analysis.significance import N_RESAMPLES
    from core.errors import run_command
    parser = argparse.ArgumentParser(prog="python -m analysis.compare",
                                     description="Write the comparison report of two checkpoints.")
    parser.add_argument("a", help="checkpoint A: a name under the checkpoints folder (study/<row>-s<seed> too) or a path")
    parser.add_argument("b", help="checkpoint B")
    parser.add_argument("--out", required=True, help="folder to write report.md / report.html, figures/, tables/")
    parser.add_argument("--format", choices=FORMATS, default="md", help="report format (default: %(default)s)")
    parser.add_argument("--no-behaviour", action="store_true", help="skip the behaviour tests (they run the models)")
    parser.add_argument("--resamples", type=int, default=N_RESAMPLES, help="bootstrap resamples (default: %(default)s)")
    args = parser.parse_args(argv)

    def body() -> int:
        path = write_report(args.a, args.b, args.out, fmt=args.format, behaviour=not args.no_behaviour,
                            n_resamples=args.resamples)
        print(path)
        return 0
    return run_command(body)


if __name__ == "__main__":
    raise SystemExit(main())
