"""Evaluate a checkpoint on the dev sets; write per-example and submission predictions.

    python -m core.evaluate checkpoints/NAME [--split dev|test] [--json]

Dev: prints SST accuracy + macro-F1, Quora accuracy + F1, STS Pearson + Spearman, and
writes ``predictions/{sst,qqp,sts}-dev.csv`` (one row per example) into the checkpoint.
Test: writes the CS224N submission files ``predictions/sst-test-output.csv`` and
``predictions/sts-test-output.csv`` (there is no Quora test file in data/).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from core.data import TASKS, TaskData, load_task
from core.errors import MinbertError
from core.metrics import task_metrics

log = logging.getLogger(__name__)

METRIC_KEYS = ("sst_acc", "sst_macro_f1", "qqp_acc", "qqp_f1", "sts_pearson", "sts_spearman",
               "sst_n", "qqp_n", "sts_n")
# The one number used to rank checkpoints: mean of each task's primary dev metric.
PRIMARY = {"sst": "sst_acc", "qqp": "qqp_acc", "sts": "sts_pearson"}


def model_tasks(model) -> list[str]:
    """Tasks a model can predict: its trained heads, plus zero-shot pair tasks."""
    return [t for t in TASKS if t in model.heads or t != "sst"]


def mean_score(metrics: dict, tasks=None) -> float:
    tasks = [t for t in (tasks or TASKS) if PRIMARY[t] in metrics]
    return float(np.mean([metrics[PRIMARY[t]] for t in tasks])) if tasks else float("nan")


def predict_data(model, data: TaskData, batch_size: int = 128) -> np.ndarray:
    return model.predict_task(data.task, data.texts_a, data.texts_b, batch_size=batch_size)


def prediction_frame(data: TaskData, output: np.ndarray) -> pd.DataFrame:
    """One row per example with its texts, gold label and prediction."""
    cols = {"id": data.ids, "sentence1" if data.is_pair else "sentence": data.texts_a}
    if data.is_pair:
        cols["sentence2"] = data.texts_b
    df = pd.DataFrame(cols)
    labels = data.labels
    if data.task == "sst":
        for k in range(output.shape[1]):
            df[f"prob_{k}"] = output[:, k]
        df["pred"] = output.argmax(1)
        df["confidence"] = output.max(1)
    elif data.task == "qqp":
        df["prob"] = output
        df["pred"] = (output >= 0.5).astype(int)
    else:
        df["pred"] = output
    if labels is not None:
        df.insert(len(cols), "label", labels)
        if data.task == "sts":
            df["residual"] = df["pred"] - df["label"]
        else:
            df["correct"] = df["pred"] == df["label"]
    return df


def evaluate_model(model, tasks=None, data_dir="data", split: str = "dev", limit: int | None = None,
                   batch_size: int = 128, datasets: dict[str, TaskData] | None = None,
                   progress=None) -> tuple[dict, dict[str, pd.DataFrame]]:
    """Dev metrics (contract keys) and per-example prediction frames for ``tasks``."""
    tasks = [t for t in (tasks or model_tasks(model))]
    metrics: dict = {}
    frames: dict[str, pd.DataFrame] = {}
    for task in tasks:
        data = datasets[task] if datasets and task in datasets else load_task(task, split, data_dir, limit=limit)
        output = predict_data(model, data, batch_size)
        frames[task] = prediction_frame(data, output)
        if data.labels is not None:
            metrics.update(task_metrics(task, data.labels, output))
        if progress is not None:
            progress(task)
    return metrics, frames


def write_predictions(frames: dict[str, pd.DataFrame], directory: Path, split: str) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for task, df in frames.items():
        path = directory / f"{task}-{split}.csv"
        df.to_csv(path, index=False)
        paths.append(path)
    return paths


def write_submission(model, data_dir, directory: Path, batch_size: int = 128) -> list[Path]:
    """CS224N submission format: ``id \\t Predicted_...`` header, ``id , value`` rows."""
    directory.mkdir(parents=True, exist_ok=True)
    specs = {"sst": ("sst-test-output.csv", "Predicted_Sentiment",
                     lambda out: out.argmax(1)),
             "sts": ("sts-test-output.csv", "Predicted_Similiarity", lambda out: out)}
    paths = []
    for task, (name, header, to_value) in specs.items():
        if task not in model_tasks(model):
            continue
        data = load_task(task, "test", data_dir)
        values = to_value(predict_data(model, data, batch_size))
        path = directory / name
        with path.open("w") as f:
            f.write(f"id \t {header} \n")
            for id_, value in zip(data.ids, values):
                f.write(f"{id_} , {value} \n")
        paths.append(path)
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint directory, or 'pretrained' for zero-shot")
    parser.add_argument("--split", choices=["dev", "test"], default="dev")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--limit", type=int, default=None, help="first N examples of each dev set")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quantize", choices=["int8"], default=None,
                        help="evaluate the int8 dynamically quantized model (CPU serving path)")
    parser.add_argument("--out", default=None, help="where predictions go (default: CHECKPOINT/predictions)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from core.model import MultitaskBert
    try:
        model = MultitaskBert.load(args.checkpoint, device=args.device, quantize=args.quantize)
        out_dir = Path(args.out) if args.out else (
            Path(args.checkpoint) / "predictions" if args.checkpoint != "pretrained"
            else Path("checkpoints/pretrained/predictions"))
        start = time.time()
        if args.split == "test":
            paths = write_submission(model, args.data_dir, out_dir, args.batch_size)
            result = {"files": [str(p) for p in paths]}
        else:
            metrics, frames = evaluate_model(model, data_dir=args.data_dir, limit=args.limit,
                                             batch_size=args.batch_size)
            write_predictions(frames, out_dir, "dev")
            result = {**metrics, "mean_score": mean_score(metrics), "seconds": round(time.time() - start, 2)}
    except MinbertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>14}: {value:.4f}" if isinstance(value, float) else f"{key:>14}: {value}")
        if "qqp_acc" in result:
            print("note: all-MiniLM-L6-v2 was contrastively pre-trained on data that includes Quora "
                  "duplicates; Quora figures overstate what it would do on unseen paraphrase data.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
