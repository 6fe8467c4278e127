"""analysis.mistakes and analysis.predictions on synthetic prediction frames (the columns core.evaluation.evaluator writes)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import mistakes as M
from analysis import predictions as P
from core.errors import DataError, MinbertError


def sst_frame() -> pd.DataFrame:
    probs = np.array([
        [0.90, 0.05, 0.03, 0.01, 0.01],   # gold 0, pred 0
        [0.10, 0.80, 0.05, 0.03, 0.02],   # gold 0, pred 1 (conf .80)
        [0.05, 0.05, 0.60, 0.20, 0.10],   # gold 3, pred 2 (conf .60)
        [0.01, 0.01, 0.03, 0.05, 0.90],   # gold 1, pred 4 (conf .90)
        [0.02, 0.03, 0.05, 0.70, 0.20],   # gold 3, pred 3
    ])
    df = pd.DataFrame({"id": ["a", "b", "c", "d", "e"],
                       "sentence": ["a great film", "it is not bad", "meh , n't sure", "never again",
                                    "one two three four five six seven eight nine ten eleven twelve"],
                       "label": [0, 0, 3, 1, 3]})
    for k in range(5):
        df[f"prob_{k}"] = probs[:, k]
    df["pred"] = probs.argmax(1)
    df["confidence"] = probs.max(1)
    df["correct"] = df["pred"] == df["label"]
    return df


def qqp_frame(probs=(0.95, 0.70, 0.20, 0.40, 0.55, 0.05), labels=(0, 0, 1, 1, 1, 0)) -> pd.DataFrame:
    probs = np.array(probs)
    return pd.DataFrame({"id": [f"q{i}" for i in range(len(probs))],
                         "sentence1": ["how do i cook rice", "what is ai", "is it cold", "why not",
                                       "best phone", "who am i"],
                         "sentence2": ["how do i cook rice", "what is love", "is it hot today", "why no",
                                       "best phone 2020", "where are we"],
                         "label": list(labels), "prob": probs, "pred": (probs >= 0.5).astype(int),
                         "correct": (probs >= 0.5).astype(int) == np.array(labels)})


def sts_frame(pred=(4.0, 1.0, 2.5, 5.0)) -> pd.DataFrame:
    df = pd.DataFrame({"id": ["s1", "s2", "s3", "s4"],
                       "sentence1": ["a man plays", "a dog runs", "no one came", "cats sleep"],
                       "sentence2": ["a man plays guitar", "a cat sits", "someone came", "cats sleep"],
                       "label": [4.5, 3.0, 2.0, 5.0], "pred": list(pred)})
    df["residual"] = df["pred"] - df["label"]
    return df


def test_sst_confusion_and_confident_mistakes():
    df = sst_frame()
    cm = M.confusion(df)
    assert cm.shape == (5, 5) and cm.sum() == 5
    assert cm[0, 0] == 1 and cm[0, 1] == 1 and cm[3, 2] == 1 and cm[1, 4] == 1 and cm[3, 3] == 1
    worst = M.worst_examples(df, "sst", k=10)
    assert list(worst["id"]) == ["d", "b", "c"]       # wrong ones, most confident first
    assert M.worst_examples(df, "sentiment", k=1)["id"].tolist() == ["d"]


def test_qqp_false_positives_and_negatives_ranked():
    df = qqp_frame()
    fp = M.worst_examples(df, "qqp", "fp")
    fn = M.worst_examples(df, "qqp", "fn")
    assert list(fp["id"]) == ["q0", "q1"]             # prob .95 then .70, gold 0
    assert list(fn["id"]) == ["q2", "q3"]             # prob .20 (conf .80) then .40 (conf .60)
    np.testing.assert_allclose(fn["confidence"], [0.8, 0.6])
    assert set(M.worst_examples(df, "qqp", "mistakes")["id"]) == {"q0", "q1", "q2", "q3"}
    with pytest.raises(MinbertError, match="kind"):
        M.worst_examples(df, "qqp", "tp")


def test_sts_largest_residuals():
    worst = M.worst_examples(sts_frame(), "sts", k=2)
    assert list(worst["id"]) == ["s2", "s1"]          # |-2.0| then |-0.5| (s3: +0.5, stable order)
    np.testing.assert_allclose(worst["abs_residual"], [2.0, 0.5])


def test_slices_and_per_slice_metrics():
    df = M.add_slices(sst_frame(), "sst")
    assert df["negation"].tolist() == [False, True, True, True, False]
    assert df["n_words"].tolist() == [3, 4, 4, 2, 12]
    assert df["length"].tolist() == ["0-10"] * 4 + ["10-20"]
    by_neg = M.slice_metrics(df, "sst", "negation").set_index("negation")
    assert by_neg.loc[True, "n"] == 3 and by_neg.loc[True, "accuracy"] == pytest.approx(0.0)
    assert by_neg.loc[False, "n"] == 2 and by_neg.loc[False, "accuracy"] == pytest.approx(1.0)
    by_label = M.slice_metrics(sst_frame(), "sst", "label").set_index("label")
    assert by_label.loc["very negative", "accuracy"] == pytest.approx(0.5)
    assert by_label.loc["positive", "n"] == 2

    q = M.add_slices(qqp_frame(), "qqp")
    assert q["overlap_value"].iloc[0] == pytest.approx(1.0)
    assert q["overlap_value"].iloc[1] == pytest.approx(2 / 4)     # {what, is} of {what, is, ai, love}
    assert q["overlap"].iloc[1] == "0.4-0.6" and q["overlap"].iloc[5] == "0-0.2"
    by_overlap = M.slice_metrics(q, "qqp", "overlap").set_index("overlap")
    assert by_overlap["n"].sum() == 6
    # overlap 1.0 and 0.8..1.0 bin: q0 (gold 0, pred 1) -> accuracy 0
    assert by_overlap.loc["0.8-1", "accuracy"] == pytest.approx(0.0)

    s = M.slice_metrics(sts_frame(), "sts", "label").set_index("label")
    assert s.loc["4-5", "n"] == 2 and s.loc["4-5", "mae"] == pytest.approx(0.25)
    with pytest.raises(MinbertError, match="no slice"):
        M.slice_metrics(sst_frame(), "sst", "overlap")


def test_disagreements_and_who_was_right():
    a = qqp_frame()
    b = qqp_frame(probs=(0.10, 0.80, 0.90, 0.30, 0.60, 0.05))   # fixes q0 and q2
    table = P.disagreements(a, b, "qqp", names=("base", "tuned"))
    assert set(table["id"]) == {"q0", "q2"}
    assert set(table["right"]) == {"tuned"}
    assert P.disagreement_summary(table, ("base", "tuned")) == {
        "disagreements": 2, "base": 0, "tuned": 2, "neither": 0, "tie": 0}

    s1, s2 = sts_frame(), sts_frame(pred=(4.4, 2.9, 2.4, 3.0))
    t = P.disagreements(s1, s2, "sts", names=("A", "B"), sts_threshold=0.5).set_index("id")
    assert set(t.index) == {"s2", "s4"}                           # gaps 1.9 and 2.0; s1 .4, s3 .1
    assert t.loc["s2", "right"] == "B" and t.loc["s4", "right"] == "A"

    x = sst_frame()
    y = sst_frame().assign(pred=[0, 0, 2, 2, 3])                  # fixes b, d still wrong (pred 2, gold 1)
    t = P.disagreements(x, y, "sst").set_index("id")
    assert t.loc["b", "right"] == "B" and t.loc["d", "right"] == "neither"


def test_load_predictions_from_a_checkpoint(tmp_path):
    (tmp_path / "predictions").mkdir()
    sst_frame().to_csv(tmp_path / "predictions" / "sst-dev.csv", index=False)
    df = P.load_predictions(tmp_path, "sentiment")
    assert len(df) == 5 and all(isinstance(i, str) for i in df["id"]) and df["correct"].sum() == 2
    with pytest.raises(MinbertError, match="python -m core.evaluate"):
        P.load_predictions(tmp_path, "qqp")
    sst_frame().drop(columns=["confidence"]).to_csv(tmp_path / "predictions" / "sst-dev.csv", index=False)
    with pytest.raises(DataError, match="confidence"):
        P.load_predictions(tmp_path, "sst")


def test_real_checkpoint_predictions(tiny_checkpoint):
    """The trainer's own prediction files are readable and consistent with the metrics."""
    for task in ("sst", "qqp", "sts"):
        df = P.load_predictions(tiny_checkpoint, task)
        assert len(df) == 16
        assert set(M.slice_metrics(df, task, "length")["n"].tolist()) <= set(range(17))


