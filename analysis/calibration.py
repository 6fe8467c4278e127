"""Does "70 % confident" mean right 70 % of the time? Reliability diagrams and ECE.

    conf, hit = outcomes(df, "sst")          # top-label confidence and whether it was right
    reliability(conf, hit, n_bins=10)        # one row per confidence bin
    expected_calibration_error(conf, hit)    # ECE
    calibration_report(df, "qqp")            # bins, ECE (with a bootstrap interval), MCE, n

Two readings, from the stored dev predictions (no model, no weights):

* **sst, top-label** (5-way): the confidence is the predicted class's probability, the
  outcome whether the predicted class is the gold one (Guo et al. 2017, section 2).
* **qqp, binary**: the predicted probability of *paraphrase* against how often the pair
  is one (the classic reliability diagram of a binary classifier).

Bins are equal-width on [0, 1], right-closed as in Guo et al. (``B_m`` holds confidences
in ((m - 1)/M, m/M]; a confidence of 0 goes to the first). For each bin: its size, the
mean confidence and the observed frequency (accuracy). The expected calibration error is
``ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)|`` (Guo et al. 2017, eq. 3) and the
maximum calibration error ``MCE = max_m |acc(B_m) - conf(B_m)|`` over non-empty bins.
ECE depends on the number of bins and is biased upward on small sets (a perfectly
calibrated model's ECE on n examples is about sqrt(1 / n) per bin, not 0): compare two
checkpoints on the same dev set and bins, and read its interval.

No Streamlit here.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.predictions import check_frame
from core.tasks import canonical_task
from core.errors import MinbertError

N_BINS = 10
CALIBRATION_TASKS = ("sst", "qqp")
READING = {"sst": "top-label: the predicted class's probability vs how often that class is right",
           "qqp": "binary: the predicted probability of paraphrase vs how often the pair is one"}


def outcomes(df: pd.DataFrame, task: str) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, outcome) per example: sst top-label (max probability, predicted ==
    gold); qqp binary (P(paraphrase), gold is paraphrase)."""
    task = canonical_task(task)
    if task not in CALIBRATION_TASKS:
        raise MinbertError(f"calibration is defined for sentiment and paraphrase probabilities, not {task} "
                           f"(a similarity score has no probability)")
    df = check_frame(df, task)
    if task == "sst":
        probs = [f"prob_{k}" for k in range(5)]
        conf = df[probs].to_numpy(float).max(axis=1) if all(c in df for c in probs) else df["confidence"].to_numpy(float)
        return conf, (df["pred"].to_numpy(int) == df["label"].to_numpy(int))
    return df["prob"].to_numpy(float), df["label"].to_numpy(int) == 1


def bin_index(conf, n_bins: int = N_BINS) -> np.ndarray:
    """Bin of each confidence: m - 1 for conf in ((m - 1)/M, m/M] (0 goes to bin 0)."""
    conf = np.asarray(conf, dtype=float)
    if n_bins < 1:
        raise MinbertError(f"the number of bins must be at least 1, got {n_bins}")
    if conf.size and (np.nanmin(conf) < 0 or np.nanmax(conf) > 1 or np.isnan(conf).any()):
        raise MinbertError("confidences must be probabilities in [0, 1]")
    inner = np.arange(1, n_bins) / n_bins      # k / M: the same doubles as the literals 0.1, 0.2, ...
    return np.searchsorted(inner, conf, side="left")


def reliability(conf, outcome, n_bins: int = N_BINS) -> pd.DataFrame:
    """One row per bin: ``lo``, ``hi``, ``n``, ``confidence`` (mean), ``accuracy``
    (observed frequency), ``gap`` (accuracy - confidence); empty bins have n = 0 and NaN."""
    conf, hit = np.asarray(conf, dtype=float), np.asarray(outcome, dtype=float)
    if conf.shape != hit.shape or conf.size == 0:
        raise MinbertError(f"need one outcome per confidence, and at least one (got {conf.size}, {hit.size})")
    idx = bin_index(conf, n_bins)
    n = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / n
        accuracy = np.bincount(idx, weights=hit, minlength=n_bins) / n
    edges = np.arange(n_bins + 1) / n_bins
    return pd.DataFrame({"lo": edges[:-1], "hi": edges[1:], "n": n, "confidence": mean_conf,
                         "accuracy": accuracy, "gap": accuracy - mean_conf})


def expected_calibration_error(conf, outcome, n_bins: int = N_BINS) -> float:
    """ECE: the bins' |accuracy - confidence| weighted by their share of the examples."""
    table = reliability(conf, outcome, n_bins)
    full = table[table["n"] > 0]
    return float((full["n"] * full["gap"].abs()).sum() / table["n"].sum())


def max_calibration_error(conf, outcome, n_bins: int = N_BINS) -> float:
    """MCE: the largest |accuracy - confidence| over non-empty bins."""
    table = reliability(conf, outcome, n_bins)
    return float(table.loc[table["n"] > 0, "gap"].abs().max())


def ece_interval(conf, outcome, n_bins: int = N_BINS, n_resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the ECE over the examples (seeded)."""
    conf, hit = np.asarray(conf, dtype=float), np.asarray(outcome, dtype=float)
    idx = bin_index(conf, n_bins)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_resamples):
        draw = rng.integers(0, conf.size, conf.size)
        b = idx[draw]
        n = np.bincount(b, minlength=n_bins)
        gap = np.abs(np.bincount(b, weights=hit[draw], minlength=n_bins)
                     - np.bincount(b, weights=conf[draw], minlength=n_bins))
        values.append(gap.sum() / conf.size)    # sum_m |sum(acc) - sum(conf)| / n == sum_m n_m/n |acc_m - conf_m|
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def calibration_report(df: pd.DataFrame, task: str, n_bins: int = N_BINS, n_resamples: int = 1000) -> dict:
    """Everything the page and the report show for one checkpoint and task: ``bins``
    (:func:`reliability`), ``ece``, ``ece_low`` / ``ece_high`` (95 % bootstrap), ``mce``,
    ``n``, ``reading`` (which confidence against which outcome)."""
    task = canonical_task(task)
    conf, hit = outcomes(df, task)
    low, high = ece_interval(conf, hit, n_bins, n_resamples)
    return {"task": task, "bins": reliability(conf, hit, n_bins), "ece": expected_calibration_error(conf, hit, n_bins),
            "ece_low": low, "ece_high": high, "mce": max_calibration_error(conf, hit, n_bins), "n": int(conf.size),
            "n_bins": n_bins, "reading": READING[task]}
