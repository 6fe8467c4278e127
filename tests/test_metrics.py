"""Tests for core.evaluation.metrics: hand-computed cases and agreement with sklearn / scipy."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from core.evaluation.metrics import (
    accuracy,
    confusion_matrix,
    macro_f1,
    pearson,
    precision_recall_f1,
    rankdata,
    spearman,
    task_metrics,
)

SEEDS = range(8)


# --------------------------------------------------------------------- hand-computed


def test_accuracy_and_confusion_by_hand():
    t, p = [0, 1, 2, 2], [0, 2, 2, 2]
    assert accuracy(t, p) == 0.75
    assert confusion_matrix(t, p, 3).tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 2]]
    assert confusion_matrix(t, p, 4).shape == (4, 4)
    with pytest.raises(ValueError):
        accuracy([0, 1], [0])
    with pytest.raises(ValueError):
        confusion_matrix([0, 3], [0, 1], 3)


def test_macro_f1_by_hand():
    t, p = [0, 1, 2, 2], [0, 2, 2, 2]
    # class 0: F1 1; class 1: never predicted -> 0; class 2: tp 2, fp 1 -> 4/5
    assert macro_f1(t, p) == pytest.approx((1 + 0 + 0.8) / 3)
    # a fourth class absent from both still counts (with F1 0) when n_classes is given
    assert macro_f1(t, p, n_classes=4) == pytest.approx((1 + 0 + 0.8) / 4)
    assert macro_f1([1, 1], [1, 1]) == 1.0


def test_binary_prf_by_hand():
    assert precision_recall_f1([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx((0.5, 0.5, 0.5))
    assert precision_recall_f1([1, 1, 1, 0], [1, 1, 0, 0]) == pytest.approx((1.0, 2 / 3, 0.8))
    assert precision_recall_f1([1, 0], [0, 0]) == (0.0, 0.0, 0.0)  # zero_division=0


def test_correlations_by_hand():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 8, 27, 64]) == pytest.approx(1.0)
    assert pearson([1, 2, 3, 4], [1, 8, 27, 64]) < 0.99
    assert rankdata([10, 20, 20, 30]).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert rankdata([3, 1, 3, 3]).tolist() == [3.0, 1.0, 3.0, 3.0]


def test_undefined_correlation_is_zero_not_nan():
    assert pearson([2.5, 2.5, 2.5], [1, 2, 3]) == 0.0
    assert pearson([0.1] * 7, [0.3, 1, 2, 5, 4, 3, 2]) == 0.0  # float-noise constant
    assert spearman([1, 2, 3], [4, 4, 4]) == 0.0
    assert pearson([1.0], [2.0]) == 0.0
    with pytest.raises(ValueError):
        pearson([1, np.nan, 3], [1, 2, 3])


# -------------------------------------------------------------- vs sklearn and scipy


@pytest.mark.parametrize("seed", SEEDS)
def test_classification_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 300))
    t = rng.integers(0, 5, n)
    # predictions biased and missing some classes, so zero-F1 classes occur
    p = np.where(rng.random(n) < 0.5, t, rng.integers(0, 3, n))
    assert accuracy(t, p) == pytest.approx(skm.accuracy_score(t, p))
    assert np.array_equal(confusion_matrix(t, p, 5), skm.confusion_matrix(t, p, labels=range(5)))
    assert macro_f1(t, p) == pytest.approx(
        skm.f1_score(t, p, average="macro", zero_division=0)
    )
    assert macro_f1(t, p, n_classes=6) == pytest.approx(
        skm.f1_score(t, p, labels=list(range(6)), average="macro", zero_division=0)
    )


def test_macro_f1_absent_prediction_class_matches_sklearn():
    t = np.array([0, 0, 1, 1, 2, 2, 3, 4])
    p = np.array([0, 0, 0, 1, 1, 1, 1, 1])  # classes 2, 3, 4 never predicted
    ours = macro_f1(t, p, n_classes=5)
    assert ours == pytest.approx(skm.f1_score(t, p, labels=range(5), average="macro",
                                              zero_division=0))
    # class 0: 2tp/(2tp+fp+fn) = 4/5; class 1: 2/(2+4+1) = 2/7; classes 2-4: 0
    assert ours == pytest.approx((0.8 + 2 / 7) / 5)


@pytest.mark.parametrize("seed", SEEDS)
def test_binary_matches_sklearn(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(10, 200))
    t = rng.integers(0, 2, n)
    p = np.where(rng.random(n) < 0.6, t, rng.integers(0, 2, n))
    prec, rec, f1 = precision_recall_f1(t, p)
    assert prec == pytest.approx(skm.precision_score(t, p, zero_division=0))
    assert rec == pytest.approx(skm.recall_score(t, p, zero_division=0))
    assert f1 == pytest.approx(skm.f1_score(t, p, zero_division=0))


@pytest.mark.parametrize("seed", SEEDS)
def test_correlations_match_scipy(seed):
    rng = np.random.default_rng(200 + seed)
    n = int(rng.integers(5, 400))
    x = rng.normal(size=n)
    y = 0.5 * x + rng.normal(size=n)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    # heavy ties: STS-like scores rounded to 0.2 steps and integer predictions
    xt = np.round(rng.uniform(0, 5, n) * 5) / 5
    yt = np.round(xt + rng.normal(scale=1.5, size=n)).clip(0, 5)
    assert np.array_equal(rankdata(xt), stats.rankdata(xt))
    assert spearman(xt, yt) == pytest.approx(stats.spearmanr(xt, yt)[0], abs=1e-12)
    assert pearson(xt, yt) == pytest.approx(stats.pearsonr(xt, yt)[0], abs=1e-12)


# ----------------------------------------------------------------------- task_metrics


def test_task_metrics_sst_scores_or_labels():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 5, 50)
    logits = rng.normal(size=(50, 5))
    m = task_metrics("sst", t, logits)
    assert set(m) == {"sst_acc", "sst_macro_f1", "sst_n"}
    assert m["sst_n"] == 50 and isinstance(m["sst_n"], int)
    assert m == task_metrics("sentiment", t, logits.argmax(1))
    assert m["sst_acc"] == pytest.approx(skm.accuracy_score(t, logits.argmax(1)))
    assert m["sst_macro_f1"] == pytest.approx(
        skm.f1_score(t, logits.argmax(1), labels=range(5), average="macro", zero_division=0)
    )


def test_task_metrics_qqp_thresholds_probabilities():
    t = np.array([1, 0, 1, 0, 1])
    probs = np.array([0.9, 0.2, 0.5, 0.51, 0.1])  # 0.5 counts as paraphrase
    m = task_metrics("qqp", t, probs)
    assert set(m) == {"qqp_acc", "qqp_f1", "qqp_n"}
    pred = [1, 0, 1, 1, 0]
    assert m["qqp_acc"] == pytest.approx(skm.accuracy_score(t, pred))
    assert m["qqp_f1"] == pytest.approx(skm.f1_score(t, pred))
    assert m["qqp_n"] == 5
    assert task_metrics("paraphrase", t.astype(float), np.array(pred)) == m


def test_task_metrics_sts():
    t = np.array([0.0, 1.2, 3.4, 5.0, 2.2])
    s = np.array([0.5, 1.0, 3.0, 4.0, 2.5])
    m = task_metrics("sts", t, s)
    assert set(m) == {"sts_pearson", "sts_spearman", "sts_n"}
    assert m["sts_pearson"] == pytest.approx(stats.pearsonr(t, s)[0])
    assert m["sts_spearman"] == pytest.approx(1.0)
    assert m["sts_n"] == 5
    with pytest.raises(ValueError):
        task_metrics("sts", t, s[:3])


def test_metrics_module_is_pure_numpy():
    source = Path(__file__).resolve().parents[1] / "core" / "evaluation" / "metrics.py"
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported & {"sklearn", "scipy", "streamlit"} == set()
    assert "numpy" in imported
