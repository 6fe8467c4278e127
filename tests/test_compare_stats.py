"""app/compare_stats.py: the Compare page's paired comparison renders, filters and sorts."""
from __future__ import annotations

import shutil

import pandas as pd
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from app import compare_stats as CS  # noqa: E402


@pytest.fixture(scope="module")
def root(tiny_checkpoint, tmp_path_factory):
    """``tiny`` and a results-only ``moved`` whose STS predictions are the gold scores."""
    root = tmp_path_factory.mktemp("paired")
    (root / "tiny").symlink_to(tiny_checkpoint, target_is_directory=True)
    moved = root / "moved"
    moved.mkdir()
    shutil.copytree(tiny_checkpoint / "predictions", moved / "predictions")
    sts = pd.read_csv(moved / "predictions" / "sts-dev.csv", dtype={"id": str})
    sts["pred"] = sts["label"]
    sts["residual"] = sts["pred"] - sts["label"]
    sts.to_csv(moved / "predictions" / "sts-dev.csv", index=False)
    return root


def _page(a: str, b: str):
    from app.compare_stats import render_paired_comparison
    render_paired_comparison(a, b, key="pc", n_resamples=200)


def test_paired_comparison_renders_filters_and_sorts(root, repo, monkeypatch):
    monkeypatch.setenv("MINBERT_CHECKPOINTS", str(root))
    monkeypatch.chdir(repo)
    at = AppTest.from_function(_page, args=("tiny", "moved"), default_timeout=180)
    at.run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert set(table["slice"]) == {"all"} and list(table["task"]) == ["Sentiment", "Sentiment", "Paraphrase",
                                                                       "Paraphrase", "Similarity", "Similarity"]
    same = table[table["task"] != "Similarity"]
    assert (same["verdict"] == "no difference").all() and (same["A − B [95 % interval]"] ==
                                                           "+0.000 [+0.000, +0.000]").all()
    assert any("A = **tiny**, B = **moved**" in c.value for c in at.caption)
    at.multiselect(key="pc_slices").set_value(["all", "label"])
    at.selectbox(key="pc_sort").set_value("n").run()
    table = at.dataframe[0].value
    assert list(table["n"]) == sorted(table["n"], reverse=True) and "label" in set(table["slice"])
    at.multiselect(key="pc_slices").set_value(["all"])
    at.selectbox(key="pc_verdict").set_value("differs").run()
    differs = at.dataframe[0].value
    assert set(differs["task"]) == {"Similarity"} and set(differs["verdict"]) == {"moved better"}
    at.selectbox(key="pc_verdict").set_value("same")
    at.multiselect(key="pc_tasks").set_value(["sts"]).run()
    assert any("No row matches" in i.value for i in at.info)


def test_the_same_checkpoint_twice_is_an_error(root, repo, monkeypatch):
    monkeypatch.setenv("MINBERT_CHECKPOINTS", str(root))
    monkeypatch.chdir(repo)
    at = AppTest.from_function(_page, args=("tiny", "tiny"), default_timeout=60)
    at.run()
    assert not at.exception and any("two different checkpoints" in e.value for e in at.error)


def test_filter_table_by_verdict_and_sort():
    table = pd.DataFrame({"task": ["sst", "sst", "qqp"], "slice": ["all", "length", "all"], "value": ["all", "0-10", "all"],
                          "diff": [0.01, -0.2, 0.05], "verdict": ["no difference", "B better", "A better"],
                          "p_value": [0.5, 0.001, 0.02], "n": [10, 3, 20]})
    assert list(CS.filter_table(table, ["sst", "qqp"], ["all"], "all", "natural")["diff"]) == [0.01, 0.05]
    assert list(CS.filter_table(table, ["sst", "qqp"], ["all", "length"], "differs", "diff")["diff"]) == [-0.2, 0.05]
    assert list(CS.filter_table(table, ["sst", "qqp"], ["all", "length"], "all", "p")["p_value"]) == [0.001, 0.02, 0.5]
    assert list(CS.filter_table(table, ["sst"], ["all", "length"], "same", "natural")["verdict"]) == ["no difference"]