def test_name_sentiment_maps_class_indices_to_names_and_leaves_the_rest():
    df = pd.DataFrame({"label": [0, 4, 2], "pred": [1, 4, 3], "confidence": [0.5, 0.9, 0.4]})
    named = P.name_sentiment(df, ("label", "pred", "absent"))
    assert named["label"].tolist() == ["very negative", "very positive", "neutral"]
    assert named["pred"].tolist() == ["negative", "very positive", "positive"]
    assert named["confidence"].tolist() == [0.5, 0.9, 0.4] and df["label"].tolist() == [0, 4, 2]


def test_one_disagreement_rule_for_the_errors_and_compare_pages():
    """Both pages count with analysis.predictions: similarity predictions disagree when at
    least 1.0 apart on the 0-5 scale (a fifth of it), classes when they differ."""
    from analysis import compare
    assert not hasattr(compare, "disagreements") and not hasattr(compare, "agreement")
    s1 = sts_frame()
    preds = s1["pred"].to_numpy()
    gaps = [0.5, 0.99, 1.0, 1.5]                                   # hand-picked: 2 of 4 are >= 1.0
    s2 = s1.assign(pred=preds + np.array(gaps))
    table = P.disagreements(s1, s2, "sts")
    assert len(table) == 2 and sorted(table["gap"].round(2)) == [1.0, 1.5]
    assert P.agreement(s1, s2, "sts") == {"shared": 4, "disagree": 2, "agree_rate": 0.5}


