"""app/content.py: what the pages say about a prediction, how runs are grouped and marked,
and how long a recipe takes - plain functions, checked against hand computations, scipy
and the data files' documented sizes."""
from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd
import pytest
from scipy.stats import entropy

from app import content as C


def test_normalized_entropy_is_scipys_entropy_over_log_k():
    for probs in ([0.3, 0.25, 0.2, 0.15, 0.1], [0.9, 0.05, 0.03, 0.01, 0.01], [0.2] * 5, [0.5, 0.5], [0.8, 0.2]):
        assert C.normalized_entropy(probs) == pytest.approx(entropy(probs) / math.log(len(probs)), abs=1e-12)
    assert C.normalized_entropy([1.0, 0, 0, 0, 0]) == 0.0


def test_a_near_uniform_sentiment_says_so():
    # issue 26's case: "positive, 30 % confident" on a near-uniform distribution.
    # By hand: -(.3 ln .3 + .25 ln .25 + .2 ln .2 + .15 ln .15 + .1 ln .1) / ln 5
    #        = (0.3612 + 0.3466 + 0.3219 + 0.2846 + 0.2303) / 1.6094 = 0.960 >= 0.9
    probs = [0.1, 0.15, 0.2, 0.3, 0.25]          # top: index 3, "positive"
    r = C.sentiment_reading(probs)
    assert r["value"] == "uncertain" and r["low"] and r["note"] == "not confident: near-uniform (top positive 30%)"


def test_a_low_confidence_sentiment_names_the_runner_up():
    # entropy of [.45 .40 .1 .03 .02] / ln 5 = 0.70 (< 0.9): not near-uniform, but the
    # top class holds less than half the mass
    probs = [0.45, 0.40, 0.10, 0.03, 0.02]
    assert entropy(probs) / math.log(5) < 0.9
    r = C.sentiment_reading(probs)
    assert r == {"value": "very negative", "low": True, "note": "only 45% confident (negative 40%)"}


def test_a_clear_sentiment_is_a_label_with_its_confidence():
    assert C.sentiment_reading([0.02, 0.03, 0.05, 0.2, 0.7]) == {
        "value": "very positive", "low": False, "note": "70% confident"}


def test_paraphrase_near_fifty_fifty_is_undecided():
    # binary entropy / ln 2 >= 0.9 for p in about [0.32, 0.68]: H(0.6) = 0.971, H(0.75) = 0.811
    assert C.paraphrase_reading(0.6)["low"] and C.paraphrase_reading(0.4)["note"].startswith("undecided")
    assert C.paraphrase_reading(0.75) == {"value": "75%", "low": False, "note": "paraphrase"}
    assert C.paraphrase_reading(0.1)["note"] == "not a paraphrase"


def test_run_groups_follow_the_studys_directory_names():
    # core/experiments/study.py: <out>/<row>-s<seed>
    assert C.run_group("study/000-mt-s2") == ("study/000-mt", 2)
    assert C.run_group("study-best/best-1ep-no-symmetric-s0") == ("study-best/best-1ep-no-symmetric", 0)
    assert C.run_group("reproduce/000-mt+sts-s3") == ("reproduce/000-mt+sts", 3)
    # top-level runs are their own group, even with a seed-like suffix
    assert C.run_group("minbert-multitask") == ("minbert-multitask", None)
    assert C.run_group("quick-s1") == ("quick-s1", None)
    assert [C.run_kind(n) for n in ("minbert-multitask", "pretrained", "quick", "study/000-mt-s0",
                                    "reproduce/004-e6-s3")] == ["shipped", "zero-shot", "your run", "study",
                                                                "reproduce"]


