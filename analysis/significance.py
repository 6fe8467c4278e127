"""Is B better than A, or is it noise? Paired tests of two checkpoints on the same dev examples.

    paired = paired_frame(df_a, df_b, "sst")           # one row per shared dev example
    bootstrap_difference(y, pred_a, pred_b, "accuracy")  # A - B, 95 % paired-bootstrap interval
    mcnemar(correct_a, correct_b)                      # exact McNemar (binomial on discordant pairs)
    compare_task(df_a, df_b, "sst", names=("A", "B"))  # every metric of a task, overall and per slice
    compare_runs(dir_a, dir_b)                         # every task two run directories have

**Paired bootstrap** (Efron & Tibshirani 1993, ch. 13; Koehn 2004 for NLP): the dev set
is resampled with replacement ``n_resamples`` times (seeded); each resample draws the
*same* example indices for A and for B, the metric is computed for both, and the
difference A - B is kept. The 95 % interval is the 2.5th and 97.5th percentile of those
differences (the percentile interval). When it contains 0 the verdict is **no
difference**: a dev set of this size cannot tell the two apart on this metric.

**Exact McNemar** (McNemar 1947) for accuracies: of the examples exactly one of the two
gets right, ``b`` are right for A only and ``c`` for B only; under "equally accurate" b
is Binomial(b + c, 1/2), and the two-sided p-value is ``scipy.stats.binomtest(b, b + c)``.

Per **slice** (length, negation, overlap, label: analysis/mistakes.py) the same, on the
slice's examples, with the slice's size. Inside a label slice every gold label is the
same, so macro-F1 / F1 (which average over classes) are not computed there: accuracy is
(for STS label bins: the mean absolute error, lower is better).

The interval answers *"would this difference hold on another dev sample of this size,
for these two trained models?"*. It says nothing about retraining: a study row's spread
over seeds (:func:`seed_spread`) answers *"how much does the metric move when the same
recipe is trained again with another seed?"*. Both are shown side by side.

No Streamlit here.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from analysis.mistakes import SLICES, add_slices, slice_order
from analysis.predictions import check_frame, load_predictions
from core.tasks import TASKS, canonical_task
from core.errors import MinbertError

N_RESAMPLES = 2000       # resamples of the dev set per interval
SEED = 0                 # the resampling seed (the same indices for every metric of a task)
LEVEL = 0.95             # two-sided coverage of the percentile interval
NO_DIFFERENCE = "no difference"
BLOCK = 250              # resamples drawn at once (bounds memory at BLOCK x n indices)

# metric -> (task key in core.tasks, higher is better)
TASK_METRICS = {"sst": ("accuracy", "macro_f1"), "qqp": ("accuracy", "f1"), "sts": ("pearson", "spearman")}
LABEL_SLICE_METRICS = {"sst": ("accuracy",), "qqp": ("accuracy",), "sts": ("mae",)}
METRIC_KEYS = {("sst", "accuracy"): "sst_acc", ("sst", "macro_f1"): "sst_macro_f1", ("qqp", "accuracy"): "qqp_acc",
               ("qqp", "f1"): "qqp_f1", ("sts", "pearson"): "sts_pearson", ("sts", "spearman"): "sts_spearman"}
LOWER_IS_BETTER = frozenset({"mae"})


# ------------------------------------------------------------- batched metrics
# Each takes gold y and predictions p of shape [R, n] (one resample per row) and returns [R].
def _accuracy(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    return (y == p).mean(axis=1)


def _f1_of(tp, fp, fn) -> np.ndarray:
    den = 2 * tp + fp + fn
    return np.divide(2 * tp, den, out=np.zeros(den.shape, dtype=float), where=den > 0)


def _macro_f1(y: np.ndarray, p: np.ndarray, n_classes: int = 5) -> np.ndarray:
    """Mean F1 over all ``n_classes`` classes, 0 for a class without a true positive
    (core.evaluation.metrics.macro_f1 / sklearn's zero_division=0)."""
    per_class = []
    for k in range(n_classes):
        yk, pk = y == k, p == k
        per_class.append(_f1_of((yk & pk).sum(1), (~yk & pk).sum(1), (yk & ~pk).sum(1)))
    return np.mean(per_class, axis=0)


def _binary_f1(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    yk, pk = y == 1, p == 1
    return _f1_of((yk & pk).sum(1), (~yk & pk).sum(1), (yk & ~pk).sum(1))


def _pearson(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Row-wise Pearson r; 0 where a row is constant (core.evaluation.metrics.pearson's convention)."""
    yc = y - y.mean(axis=1, keepdims=True)
    pc = p - p.mean(axis=1, keepdims=True)
    den = np.sqrt((yc ** 2).sum(1) * (pc ** 2).sum(1))
    r = np.divide((yc * pc).sum(1), den, out=np.zeros(den.shape), where=den > 1e-12)
    return np.clip(r, -1.0, 1.0)


def _spearman(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    return _pearson(stats.rankdata(y, axis=1), stats.rankdata(p, axis=1))


def _mae(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.abs(p - y).mean(axis=1)


def resampled_ranks(ids: np.ndarray, n_unique: int, idx: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties share the mean rank: scipy's ``rankdata``) of each
    resample ``values[idx[r]]``, given each value's id among the sorted unique values
    (``ids``): from per-resample counts of the ids, O(R * (n + unique)) without sorting."""
    rows, n = idx.shape
    drawn = ids[idx]
    offsets = (np.arange(rows) * n_unique)[:, None]
    counts = np.bincount((drawn + offsets).ravel(), minlength=rows * n_unique).reshape(rows, n_unique)
    rank_of = (np.cumsum(counts, axis=1) - counts) + (counts + 1) / 2.0
    return np.take_along_axis(rank_of, drawn, axis=1)


BATCHED = {"accuracy": _accuracy, "macro_f1": _macro_f1, "f1": _binary_f1, "pearson": _pearson,
           "spearman": _spearman, "mae": _mae}


def metric_value(metric: str, y, p) -> float:
    """One metric on one set of examples (the batched function on a single row)."""
    if metric not in BATCHED:
        raise MinbertError(f"unknown metric {metric!r}; choose one of {', '.join(BATCHED)}")
    return float(BATCHED[metric](np.asarray(y)[None, :], np.asarray(p)[None, :])[0])


# ------------------------------------------------------------------ the tests
def resample_indices(n: int, n_resamples: int = N_RESAMPLES, seed: int = SEED):
    """Blocks of bootstrap indices ``[<= BLOCK, n]`` (with replacement), from one seeded
    generator: the same seed gives the same resamples, whatever metric uses them."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_resamples:
        size = min(BLOCK, n_resamples - done)
        yield rng.integers(0, n, size=(size, n))
        done += size


def verdict(low: float, high: float, metric: str, names: tuple[str, str] = ("A", "B")) -> str:
    """"no difference" when the interval of A - B contains 0, else who is better (for
    a lower-is-better metric a negative difference favours A)."""
    if low <= 0.0 <= high or math.isnan(low) or math.isnan(high):
        return NO_DIFFERENCE
    a_higher = low > 0.0
    a_better = a_higher != (metric in LOWER_IS_BETTER)
    return f"{names[0] if a_better else names[1]} better"


def bootstrap_difference(y, pred_a, pred_b, metric: str, n_resamples: int = N_RESAMPLES, seed: int = SEED,
                         level: float = LEVEL, names: tuple[str, str] = ("A", "B")) -> dict:
    """A - B on ``metric`` with its paired percentile interval (see the module docstring).

    Returns ``metric, n, a, b, diff, low, high, verdict, n_resamples, level``."""
    y, pa, pb = (np.asarray(v) for v in (y, pred_a, pred_b))
    n = len(y)
    if n == 0 or len(pa) != n or len(pb) != n:
        raise MinbertError(f"a paired bootstrap needs the same examples for both models (got {n}, {len(pa)}, "
                           f"{len(pb)})")
    if not 0 < level < 1 or n_resamples < 1:
        raise MinbertError(f"level must lie in (0, 1) and n_resamples be >= 1 (got {level}, {n_resamples})")
    fn = BATCHED[metric] if metric in BATCHED else None
    if fn is None:
        raise MinbertError(f"unknown metric {metric!r}; choose one of {', '.join(BATCHED)}")
    if metric == "spearman":    # ranks from counts of the drawn values: no sort per resample
        ids = [np.unique(v, return_inverse=True) for v in (y, pa, pb)]
        ranks = lambda k, idx: resampled_ranks(ids[k][1], len(ids[k][0]), idx)
        diffs = np.concatenate([_pearson(ranks(0, idx), ranks(1, idx)) - _pearson(ranks(0, idx), ranks(2, idx))
                                for idx in resample_indices(n, n_resamples, seed)])
    else:
        diffs = np.concatenate([fn(y[idx], pa[idx]) - fn(y[idx], pb[idx])
                                for idx in resample_indices(n, n_resamples, seed)])
    low, high = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    a, b = metric_value(metric, y, pa), metric_value(metric, y, pb)
    return {"metric": metric, "n": n, "a": a, "b": b, "diff": a - b, "low": float(low), "high": float(high),
            "verdict": verdict(float(low), float(high), metric, names), "n_resamples": int(n_resamples),
            "level": level}


def bootstrap_metric(y, pred, metric: str, n_resamples: int = N_RESAMPLES, seed: int = SEED,
                     level: float = LEVEL) -> tuple[float, float, float]:
    """(value, low, high): one model's ``metric`` with its percentile bootstrap interval
    over the examples (the Errors page's per-slice uncertainty)."""
    y, p = np.asarray(y), np.asarray(pred)
    if len(y) == 0 or len(p) != len(y):
        raise MinbertError(f"a bootstrap needs one prediction per example (got {len(y)}, {len(p)})")
    if metric not in BATCHED:
        raise MinbertError(f"unknown metric {metric!r}; choose one of {', '.join(BATCHED)}")
    values = np.concatenate([BATCHED[metric](y[idx], p[idx]) for idx in resample_indices(len(y), n_resamples, seed)])
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return metric_value(metric, y, p), float(low), float(high)


def slice_intervals(df: pd.DataFrame, task: str, by: str, n_resamples: int = 1000, seed: int = SEED) -> pd.DataFrame:
    """:func:`analysis.mistakes.slice_metrics` of one model plus, for the slice's first
    metric, its 95 % bootstrap interval (``<metric>_low``, ``<metric>_high``)."""
    from analysis.mistakes import slice_metrics
    task = canonical_task(task)
    table = slice_metrics(df, task, by)
    metric = LABEL_SLICE_METRICS[task][0] if by == "label" else TASK_METRICS[task][0]
    framed = df if ("label_bin" if by == "label" else by) in df else add_slices(df, task)
    column = "label_bin" if by == "label" else by
    kind = float if task == "sts" else int
    lows, highs = [], []
    for value in table[by]:
        part = framed[framed[column] == value]
        _, low, high = bootstrap_metric(part["label"].to_numpy(kind), part["pred"].to_numpy(kind), metric,
                                        n_resamples, seed) if len(part) > 1 else (None, np.nan, np.nan)
        lows.append(low)
        highs.append(high)
    return table.assign(**{f"{metric}_low": lows, f"{metric}_high": highs})


def mcnemar(correct_a, correct_b) -> dict:
    """Exact McNemar test of two classifiers' accuracies on the same examples.

    ``b``: examples only A gets right, ``c``: only B; two-sided p-value of
    ``binomtest(b, b + c, 0.5)`` (1.0 when the two never disagree on correctness)."""
    ca, cb = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if ca.shape != cb.shape:
        raise MinbertError(f"McNemar needs the same examples for both models ({ca.size} vs {cb.size})")
    b, c = int((ca & ~cb).sum()), int((~ca & cb).sum())
    p = 1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5).pvalue)
    return {"b": b, "c": c, "p_value": p}


def format_p(p) -> str:
    """A p-value as people read it: 4 decimals, or 2 significant digits below 0.001."""
    if p is None or p != p:
        return ""
    return f"{p:.4f}" if p >= 0.001 else f"{p:.1e}"


# ------------------------------------------------------------ a task's table
def paired_frame(df_a: pd.DataFrame, df_b: pd.DataFrame, task: str) -> pd.DataFrame:
    """The dev examples both prediction frames have (matched by ``id``): A's frame with
    its slice columns, plus ``pred_a`` and ``pred_b``."""
    task = canonical_task(task)
    a, b = check_frame(df_a, task), check_frame(df_b, task)
    merged = add_slices(a, task).merge(b[["id", "label", "pred"]].rename(columns={"label": "label_b",
                                                                                   "pred": "pred_b"}),
                                       on="id", validate="one_to_one")
    if merged.empty:
        raise MinbertError(f"the two checkpoints share no {task} dev example (ids differ): were they "
                           f"evaluated on the same dev file?")
    # study runs store floats to 4 decimals (core.evaluation.evaluator.slim_predictions): equal within 1e-3
    bad = ~np.isclose(merged["label"].astype(float), merged["label_b"].astype(float), rtol=0, atol=1e-3)
    if bad.any():
        raise MinbertError(f"{int(bad.sum())} shared {task} dev examples have different gold labels in the two "
                           f"prediction files: they were evaluated on different data")
    return merged.rename(columns={"pred": "pred_a"}).drop(columns="label_b")


def _rows_for(part: pd.DataFrame, task: str, metrics, names, n_resamples: int, seed: int) -> list[dict]:
    y = part["label"].to_numpy(float if task == "sts" else int)
    kind = float if task == "sts" else int
    pa, pb = part["pred_a"].to_numpy(kind), part["pred_b"].to_numpy(kind)
    rows = []
    for metric in metrics:
        row = bootstrap_difference(y, pa, pb, metric, n_resamples, seed, names=names)
        if metric == "accuracy":
            test = mcnemar(pa == y, pb == y)
            row.update(only_a_right=test["b"], only_b_right=test["c"], p_value=test["p_value"])
        rows.append(row)
    return rows


def slice_values(paired: pd.DataFrame, task: str, by: str) -> list:
    """The values of slice ``by`` in their natural order (:func:`analysis.mistakes.slice_order`)."""
    return slice_order(paired["label_bin" if by == "label" else by], task, by)


COLUMNS = ["task", "slice", "value", "metric", "n", "a", "b", "diff", "low", "high", "verdict", "only_a_right",
           "only_b_right", "p_value", "n_resamples"]


def compare_task(df_a: pd.DataFrame, df_b: pd.DataFrame, task: str, names: tuple[str, str] = ("A", "B"),
                 slices: bool = True, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> pd.DataFrame:
    """Every metric of ``task``, A - B with its interval and verdict (accuracies: with the
    exact McNemar p-value and its discordant counts ``only_a_right`` / ``only_b_right``),
    on all shared dev examples (``slice == "all"``) and, with ``slices``, per slice
    value of :data:`analysis.mistakes.SLICES` (``n`` is the slice's size)."""
    task = canonical_task(task)
    if names[0] == names[1]:
        raise MinbertError("give the two checkpoints different names")
    paired = paired_frame(df_a, df_b, task)
    rows = [{"slice": "all", "value": "all", **r}
            for r in _rows_for(paired, task, TASK_METRICS[task], names, n_resamples, seed)]
    for by in SLICES[task] if slices else ():
        column = "label_bin" if by == "label" else by
        metrics = LABEL_SLICE_METRICS[task] if by == "label" else TASK_METRICS[task]
        for value in slice_values(paired, task, by):
            part = paired[paired[column] == value]
            if len(part) < 2:    # a correlation (and an interval) needs two examples
                continue
            rows += [{"slice": by, "value": str(value), **r}
                     for r in _rows_for(part, task, metrics, names, n_resamples, seed)]
    out = pd.DataFrame(rows)
    out["task"] = task
    return out.reindex(columns=COLUMNS)


# ------------------------------------------------------------------- two runs
def compare_runs(dir_a: str | os.PathLike, dir_b: str | os.PathLike, names: tuple[str, str] | None = None,
                 tasks=TASKS, slices: bool = True, n_resamples: int = N_RESAMPLES,
                 seed: int = SEED) -> tuple[pd.DataFrame, list[str]]:
    """:func:`compare_task` for every task both run directories have stored dev
    predictions for (weights are not needed: results-only study runs work), and one
    note per task left out saying why and what would compute it."""
    names = names or (Path(dir_a).name, Path(dir_b).name)
    tables, notes = [], []
    for task in tasks:
        frames = [load_predictions(d, task, missing_ok=True) for d in (dir_a, dir_b)]
        missing = [n for n, f in zip(names, frames) if f is None]
        if missing:
            notes.append(f"{task}: no stored dev predictions for {' and '.join(missing)} "
                         f"(`python -m core.evaluate CHECKPOINT` writes them; it needs the weights)")
            continue
        tables.append(compare_task(*frames, task, names=names, slices=slices, n_resamples=n_resamples, seed=seed))
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=COLUMNS)
    return table, notes


def seed_spread(directory: str | os.PathLike) -> dict | None:
    """For a study run (``<study>/<row>-s<seed>/`` beside the study's ``results.jsonl``,
    core/experiments/study.py): its row, the seeds the row has, and per metric key (``sst_acc`` ...)
    mean and sample sd over those seeds. None for any other run."""
    from core.experiments.study import mean_sd, read_results
    directory = Path(directory)
    results = directory.parent / "results.jsonl"
    if not results.is_file():
        return None
    try:
        records = read_results(results)
    except (MinbertError, OSError, ValueError):
        return None
    own = [r for r in records if directory.name in (Path(str(r.get("checkpoint", ""))).name,
                                                    f"{r.get('row')}-s{r.get('seed')}")]
    if not own:
        return None
    row = own[0].get("row")
    runs = [r for r in records if r.get("row") == row and isinstance(r.get("dev"), dict)]
    metrics = {}
    for key in METRIC_KEYS.values():
        values = [float(r["dev"][key]) for r in runs if r["dev"].get(key) is not None]
        if values:
            mean, sd = mean_sd(values)
            metrics[key] = {"mean": mean, "sd": sd, "n": len(values)}
    return {"row": row, "seeds": sorted(r.get("seed") for r in runs), "metrics": metrics}


def with_seed_noise(table: pd.DataFrame, spread_a: dict | None, spread_b: dict | None) -> pd.DataFrame:
    """``table`` (:func:`compare_task` rows) with each model's seed sd beside the
    whole-dev-set rows (``seed_sd_a``, ``seed_sd_b``; NaN where a run is not a study run
    with two seeds or more, and on slice rows: the study keeps whole-dev metrics only)."""
    out = table.copy()
    for column, spread in (("seed_sd_a", spread_a), ("seed_sd_b", spread_b)):
        def sd(row, spread=spread):
            key = METRIC_KEYS.get((row["task"], row["metric"]))
            entry = (spread or {}).get("metrics", {}).get(key) if row["slice"] == "all" else None
            return entry["sd"] if entry and entry["n"] > 1 else float("nan")
        out[column] = out.apply(sd, axis=1) if len(out) else pd.Series(dtype=float)
    return out
