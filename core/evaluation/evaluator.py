"""Evaluate a checkpoint on the dev sets; write per-example and submission predictions.

    python -m core.evaluate checkpoints/NAME [--split dev|test] [--json]
                            [--precision fp32|bf16|int8|auto] [--no-cache]

Dev: prints SST accuracy + macro-F1, Quora accuracy + F1, STS Pearson + Spearman, and
writes ``predictions/{sst,qqp,sts}-dev.csv`` (one row per example) into the checkpoint.
Test: writes the CS224N submission files ``predictions/sst-test-output.csv`` and
``predictions/sts-test-output.csv`` (there is no Quora test file in data/).

What dev evaluation reuses (:func:`evaluate_checkpoint`):

* **per-example predictions, by checkpoint content.** Each task's outputs are cached
  under the sha256 of the checkpoint's files (weights, config, tokenizer), the precision
  and the exact dev texts (core/evaluation/cache.py). A checkpoint evaluated before - under any
  name or path - is not even loaded; its metrics are recomputed from the cached outputs,
  so they are identical. Rewritten weights are new content: a new entry.
* **sentence embeddings, by encoder content.** Tasks whose head reads one pooled vector
  per sentence (single-sentence and bi-encoder heads, cosine heads, zero-shot) are
  predicted from the embeddings of the *unique* dev sentences of all tasks, encoded once
  in length-sorted token-budget batches (instead of pairs padded to their longer side),
  then the heads run on the vectors. Those embeddings are cached under the encoder's
  content: the zero-shot encoder's are computed once, and checkpoints that kept the
  encoder frozen (the starter recipe) reuse them. Cross-encoder, prompted and token-state
  heads run through ``predict_task`` as before.
* **precision:** exact fp32 unless asked (``--precision bf16|int8|auto``; auto = bf16
  where native, else int8, see core/model/precision.py).

The same embedding-sharing path (without the disk cache) serves :func:`evaluate_model`,
which the trainer and the app call on models in memory.
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
import torch

from core.data.datasets import TaskData, load_subset, load_task, texts_by_id
from core.errors import MinbertError
from core.paths import DATA_DIR
from core.evaluation.metrics import pearson, spearman, task_metrics
from core.model.checkpoint import checkpoint_tasks
from core.model.multitask import MultitaskBert
from core.model.precision import backend_name, resolve_mode
from core.tasks import QUORA_NOTE, TASK_SPECS, mean_score

log = logging.getLogger(__name__)


def model_tasks(model) -> list[str]:
    """Tasks a model can predict (:meth:`core.model.multitask.MultitaskBert.served_tasks`)."""
    return model.served_tasks()


def predict_data(model, data: TaskData, batch_size: int = 128) -> np.ndarray:
    """Dev/test predictions read every input as training did: cut at the model's max_len
    (``long_text="truncate"``), so dev figures do not depend on the long-text windows of
    the serving API and stay comparable with the checkpoints already evaluated."""
    return model.predict_task(data.task, data.texts_a, data.texts_b, batch_size=batch_size, long_text="truncate")


def sentence_level(model, task: str) -> bool:
    """:meth:`core.model.multitask.MultitaskBert.sentence_level` (the model decides)."""
    return model.sentence_level(task)


def predict_from_embeddings(model, task: str, emb_a: np.ndarray, emb_b: np.ndarray | None = None,
                            rows: int = 4096) -> np.ndarray:
    """:meth:`core.model.multitask.MultitaskBert.predict_from_embeddings` (the model's own math)."""
    return model.predict_from_embeddings(task, emb_a, emb_b, rows)


def predict_datasets(model, datasets: dict[str, TaskData], batch_size: int = 64,
                     embed=None, profile: dict | None = None) -> dict[str, np.ndarray]:
    """Every task's outputs. A sentence-level task (:func:`sentence_level`) encodes its
    unique sentences once (``embed(texts) -> [n, d]``, default ``model.embed``: length-
    sorted token-budget batches) and runs its head on the vectors; the others go through
    ``predict_task``. ``profile`` collects seconds per phase."""
    profile = profile if profile is not None else {}
    outputs: dict[str, np.ndarray] = {}
    embed = embed or (lambda texts: model.embed(texts, batch_size=batch_size))
    for task, data in datasets.items():
        t0 = time.perf_counter()
        if not model.sentence_level(task):
            outputs[task] = predict_data(model, data, batch_size)
            profile[f"{task}_predict_task_s"] = round(time.perf_counter() - t0, 3)
            continue
        texts_a, texts_b = data.texts_a, data.texts_b
        unique: dict[str, int] = {}
        for s in texts_a + (texts_b or []):
            unique.setdefault(s, len(unique))
        emb = embed(list(unique))
        t1 = time.perf_counter()
        ia = np.fromiter((unique[s] for s in texts_a), dtype=np.int64, count=len(texts_a))
        ib = None if texts_b is None else np.fromiter((unique[s] for s in texts_b), dtype=np.int64,
                                                      count=len(texts_b))
        outputs[task] = model.predict_from_embeddings(task, emb[ia], None if ib is None else emb[ib])
        profile[f"{task}_encode_s"] = round(t1 - t0, 3)
        profile[f"{task}_sentences"] = len(unique)
        profile[f"{task}_heads_s"] = round(time.perf_counter() - t1, 3)
    return outputs


# ------------------------------------------------------- STS from embedding cosine
def cosine_scores(emb_a, emb_b) -> np.ndarray:
    """Row-wise cosine similarity of two paired embedding matrices [n, d] (float64;
    a zero row has cosine 0)."""
    a, b = np.asarray(emb_a, dtype=np.float64), np.asarray(emb_b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise MinbertError(f"paired embeddings must be two [n, d] arrays of one shape, got {a.shape} and {b.shape}")
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.where(na * nb > 0, na * nb, 1.0)


def embedding_sts_metrics(model, data: TaskData, batch_size: int = 64) -> dict:
    """The one STS evaluator of sentence embeddings: Pearson and Spearman correlation of
    cos(embed(a_i), embed(b_i)) with the gold scores (no head involved). Keys
    ``embedding_sts_pearson``, ``embedding_sts_spearman``, ``sts_n``."""
    cos = cosine_scores(model.embed(data.texts_a, batch_size=batch_size),
                        model.embed(data.texts_b, batch_size=batch_size))
    return {"embedding_sts_pearson": pearson(data.labels, cos),
            "embedding_sts_spearman": spearman(data.labels, cos), "sts_n": len(data),
            **with_subset_mark({"sts": data})}


# ------------------------------------------------------------- subset marks
# metrics[SUBSET_KEY] = {task: {"n", "of", "seed", "sampling", "strata"}} for every task
# scored on a sample of its dev file (core.data.datasets.load_subset); absent when all are full.
SUBSET_KEY = "subset"


def with_subset_mark(datasets: dict[str, TaskData]) -> dict:
    """``{"subset": {task: mark}}`` for the datasets that are samples of their file, ``{}``
    when none is: merged into a metrics dict, it travels with the figures into the eval
    event, ``metrics.json`` and every page."""
    marks = {t: d.subset.to_dict() for t, d in datasets.items() if getattr(d, "subset", None) is not None}
    return {SUBSET_KEY: marks} if marks else {}


def full_dev_size(task: str, data_dir: str | Path = DATA_DIR) -> int | None:
    """Valid rows of ``task``'s dev file (None when the file cannot be read)."""
    try:
        return len(texts_by_id(task, "dev", data_dir))
    except MinbertError:
        return None


def dev_subsets(dev: dict, data_dir: str | Path = DATA_DIR) -> dict[str, dict]:
    """The tasks of a metrics dict (``metrics.json``'s ``dev``, an ``eval`` event) whose
    figures come from part of their dev file: ``{task: {"n", "of", "sampling", ...}}``,
    ``{}`` when every figure is on the full dev set. Runs that predate the mark are read
    by their counts: ``{task}_n`` below the dev file's size is a subset of its first rows
    (what ``data.eval_limit`` kept then); ``"of": None`` when the file cannot be read."""
    marks = dict((dev.get(SUBSET_KEY) or {}) if isinstance(dev.get(SUBSET_KEY), dict) else {})
    for task in TASK_SPECS:
        n = dev.get(TASK_SPECS[task].count_key)
        if task in marks or not isinstance(n, (int, float)):
            continue
        of = full_dev_size(task, data_dir)
        if of is None:
            marks[task] = {"n": int(n), "of": None, "sampling": "unknown"}
        elif int(n) < of:
            marks[task] = {"n": int(n), "of": of, "sampling": "first rows"}
    return marks


def subset_note(marks: dict[str, dict]) -> str:
    """One line for a page, e.g. ``"dev subset: Sentiment 300 of 1,101, Paraphrase 300 of
    2,000 (stratified, seed 0)"``; ``""`` for full-dev figures (``marks``: :func:`dev_subsets`)."""
    if not marks:
        return ""
    parts, how = [], []
    for task, m in marks.items():
        title = TASK_SPECS[task].title if task in TASK_SPECS else task
        parts.append(f"{title} {int(m['n']):,}" + (f" of {int(m['of']):,}" if m.get("of") else ""))
        way = str(m.get("sampling", "unknown")) + (f", seed {m['seed']}" if m.get("seed") is not None else "")
        if way not in how:
            how.append(way)
    return f"dev subset: {', '.join(parts)} ({'; '.join(how)})"


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
                   batch_size: int = 128, datasets: dict[str, TaskData] | None = None
                   ) -> tuple[dict, dict[str, pd.DataFrame]]:
    """Dev metrics (contract keys) and per-example prediction frames for ``tasks``.
    ``limit``: the first N rows of each file (a fixed prefix, for tests and benchmarks);
    pass ``datasets`` from :func:`core.data.datasets.load_subset` for a marked stratified sample."""
    tasks = list(tasks or model.served_tasks())
    data = {t: datasets[t] if datasets and t in datasets else load_task(t, split, data_dir, limit=limit)
            for t in tasks}
    outputs = predict_datasets(model, data, batch_size)
    return metrics_and_frames(data, outputs)


def metrics_and_frames(datasets: dict[str, TaskData], outputs: dict[str, np.ndarray]
                       ) -> tuple[dict, dict[str, pd.DataFrame]]:
    metrics: dict = {}
    frames: dict[str, pd.DataFrame] = {}
    for task, data in datasets.items():
        frames[task] = prediction_frame(data, outputs[task])
        if data.labels is not None:
            metrics.update(task_metrics(task, data.labels, outputs[task]))
    metrics.update(with_subset_mark({t: d for t, d in datasets.items() if d.labels is not None}))
    return metrics, frames


def _precision_key(mode: str) -> list[str]:
    """What besides the checkpoint decides its outputs at a precision: torch's version,
    and for int8 the kernel backend (7- or 8-bit activations depend on the CPU)."""
    return [mode, torch.__version__, backend_name() if mode == "int8" else ""]


def evaluate_checkpoint(path, tasks=None, data_dir="data", split: str = "dev", limit: int | None = None,
                        batch_size: int = 64, precision: str | None = "fp32", device: str = "cpu",
                        cache: bool = True, cache_dir=None, datasets: dict[str, TaskData] | None = None
                        ) -> tuple[dict, dict[str, pd.DataFrame], dict]:
    """Dev metrics, prediction frames and an info dict (precision, which tasks came from
    the cache, seconds, a per-phase ``profile``) for the checkpoint at ``path``
    ("pretrained" for zero-shot). The model is loaded only if a task is not cached."""
    from core.evaluation import cache as cache_mod
    start = time.perf_counter()
    profile: dict = {}
    t0 = time.perf_counter()
    tasks = list(tasks or checkpoint_tasks(path))
    mode = resolve_mode(precision, device)
    data = {t: datasets[t] if datasets and t in datasets else load_task(t, split, data_dir, limit=limit)
            for t in tasks}
    profile["load_data_s"] = round(time.perf_counter() - t0, 3)
    outputs: dict[str, np.ndarray] = {}
    paths = {}
    if cache:
        t0 = time.perf_counter()
        fingerprint = cache_mod.checkpoint_fingerprint(path)
        for t, d in data.items():
            paths[t] = cache_mod.keyed_path(f"eval-{t}", [fingerprint, *_precision_key(mode),
                                                         cache_mod.texts_fingerprint(d.texts_a, d.texts_b)],
                                            cache_dir)
            value = cache_mod.read_array(paths[t])
            if value is not None and len(value) == len(d):
                outputs[t] = value
        profile["cache_lookup_s"] = round(time.perf_counter() - t0, 3)
    missing = [t for t in tasks if t not in outputs]
    if missing:
        t0 = time.perf_counter()
        model = MultitaskBert.load(str(path), device=device, quantize=None if mode == "fp32" else mode)
        profile["load_model_s"] = round(time.perf_counter() - t0, 3)

        def cached_embed(texts):
            """Sentence embeddings cached by encoder content (shared across checkpoints)."""
            key = [cache_mod.encoder_fingerprint(model), *_precision_key(mode), cache_mod.texts_fingerprint(texts)]
            return cache_mod.cached_array(cache_mod.keyed_path("embed-eval", key, cache_dir),
                                          lambda: model.embed(texts, batch_size=batch_size))
        computed = predict_datasets(model, {t: data[t] for t in missing}, batch_size,
                                    embed=cached_embed if cache else None, profile=profile)
        for t, value in computed.items():
            outputs[t] = value
            if cache:
                cache_mod.write_array(paths[t], value)
    t0 = time.perf_counter()
    metrics, frames = metrics_and_frames(data, {t: outputs[t] for t in tasks})
    profile["metrics_s"] = round(time.perf_counter() - t0, 3)
    info = {"precision": mode, "cached_tasks": [t for t in tasks if t not in missing], "computed_tasks": missing,
            "seconds": round(time.perf_counter() - start, 3), "profile": profile}
    return metrics, frames, info


def write_predictions(frames: dict[str, pd.DataFrame], directory: Path, split: str) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for task, df in frames.items():
        path = directory / f"{task}-{split}.csv"
        df.to_csv(path, index=False)
        paths.append(path)
    return paths


# Stored by id only: the study keeps ~90 runs' dev predictions in the repository, and the
# sentences are the same in every one of them (they are in data/, found again by id).
SLIM_DECIMALS = 4


def slim_predictions(directory: Path, decimals: int = SLIM_DECIMALS) -> list[Path]:
    """Rewrite every ``{task}-{split}.csv`` in ``directory`` without its sentence columns
    and with floats rounded to ``decimals`` (readers join the sentences back from the data
    files by id: ``analysis.predictions.load_predictions``). Already slim files are kept."""
    from core.atomic import atomic_write_text
    from core.tasks import TASK_SPECS
    paths = []
    for path in sorted(Path(directory).glob("*-*.csv")):
        task = path.name.split("-", 1)[0]
        if task not in TASK_SPECS:
            continue
        df = pd.read_csv(path, dtype={"id": str}, keep_default_na=False, na_values=[""])
        df = df.drop(columns=[c for c in TASK_SPECS[task].columns[0] if c in df.columns])
        floats = df.select_dtypes("float").columns
        df[floats] = df[floats].round(decimals)
        atomic_write_text(path, df.to_csv(index=False))
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
        if task not in model.served_tasks():
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
    parser.add_argument("--limit", type=int, default=None,
                        help="a seeded, label-stratified sample of N examples of each dev set "
                             "(core.data.datasets.load_subset); the figures carry a 'subset' mark")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="inference batches hold batch-size x 32 padded tokens")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16", "int8", "auto"], default=None,
                        help="fp32 (exact, the default), bf16 autocast, int8 dynamic quantization, or auto "
                             "(bf16 where native, else int8 on CPU)")
    parser.add_argument("--quantize", choices=["int8"], default=None,
                        help="same as --precision int8 (the CPU serving path before bf16)")
    parser.add_argument("--no-cache", action="store_true",
                        help="compute everything (dev predictions are otherwise cached by checkpoint content)")
    parser.add_argument("--cache-dir", default=None, help="default: $MINBERT_CACHE_DIR or checkpoints/.cache")
    parser.add_argument("--out", default=None, help="where predictions go (default: CHECKPOINT/predictions)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if args.precision and args.quantize and args.precision != args.quantize:
        print(f"error: --quantize {args.quantize} contradicts --precision {args.precision}", file=sys.stderr)
        return 2
    precision = args.precision or args.quantize or "fp32"
    try:
        out_dir = Path(args.out) if args.out else (
            Path(args.checkpoint) / "predictions" if args.checkpoint != "pretrained"
            else Path("checkpoints/pretrained/predictions"))
        start = time.time()
        if args.split == "test":
            model = MultitaskBert.load(args.checkpoint, device=args.device,
                                       quantize=None if precision == "fp32" else precision)
            paths = write_submission(model, args.data_dir, out_dir, args.batch_size)
            result = {"files": [str(p) for p in paths]}
        else:
            datasets = None if args.limit is None else {
                t: load_subset(t, "dev", args.data_dir, args.limit) for t in checkpoint_tasks(args.checkpoint)}
            metrics, frames, info = evaluate_checkpoint(
                args.checkpoint, data_dir=args.data_dir, batch_size=args.batch_size, datasets=datasets,
                precision=precision, device=args.device, cache=not args.no_cache, cache_dir=args.cache_dir)
            write_predictions(frames, out_dir, "dev")
            result = {**metrics, "mean_score": mean_score(metrics), "seconds": round(time.time() - start, 2),
                      "precision": info["precision"], "cached": not info["computed_tasks"],
                      "profile": info["profile"]}
    except MinbertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>14}: {value:.4f}" if isinstance(value, float) else f"{key:>14}: {value}")
        if "qqp_acc" in result:
            print(f"note: {QUORA_NOTE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
