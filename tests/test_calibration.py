"""analysis/calibration.py: ECE by hand on six examples, reliability bins against sklearn."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import calibration_curve

from analysis import calibration as C
from core.errors import MinbertError

# Six predictions, ten bins (right-closed, Guo et al. 2017):
#   0.95 right -> (0.9, 1.0]  |1 - 0.95|  = 0.05
#   0.90 right -> (0.8, 0.9]  |1 - 0.90|  = 0.10   (0.9 sits on an edge: the lower bin)
#   0.80 wrong -> (0.7, 0.8]  |0 - 0.80|  = 0.80
#   0.60 right -> (0.5, 0.6]  } mean conf 0.575, accuracy 1/2: |0.5 - 0.575| = 0.075, 2 examples
#   0.55 wrong -> (0.5, 0.6]  }
#   0.30 wrong -> (0.2, 0.3]  |0 - 0.30|  = 0.30
# ECE = (0.05 + 0.10 + 0.80 + 2 * 0.075 + 0.30) / 6 = 1.4 / 6;  MCE = 0.80
CONF = [0.95, 0.9, 0.8, 0.6, 0.55, 0.3]
HIT = [1, 1, 0, 1, 0, 0]


def test_ece_and_mce_by_hand():
    assert C.expected_calibration_error(CONF, HIT) == pytest.approx(1.4 / 6, abs=1e-12)
    assert C.max_calibration_error(CONF, HIT) == pytest.approx(0.8, abs=1e-12)


def test_bins_are_right_closed():
    bins = C.reliability(CONF, HIT)
    assert list(bins["n"]) == [0, 0, 1, 0, 0, 2, 0, 1, 1, 1]
    assert bins.loc[5, "confidence"] == pytest.approx(0.575) and bins.loc[5, "accuracy"] == 0.5
    assert list(C.bin_index([0.0, 0.1, 0.1000001, 1.0])) == [0, 0, 1, 9]
    assert bins["n"].sum() == 6 and bins.loc[0, "confidence"] != bins.loc[0, "confidence"]   # NaN when empty


def test_bins_match_sklearns_calibration_curve():
    rng = np.random.default_rng(0)
    p = rng.random(5000)
    y = (rng.random(5000) < p ** 1.5).astype(int)      # overconfident
    bins = C.reliability(p, y == 1)
    full = bins[bins["n"] > 0]
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    assert np.allclose(full["accuracy"], prob_true) and np.allclose(full["confidence"], prob_pred)


def test_calibrated_and_overconfident_models():
    rng = np.random.default_rng(1)
    conf = rng.uniform(0.2, 1.0, 20_000)
    calibrated = rng.random(20_000) < conf
    assert C.expected_calibration_error(conf, calibrated) < 0.02
    overconfident = rng.random(20_000) < conf - 0.15
    assert C.expected_calibration_error(conf, overconfident) == pytest.approx(0.15, abs=0.02)
    low, high = C.ece_interval(conf, overconfident, n_resamples=200)
    assert low < 0.15 < high + 0.02 and high - low < 0.03


def test_outcomes_read_top_label_for_sst_and_positive_class_for_qqp():
    sst = pd.DataFrame({"id": ["a", "b"], "sentence": ["x", "y"], "label": [1, 4],
                        "prob_0": [0.1, 0.2], "prob_1": [0.6, 0.2], "prob_2": [0.1, 0.2], "prob_3": [0.1, 0.3],
                        "prob_4": [0.1, 0.1], "pred": [1, 3], "confidence": [0.6, 0.3]})
    conf, hit = C.outcomes(sst, "sentiment")
    assert list(conf) == [0.6, 0.3] and list(hit) == [True, False]
    qqp = pd.DataFrame({"id": ["a", "b"], "sentence1": ["x", "y"], "sentence2": ["x", "z"], "label": [1, 0],
                        "prob": [0.2, 0.7], "pred": [0, 1]})
    conf, hit = C.outcomes(qqp, "qqp")
    assert list(conf) == [0.2, 0.7] and list(hit) == [True, False]   # P(paraphrase) vs gold paraphrase
    report = C.calibration_report(qqp, "qqp", n_bins=5, n_resamples=50)
    assert report["n"] == 2 and report["ece"] == pytest.approx((0.8 + 0.7) / 2)


def test_bad_inputs_are_clear_errors():
    sts = pd.DataFrame({"id": ["a"], "sentence1": ["x"], "sentence2": ["y"], "label": [1.0], "pred": [2.0]})
    with pytest.raises(MinbertError, match="similarity score has no probability"):
        C.outcomes(sts, "sts")
    with pytest.raises(MinbertError, match="at least 1"):
        C.reliability(CONF, HIT, n_bins=0)
    with pytest.raises(MinbertError, match=r"probabilities in \[0, 1\]"):
        C.reliability([1.5], [1])
    with pytest.raises(MinbertError, match="one outcome per confidence"):
        C.reliability([0.5, 0.6], [1])