def test_a_dev_subset_is_marked_with_its_n():
    # data/README.md: ids-sst-dev.csv has 1,101 rows; quora-dev.csv 2,000; sts-dev.csv 863
    old = C.dev_subset({"dev_examples": {"sst": 300, "qqp": 2000, "sts": 863}})     # a run before the mark
    assert old == {"sst": {"n": 300, "of": 1101, "sampling": "first rows"}}
    assert C.subset_label(old) == "dev subset: Sentiment 300 of 1,101 (first rows)"
    assert C.subset_short(old) == "dev subset n=300"
    assert C.dev_subset({"dev_examples": {"sst": 1101, "qqp": 2000, "sts": 863}}) == {}
    assert C.subset_label({}) == "" and C.subset_short({}) == ""
    # a run's own mark (core.evaluation.evaluator.with_subset_mark) says how the sample was drawn
    mark = {"qqp": {"n": 500, "of": 2000, "sampling": "stratified", "seed": 0}}
    marked = C.dev_subset({"dev_examples": {"qqp": 500}, "subset": mark})
    assert C.subset_label(marked) == "dev subset: Paraphrase 500 of 2,000 (stratified, seed 0)"


def _table(rows):
    base = {"sst_macro_f1": None, "qqp_f1": None, "sts_spearman": None, "tasks": "sst, qqp, sts", "recipe": "r",
            "path": "/x", "weights": False, "train_time_s": 60.0}
    return pd.DataFrame([{**base, **r} for r in rows])


FULL_N = {"dev_examples": {"sst": 1101, "qqp": 2000, "sts": 863}}   # data/README.md's dev sizes


def test_a_study_row_is_one_line_with_mean_and_sample_sd():
    seeds = [0.40, 0.45, 0.50]
    table = _table([{"name": f"study/row-s{i}", "mean_score": v, "sst_acc": v, "qqp_acc": 0.8, "sts_pearson": 0.7,
                     **FULL_N} for i, v in enumerate(seeds)]
                   + [{"name": "minbert-multitask", "mean_score": 0.735, "sst_acc": 0.48, "qqp_acc": 0.851,
                       "sts_pearson": 0.875, "weights": True, **FULL_N}])
    groups = C.group_table(table).set_index("name")
    assert list(groups.index) == ["minbert-multitask", "study/row"]
    row = groups.loc["study/row"]
    assert row["seeds"] == 3 and row["runs"] == ("study/row-s0", "study/row-s1", "study/row-s2")
    # mean 0.45; sample sd sqrt(((-.05)^2 + 0 + .05^2) / 2) = 0.05
    assert row["sst_acc"] == pytest.approx(0.45) and row["sst_acc_sd"] == pytest.approx(0.05)
    assert row["sst_acc_sd"] == pytest.approx(statistics.stdev(seeds))
    assert math.isnan(groups.loc["minbert-multitask", "sst_acc_sd"]) and groups.loc["minbert-multitask", "weights"]
    assert C.fmt_mean_sd(row["sst_acc"], row["sst_acc_sd"]) == "0.450 ± 0.050"
    assert C.fmt_mean_sd(0.48, np.nan) == "0.480" and C.fmt_mean_sd(None, None) == "–"


def test_dev_subset_figures_rank_after_full_dev_ones_and_say_so():
    # issue 26: the starter's 0.697 on a 300-row subset ranked beside the shipped 0.735
    table = _table([
        {"name": "starter", "mean_score": 0.90, "sst_acc": 0.9, "qqp_acc": 0.9, "sts_pearson": 0.9,
         "dev_examples": {"sst": 300, "qqp": 300, "sts": 300}},
        {"name": "full-low", "mean_score": 0.50, "sst_acc": 0.5, "qqp_acc": 0.5, "sts_pearson": 0.5, **FULL_N},
        {"name": "full-high", "mean_score": 0.60, "sst_acc": 0.6, "qqp_acc": 0.6, "sts_pearson": 0.6, **FULL_N}])
    groups = C.group_table(table)
    assert list(groups["name"]) == ["full-high", "full-low", "starter"]
    assert list(groups["dev set"][:2]) == ["full", "full"]
    assert groups["dev set"].iloc[2] == ("dev subset: Sentiment 300 of 1,101, Paraphrase 300 of 2,000, Similarity "
                                         "300 of 863 (first rows)")