def test_label_slices_in_class_order_with_accuracy_only():
    """Gold labels of sst_frame: very negative x2, negative, positive x2. Alphabetically
    "negative" < "positive" < "very negative"; the table must follow the class order, and
    a slice of one gold label has no macro-F1 (Quora: no F1)."""
    table = M.slice_metrics(sst_frame(), "sst", "label")
    assert table["label"].tolist() == ["very negative", "negative", "positive"]
    assert table["n"].tolist() == [2, 1, 2]
    assert "macro_f1" not in table.columns and table["accuracy"].tolist() == [0.5, 0.0, 0.5]
    q = M.slice_metrics(qqp_frame(), "qqp", "label")
    assert q["label"].tolist() == ["not paraphrase", "paraphrase"] and "f1" not in q.columns
    assert "macro_f1" in M.slice_metrics(sst_frame(), "sst", "length").columns   # other slices keep it
    lengths = M.slice_order(["30+", "10-20", "0-10", "20-30"], "sst", "length")
    assert lengths == ["0-10", "10-20", "20-30", "30+"]


def test_name_classes_names_sentiment_and_paraphrase_predictions():
    from analysis.predictions import name_classes
    q = pd.DataFrame({"pred_A": [1, 0], "pred_B": [0, 0], "prob_A": [0.9, 0.2]})
    named = name_classes(q, "qqp", ("pred_A", "pred_B"))
    assert named["pred_A"].tolist() == ["paraphrase", "not paraphrase"] and named["prob_A"].tolist() == [0.9, 0.2]
    assert name_classes(pd.DataFrame({"pred_A": [4]}), "sst", ["pred_A"])["pred_A"].tolist() == ["very positive"]
    s = pd.DataFrame({"pred_A": [2.5]})
    assert name_classes(s, "sts", ["pred_A"]).equals(s)
