"""What each branch of a hybrid pair head contributes, on the dev sets.

    python -m analysis.ablation checkpoints/minbert-multitask [--json] [--resamples 2000]

A hybrid head (``model.<task>.mode: hybrid``) computes a cross-encoder output and a
bi-encoder cosine output and combines them. This reads all three from the *same*
weights for every dev pair and reports each one's dev metrics, with the combined
output's gain over each branch and a 95 % paired-bootstrap interval of that gain
(resampling dev examples: the noise of a dev set of this size, not seed-to-seed noise).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from core.data.datasets import load_task
from core.errors import MinbertError, run_cli
from core.evaluation.metrics import task_metrics
from core.tasks import PRIMARY

BRANCHES = ("output", "cross", "bi")


def branch_predictions(model, task: str, texts_a, texts_b, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Each branch's prediction per pair: qqp probabilities, sts scores clipped to 0..5."""
    if model.head_mode(task) != "hybrid":
        raise MinbertError(f"the {task} head is {model.head_mode(task)!r}, not 'hybrid': it has no branches")

    def fn(batch):
        branches = model.head_branches(task, *model.encode_task(task, batch))
        return torch.stack([model.to_prediction(task, branches[b]) for b in BRANCHES], dim=-1)

    out = model.map_batches(model.featurize(task, texts_a, texts_b), fn, batch_size)
    return {b: out[:, i] for i, b in enumerate(BRANCHES)}


def _metric(task: str, labels: np.ndarray, pred: np.ndarray) -> float:
    return float(task_metrics(task, labels, pred)[PRIMARY[task]])


def paired_bootstrap(task: str, labels: np.ndarray, a: np.ndarray, b: np.ndarray, resamples: int = 2000,
                     seed: int = 0) -> tuple[float, float]:
    """95 % interval of metric(a) - metric(b) over dev examples drawn with replacement."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    diffs = []
    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        diffs.append(_metric(task, labels[idx], a[idx]) - _metric(task, labels[idx], b[idx]))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return float(lo), float(hi)


def hybrid_ablation(model, data_dir="data", resamples: int = 2000, limit: int | None = None) -> dict:
    report = {}
    for task in ("qqp", "sts"):
        if task not in model.heads or model.head_mode(task) != "hybrid":
            continue
        data = load_task(task, "dev", data_dir, limit=limit)
        preds = branch_predictions(model, task, data.texts_a, data.texts_b)
        labels = np.asarray(data.labels)
        row = {b: task_metrics(task, labels, p) for b, p in preds.items()}
        for b in ("cross", "bi"):
            gain = _metric(task, labels, preds["output"]) - _metric(task, labels, preds[b])
            row[f"gain_over_{b}"] = gain
            row[f"gain_over_{b}_ci95"] = paired_bootstrap(task, labels, preds["output"], preds[b], resamples)
        report[task] = row
    if not report:
        raise MinbertError("this checkpoint has no hybrid pair head (model.qqp/sts.mode: hybrid)")
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.ablation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from core.model.multitask import MultitaskBert

    def show(report: dict) -> None:
        for task, row in report.items():
            key = PRIMARY[task]
            print(f"{task}: combined {row['output'][key]:.4f}  cross-encoder branch {row['cross'][key]:.4f}  "
                  f"cosine branch {row['bi'][key]:.4f}")
            for b in ("cross", "bi"):
                lo, hi = row[f"gain_over_{b}_ci95"]
                print(f"  combined - {b}: {row[f'gain_over_{b}']:+.4f} (95% paired bootstrap {lo:+.4f} .. {hi:+.4f})")
    return run_cli(lambda: hybrid_ablation(MultitaskBert.load(args.checkpoint), args.data_dir, args.resamples),
                   args.json, show)


if __name__ == "__main__":
    sys.exit(main())