def test_recipe_time_reads_the_headers_phrases(tmp_path):
    cases = {
        "# Size: ... Estimated 11 min;\n# measured 6 min 17 s end to end.\nname: a\n": (6 + 17 / 60, "measured 6 min 17 s"),
        "# Size (2 CPU cores): ... Estimated 4-5 min.\nname: b\n": (5.0, "estimated 4–5 min"),
        "# sized for <= 60 min on 2 CPU cores\nname: c\n": (60.0, "≤ 60 min"),
        "# three tasks in a few minutes on a laptop CPU\nname: d\n": (C.FEW_MINUTES, "a few minutes"),
        "# nothing about time\nname: e\n# measured 1 min after the header: not read\n": (None, ""),
    }
    paths = []
    for i, (text, expected) in enumerate(cases.items()):
        path = tmp_path / f"r{i}.yaml"
        path.write_text(text)
        paths.append(path)
        got = C.recipe_time(path)
        assert (got[0] if got[0] is None else pytest.approx(got[0])) == expected[0] and got[1] == expected[1]
    # quickest first (3 < 5 < 6.28 < 60 minutes), a recipe that states no time last
    assert [p.stem for p in C.recipes_by_time(paths)] == ["r3", "r1", "r0", "r2", "r4"]


def test_batch_predictions_keep_every_input_column():
    df = pd.DataFrame({"id": ["7", "9"], "sentence": ["  A film. ", "Dull."], "note": ["mine", "mine too"]})
    predicted = pd.DataFrame({"sentence": ["A film.", "Dull."], "m: sentiment": ["positive", "negative"],
                              "note": ["", ""]})
    out = C.keep_input_columns(df, predicted, ["sentence"])
    assert list(out.columns) == ["id", "sentence", "note", "m: sentiment", "note (prediction)"]
    assert list(out["sentence"]) == ["  A film. ", "Dull."] and list(out["id"]) == ["7", "9"]


def test_the_overview_chart_has_one_line_per_row_and_a_legend_of_kinds():
    table = _table([{"name": f"study/row-s{i}", "mean_score": v, "sst_acc": v, "qqp_acc": 0.8, "sts_pearson": 0.7,
                     **FULL_N} for i, v in enumerate([0.40, 0.45, 0.50])]
                   + [{"name": "minbert-multitask", "mean_score": 0.735, "sst_acc": 0.48, "qqp_acc": 0.851,
                       "sts_pearson": 0.875, **FULL_N},
                      {"name": "study/single-s0", "mean_score": 0.9, "sst_acc": 0.9, "qqp_acc": None,
                       "sts_pearson": None, **FULL_N},
                      {"name": "starter", "mean_score": 0.95, "sst_acc": 0.9, "qqp_acc": 0.9, "sts_pearson": 0.9,
                       "dev_examples": {"sst": 300, "qqp": 300, "sts": 300}}])
    groups = C.group_table(table)
    lines = C.chart_lines(groups, "mean_score", lambda line, metric: line["name"])
    # top to bottom: three-task full-dev means by value, then the one-task mean, then the subset
    assert list(lines["label"]) == ["minbert-multitask", "study/row", "study/single", "starter"]
    # each seed's mean over its three tasks: (SST + 0.8 + 0.7) / 3 = 0.6333, 0.65, 0.6667
    seeds = [("study/row", (v + 0.8 + 0.7) / 3) for v in (0.40, 0.45, 0.50)]
    spec = C.dot_spec(lines, "mean_score", "mean", seeds)
    rows = spec["data"]["values"]
    assert sum(r["type"] == "line" for r in rows) == 4 and sum(r["type"] == "seed" for r in rows) == 3
    row = next(r for r in rows if r["label"] == "study/row")
    # the bar spans mean ± sample sd: 0.65 ± 0.05 / 3
    assert (row["lo"], row["value"], row["hi"]) == pytest.approx((0.65 - 0.05 / 3, 0.65, 0.65 + 0.05 / 3))
    point = spec["layer"][-1]["encoding"]
    assert point["color"]["scale"]["domain"] == ["shipped", "study", "your run"]   # the legend: kinds only
    assert point["shape"]["scale"]["domain"] == ["full dev set", "dev subset"]      # a subset is shown
    full_only = C.dot_spec(lines[lines["label"] != "starter"], "mean_score", "mean")
    assert "shape" not in full_only["layer"][-1]["encoding"]
    assert spec["encoding"]["y"]["sort"] == list(lines["label"])
