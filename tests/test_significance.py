"""analysis/significance.py against hand computations, scipy and sklearn.

McNemar: exact two-sided binomial p-values worked out by hand (sums of binomial
coefficients over 2^n). Bootstrap: constructed cases whose percentile interval is known
(identical models -> [0, 0]; k discordant examples out of n -> the count is
Binomial(n, k/n), so the interval's ends are its 2.5 % / 97.5 % quantiles / n).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from analysis import significance as S
from core.errors import MinbertError


# ------------------------------------------------------------------ McNemar
def _correct(both: int, only_a: int, only_b: int, neither: int):
    a = [1] * both + [1] * only_a + [0] * only_b + [0] * neither
    b = [1] * both + [0] * only_a + [1] * only_b + [0] * neither
    return np.array(a, bool), np.array(b, bool)


@pytest.mark.parametrize("only_a, only_b, expected", [
    (0, 5, 2 * 0.5 ** 5),                        # P(X = 0) doubled: 2/32 = 0.0625
    (1, 9, 2 * (1 + 10) / 2 ** 10),             # P(X <= 1), n = 10: (C(10,0) + C(10,1)) / 1024, doubled
    (2, 10, 2 * (1 + 12 + 66) / 2 ** 12),       # n = 12: (1 + 12 + 66) / 4096, doubled = 0.03857
    (7, 7, 1.0),                                # balanced discordant pairs: no evidence
    (0, 0, 1.0),                                # never discordant
])
def test_mcnemar_exact_p_values_by_hand(only_a, only_b, expected):
    ca, cb = _correct(both=50, only_a=only_a, only_b=only_b, neither=20)
    out = S.mcnemar(ca, cb)
    assert (out["b"], out["c"]) == (only_a, only_b)
    assert out["p_value"] == pytest.approx(expected, rel=1e-12)
    assert S.mcnemar(cb, ca)["p_value"] == pytest.approx(expected, rel=1e-12)   # symmetric


def test_mcnemar_agrees_with_the_normal_approximation_on_a_textbook_table():
    # Agresti, Categorical Data Analysis (2nd ed.), Table 10.1 (the Prime Minister's approval
    # rating in two surveys of the same 1,600 people: 794, 150, 86, 570): discordant counts 150
    # and 86; the text's z = (86 - 150) / sqrt(236) = -4.17, two-sided p about 3e-5. The exact
    # test on so many pairs must be close to it.
    ca, cb = _correct(both=794, only_a=150, only_b=86, neither=570)
    z = (86 - 150) / math.sqrt(236)
    assert z == pytest.approx(-4.17, abs=0.01)
    p_normal = 2 * stats.norm.cdf(z)
    assert S.mcnemar(ca, cb)["p_value"] == pytest.approx(p_normal, rel=0.35)
    assert S.mcnemar(ca, cb)["p_value"] < 1e-4


# ---------------------------------------------------------------- bootstrap
def test_identical_models_have_a_zero_interval_and_no_difference():
    y = np.arange(200) % 5
    p = (y + (np.arange(200) % 3 == 0)) % 5
    out = S.bootstrap_difference(y, p, p, "accuracy", n_resamples=300)
    assert (out["diff"], out["low"], out["high"]) == (0.0, 0.0, 0.0)
    assert out["verdict"] == S.NO_DIFFERENCE


def test_always_right_against_always_wrong_is_one_everywhere():
    y = np.zeros(50, int)
    out = S.bootstrap_difference(y, y, y + 1, "accuracy", n_resamples=300, names=("good", "bad"))
    assert (out["low"], out["high"], out["diff"]) == (1.0, 1.0, 1.0)
    assert out["verdict"] == "good better"


def test_interval_matches_the_binomial_quantiles_of_a_constructed_case():
    # n = 400 examples; A right and B wrong on k = 40, both right on the rest. In a resample
    # the A - B difference is (number of the 40 drawn) / n ~ Binomial(400, 0.1) / 400.
    n, k = 400, 40
    y = np.zeros(n, int)
    pa = np.zeros(n, int)
    pb = np.where(np.arange(n) < k, 1, 0)
    out = S.bootstrap_difference(y, pa, pb, "accuracy", n_resamples=20_000, seed=3)
    counts = stats.binom.ppf([0.025, 0.975], n, k / n)
    assert list(counts) == [29, 52]              # the binomial's 2.5 % and 97.5 % quantiles
    low, high = counts / n
    assert out["low"] == pytest.approx(low, abs=1.5 / n)
    assert out["high"] == pytest.approx(high, abs=1.5 / n)
    assert out["diff"] == pytest.approx(0.1) and out["verdict"] == "A better"


def test_pairing_uses_the_same_examples_for_both_models():
    # Two models that differ on 10 of 1,000 examples only (A right there). Paired, the
    # difference is Binomial(1000, 0.01)/1000: clearly above 0. Resampling A and B
    # independently would mix in each model's own sampling noise (sd ~ 0.016 each) and the
    # interval would contain 0.
    n = 1000
    y = np.zeros(n, int)
    rng = np.random.default_rng(0)
    base = np.where(rng.random(n) < 0.3, 1, 0)             # both wrong on about 30 %
    pa = base.copy()
    flip = np.flatnonzero(base == 1)[:10]
    pa[flip] = 0                                           # A right on 10 more
    out = S.bootstrap_difference(y, pa, base, "accuracy", n_resamples=4000)
    assert out["low"] > 0 and out["high"] < 0.025
    unpaired = [(pa[rng.integers(0, n, n)] == 0).mean() - (base[rng.integers(0, n, n)] == 0).mean()
                for _ in range(2000)]
    assert np.quantile(unpaired, 0.025) < 0 < np.quantile(unpaired, 0.975)


def test_seeded_resampling_is_reproducible_and_depends_on_the_seed():
    rng = np.random.default_rng(1)
    y, pa, pb = rng.integers(0, 5, 300), rng.integers(0, 5, 300), rng.integers(0, 5, 300)
    one = S.bootstrap_difference(y, pa, pb, "macro_f1", n_resamples=500, seed=7)
    assert one == S.bootstrap_difference(y, pa, pb, "macro_f1", n_resamples=500, seed=7)
    assert one["low"] != S.bootstrap_difference(y, pa, pb, "macro_f1", n_resamples=500, seed=8)["low"]


def test_accuracy_interval_is_close_to_scipys_paired_percentile_bootstrap():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 600)
    pa = np.where(rng.random(600) < 0.8, y, 1 - y)
    pb = np.where(rng.random(600) < 0.75, y, 1 - y)
    ours = S.bootstrap_difference(y, pa, pb, "accuracy", n_resamples=5000)
    ref = stats.bootstrap(((pa == y).astype(float), (pb == y).astype(float)),
                          lambda a, b, axis=-1: a.mean(axis) - b.mean(axis), paired=True, n_resamples=5000,
                          method="percentile", confidence_level=0.95, rng=np.random.default_rng(0))
    assert ours["low"] == pytest.approx(ref.confidence_interval.low, abs=0.006)
    assert ours["high"] == pytest.approx(ref.confidence_interval.high, abs=0.006)


def test_lower_is_better_metrics_favour_the_smaller_error():
    y = np.linspace(0, 5, 100)
    out = S.bootstrap_difference(y, y + 0.1, y + 1.0, "mae", n_resamples=200, names=("close", "far"))
    assert out["diff"] == pytest.approx(-0.9) and out["verdict"] == "close better"


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1", "f1", "pearson", "spearman"])
def test_batched_metrics_match_the_references(metric):
    rng = np.random.default_rng(4)
    if metric in ("pearson", "spearman"):
        y = rng.integers(0, 6, 200).astype(float)          # ties, as STS has
        p = y + rng.normal(0, 1.5, 200)
        ref = (stats.pearsonr if metric == "pearson" else stats.spearmanr)(y, p)[0]
    else:
        k = 2 if metric == "f1" else 5
        y, p = rng.integers(0, k, 200), rng.integers(0, k, 200)
        p[:3] = 0 if k == 5 else p[:3]
        ref = {"accuracy": lambda: (y == p).mean(),
               "macro_f1": lambda: f1_score(y, p, average="macro", labels=range(5), zero_division=0),
               "f1": lambda: f1_score(y, p, zero_division=0)}[metric]()
    assert S.metric_value(metric, y, p) == pytest.approx(ref, abs=1e-12)


# --------------------------------------------------------------- the table
def _frames(n=120):
    rng = np.random.default_rng(5)
    label = np.arange(n) % 5
    sentences = [("not bad at all " if i % 4 == 0 else "") + "word " * (3 + i % 25) for i in range(n)]
    a = pd.DataFrame({"id": [f"e{i}" for i in range(n)], "sentence": sentences, "label": label,
                      "pred": np.where(rng.random(n) < 0.6, label, (label + 1) % 5), "confidence": 0.5})
    b = a.assign(pred=np.where(rng.random(n) < 0.4, label, (label + 2) % 5))
    return a, b


def test_compare_task_rows_slices_and_sizes():
    a, b = _frames()
    table = S.compare_task(a, b, "sst", names=("A", "B"), n_resamples=200)
    overall = table[table["slice"] == "all"]
    assert list(overall["metric"]) == ["accuracy", "macro_f1"] and set(overall["n"]) == {120}
    acc = overall.iloc[0]
    assert acc["a"] == pytest.approx((a["pred"] == a["label"]).mean())
    ca, cb = a["pred"] == a["label"], b["pred"] == b["label"]
    assert (acc["only_a_right"], acc["only_b_right"]) == ((ca & ~cb).sum(), (~ca & cb).sum())
    labels = table[table["slice"] == "label"]
    # class order, not alphabetical; accuracy only inside a one-label slice
    assert list(labels["value"]) == ["very negative", "negative", "neutral", "positive", "very positive"]
    assert set(labels["metric"]) == {"accuracy"} and set(labels["n"]) == {24}
    negation = table[(table["slice"] == "negation") & (table["metric"] == "accuracy")]
    assert list(negation["value"]) == ["False", "True"] and list(negation["n"]) == [90, 30]
    lengths = list(table[(table["slice"] == "length") & (table["metric"] == "accuracy")]["value"])
    assert lengths == sorted(lengths, key=lambda v: float(v.split("-")[0].rstrip("+")))


def test_compare_task_refuses_mismatched_inputs():
    a, b = _frames()
    with pytest.raises(MinbertError, match="different names"):
        S.compare_task(a, b, "sst", names=("same", "same"))
    with pytest.raises(MinbertError, match="different gold labels"):
        S.compare_task(a, b.assign(label=(b["label"] + 1) % 5), "sst")
    with pytest.raises(MinbertError, match="share no"):
        S.compare_task(a, b.assign(id=b["id"] + "x"), "sst")
    with pytest.raises(MinbertError, match="unknown metric"):
        S.bootstrap_difference([1], [1], [1], "bleu")


def test_seed_spread_of_a_study_run(tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    rows = [{"row": "r", "seed": s, "checkpoint": f"/elsewhere/study/r-s{s}", "dev": {"sst_acc": v}}
            for s, v in enumerate([0.40, 0.42, 0.44])]
    rows.append({"row": "other", "seed": 0, "checkpoint": "/x/other-s0", "dev": {"sst_acc": 0.9}})
    (study / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (study / "r-s1").mkdir()
    spread = S.seed_spread(study / "r-s1")
    assert spread["row"] == "r" and spread["seeds"] == [0, 1, 2]
    assert spread["metrics"]["sst_acc"]["sd"] == pytest.approx(0.02)     # sample sd of .40 .42 .44
    assert S.seed_spread(tmp_path) is None
    table = pd.DataFrame([{"task": "sst", "metric": "accuracy", "slice": "all"},
                          {"task": "sst", "metric": "accuracy", "slice": "length"}])
    noisy = S.with_seed_noise(table, None, spread)
    assert noisy["seed_sd_b"].iloc[0] == pytest.approx(0.02) and math.isnan(noisy["seed_sd_b"].iloc[1])
    assert noisy["seed_sd_a"].isna().all()


def test_resampled_ranks_equal_scipys_rankdata_per_resample():
    rng = np.random.default_rng(6)
    values = rng.integers(0, 7, 50).astype(float)            # many ties
    unique, ids = np.unique(values, return_inverse=True)
    idx = rng.integers(0, 50, (20, 50))
    assert np.allclose(S.resampled_ranks(ids, len(unique), idx), stats.rankdata(values[idx], axis=1))
    y = rng.integers(0, 6, 300).astype(float)
    pa, pb = y + rng.normal(0, 1, 300), y + rng.normal(0, 2, 300)
    fast = S.bootstrap_difference(y, pa, pb, "spearman", n_resamples=300, seed=2)
    slow = np.concatenate([S._spearman(y[i], pa[i]) - S._spearman(y[i], pb[i]) for i in S.resample_indices(300, 300, 2)])
    assert fast["low"] == pytest.approx(np.quantile(slow, 0.025)) and fast["high"] == pytest.approx(np.quantile(slow, 0.975))
