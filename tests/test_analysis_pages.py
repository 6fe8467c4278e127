"""The analysis pages render without exceptions, and an input produces output
(streamlit.testing.v1.AppTest, against the tiny trained checkpoint)."""
from __future__ import annotations

import shutil

import pandas as pd
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

TIMEOUT = 180


@pytest.fixture(scope="module")
def root(tiny_checkpoint, tmp_path_factory):
    """A checkpoints folder with the tiny checkpoint twice ("tiny", and "other" whose SST
    predictions were flipped on two examples and whose first four STS predictions were
    moved by 0.5, 0.9, 1.25 and 1.5: two of them at least 1.0) so disagreements have
    something to show."""
    root = tmp_path_factory.mktemp("checkpoints")
    (root / "tiny").symlink_to(tiny_checkpoint, target_is_directory=True)
    other = root / "other"
    other.mkdir()
    for f in tiny_checkpoint.iterdir():
        if f.is_file():   # copies: a checkpoint's files may not be links leaving it (core/model/guard.py)
            shutil.copy2(f, other / f.name)
    shutil.copytree(tiny_checkpoint / "predictions", other / "predictions")
    sst = pd.read_csv(other / "predictions" / "sst-dev.csv", dtype={"id": str})
    sst.loc[:1, "pred"] = (sst.loc[:1, "pred"] + 1) % 5
    sst["correct"] = sst["pred"] == sst["label"]
    sst.to_csv(other / "predictions" / "sst-dev.csv", index=False)
    sts = pd.read_csv(other / "predictions" / "sts-dev.csv", dtype={"id": str})
    sts.loc[:3, "pred"] += [0.5, 0.9, 1.25, 1.5]
    sts["residual"] = sts["pred"] - sts["label"]
    sts.to_csv(other / "predictions" / "sts-dev.csv", index=False)
    return root


@pytest.fixture()
def app(root, repo, monkeypatch):
    monkeypatch.setenv("MINBERT_CHECKPOINTS", str(root))
    monkeypatch.chdir(repo)

    def make(page: str) -> AppTest:
        return AppTest.from_file(str(repo / "app" / "views" / page), default_timeout=TIMEOUT)
    return make


def _charts(at) -> int:
    return len(at.get("plotly_chart"))


def test_attention_and_saliency_page(app):
    at = app("4_Attention_and_saliency.py")
    at.run()
    assert not at.exception
    assert at.multiselect(key="as_ckpts").value in (["other"], ["tiny"])  # a trained one by default
    assert _charts(at) == 1 and not at.error                              # the default example renders
    at.multiselect(key="as_ckpts").set_value(["tiny", "pretrained"])
    at.selectbox(key="as_task").set_value("sts").run()
    assert at.text_input(key="as_text_b").value  # the similarity example was filled in
    at.text_input(key="as_text_a").set_value("A man is playing a guitar.")
    at.text_input(key="as_text_b").set_value("A man plays music.")
    at.run()
    assert not at.exception and not at.error
    assert _charts(at) == 1                                   # one figure, both checkpoints on one scale
    table = at.dataframe[0].value
    assert list(table["checkpoint"]) == ["tiny", "pretrained"]
    assert table["IG delta"].abs().max() < 0.05

    at.radio(key="as_view").set_value("Attention").run()
    assert not at.exception and _charts(at) == 2             # side by side
    for mode in ("All heads of a layer", "Rollout"):
        at.radio(key="as_att_mode").set_value(mode).run()
        assert not at.exception and _charts(at) == 2

    # sentiment is not offered while a model without a sentiment head is picked
    assert "Sentiment" not in at.selectbox(key="as_task").options
    at.radio(key="as_view").set_value("Saliency")
    at.multiselect(key="as_ckpts").set_value(["tiny"]).run()
    at.selectbox(key="as_task").set_value("sst")
    at.text_input(key="as_text_a").set_value("a fine film").run()
    assert not at.exception and not at.error and _charts(at) == 1
    # bad input: an error message, never a traceback
    at.text_input(key="as_text_a").set_value("   ").run()
    assert not at.exception and any("empty" in e.value for e in at.error)


def test_saliency_page_is_not_stale_after_a_retrain(tiny_checkpoint, repo, tmp_path, monkeypatch):
    """A checkpoint rewritten under the same name (a retrain) gets new saliency results:
    the page's caches are keyed by checkpoint content, not by name."""
    import torch

    from core.model.multitask import MultitaskBert
    root = tmp_path / "checkpoints"
    shutil.copytree(tiny_checkpoint, root / "run")
    monkeypatch.setenv("MINBERT_CHECKPOINTS", str(root))
    monkeypatch.chdir(repo)
    at = AppTest.from_file(str(repo / "app" / "views" / "4_Attention_and_saliency.py"), default_timeout=TIMEOUT)
    at.session_state["as_ckpts"] = ["run"]
    at.session_state["as_task"] = "sst"
    at.session_state["as_target"] = "very positive"     # one fixed output to explain
    at.run()
    assert not at.exception and not at.error
    before = at.dataframe[0].value["f(input)"].iloc[0]
    model = MultitaskBert.load(root / "run")
    with torch.no_grad():                                 # "retrained": P(very positive) goes up
        model.heads["sst"].ffn.net[-1].bias[4] += 3.0
    model.save(root / "run")
    at.run()
    assert not at.exception and not at.error
    after = at.dataframe[0].value["f(input)"].iloc[0]
    assert after > before + 0.1, (before, after)


def test_saliency_page_takes_an_example_from_errors(app):
    from app.analysis_common import EXAMPLE_KEY
    at = app("4_Attention_and_saliency.py")
    at.session_state[EXAMPLE_KEY] = {"task": "qqp", "text_a": "How do I cook rice?",
                                     "text_b": "What is the best way to cook rice?", "checkpoint": "tiny"}
    at.run()
    assert not at.exception
    assert at.text_input(key="as_text_a").value == "How do I cook rice?"
    assert at.selectbox(key="as_task").value == "qqp"
    assert at.multiselect(key="as_ckpts").value == ["tiny"]
    assert _charts(at) == 1


def test_errors_page(app):
    at = app("5_Errors.py")
    at.run()
    assert not at.exception
    at.multiselect(key="er_ckpts").set_value(["tiny", "other"]).run()
    assert not at.exception and not at.error
    assert _charts(at) >= 2                                   # confusion + slice bars
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["examples"] == "16" and metrics["disagreements"] == "2"
    for task in ("qqp", "sts"):
        at.selectbox(key="er_task").set_value(task).run()
        assert not at.exception and not at.error
        assert len(at.dataframe) >= 2
    at.selectbox(key="er_slice").set_value("overlap").run()
    assert not at.exception


def test_compare_and_errors_pages_agree_on_disagreements(app):
    """The same pair of checkpoints: both pages count the same disagreements (SST: 2
    flipped classes; STS: the 2 of 4 moved predictions that moved by at least 1.0)."""
    compare = app("3_Compare.py")
    compare.session_state["cmp_tab"] = "Where they disagree"    # Compare runs only its open tab
    compare.run()
    errors = app("5_Errors.py")
    errors.run()
    errors.multiselect(key="er_ckpts").set_value(["tiny", "other"]).run()
    assert {compare.selectbox(key="cmp_a").value, compare.selectbox(key="cmp_b").value} == {"tiny", "other"}
    for task in ("sst", "sts"):
        compare.radio(key="diff_task").set_value(task).run()
        errors.selectbox(key="er_task").set_value(task).run()
        assert not compare.exception and not errors.exception
        said = [m.value for m in compare.markdown if "shared dev examples disagree" in m.value]
        assert said and said[0].startswith("**2** of 16 shared"), said
        assert {m.label: m.value for m in errors.metric}["disagreements"] == "2"


def test_errors_page_without_predictions_offers_to_compute(app):
    at = app("5_Errors.py")
    at.run()
    at.multiselect(key="er_ckpts").set_value(["pretrained"]).run()
    assert not at.exception
    assert any("core.evaluate" in e.value for e in at.error)
    assert any("Compute" in b.label for b in at.button)


def test_embeddings_page(app):
    at = app("6_Embeddings.py")
    at.session_state["em_n"] = 20       # small from the first run on (the page's default is 500)
    at.session_state["em_method"] = "pca"
    at.run()
    assert not at.exception and _charts(at) == 1
    at.multiselect(key="em_ckpts").set_value(["tiny", "pretrained"]).run()
    assert not at.exception and not at.error
    assert _charts(at) == 2
    labels = [m.label for m in at.metric]
    assert labels.count("alignment ↓") == 2 and labels.count("STS Spearman ↑") == 2
    at.multiselect(key="em_ckpts").set_value(["pretrained"])
    at.radio(key="em_method").set_value("umap")
    at.radio(key="em_dims").set_value(3)
    at.radio(key="em_color").set_value("error").run()
    assert not at.exception and _charts(at) == 1
    assert any("no sentiment head" in w.value for w in at.warning)  # pretrained: no errors to color


def test_pages_are_in_the_app_navigation(root, repo, monkeypatch):
    monkeypatch.setenv("MINBERT_CHECKPOINTS", str(root))
    monkeypatch.chdir(repo)
    at = AppTest.from_file(str(repo / "app" / "main.py"), default_timeout=TIMEOUT)
    at.session_state["em_n"] = 20
    at.session_state["em_method"] = "pca"
    at.run()
    assert not at.exception
    for page in ("4_Attention_and_saliency.py", "5_Errors.py", "6_Embeddings.py", "7_Calibration.py",
                 "8_Behaviour_tests.py"):
        at.switch_page(f"views/{page}").run()
        assert not at.exception, page
        assert at.title[0].value.split()[-1] in ("saliency", "Errors", "Embeddings", "Calibration", "tests")


def test_saliency_page_opens_a_link_with_both_models(app):
    """?task=&a=&b=&m1=&m2= (app/links.py) fills the inputs and picks both checkpoints; the
    page's own URL follows later edits."""
    at = app("4_Attention_and_saliency.py")
    at.query_params.update({"task": "qqp", "a": "How do I cook rice?", "b": "What is the best way to cook rice?",
                            "m1": "tiny", "m2": "other", "view": "saliency"})
    at.run()
    assert not at.exception and not at.error
    assert at.selectbox(key="as_task").value == "qqp"
    assert (at.text_input(key="as_text_a").value, at.text_input(key="as_text_b").value) == (
        "How do I cook rice?", "What is the best way to cook rice?")
    assert at.multiselect(key="as_ckpts").value == ["tiny", "other"]
    assert list(at.dataframe[0].value["checkpoint"]) == ["tiny", "other"] and _charts(at) == 1
    at.text_input(key="as_text_a").set_value("How do I boil rice?").run()
    assert at.query_params["a"] == "How do I boil rice?" and at.query_params["m2"] == "other"


@pytest.mark.parametrize("query, message", [
    ({"task": "sst", "a": "fine", "m1": "nope"}, "unknown checkpoint 'nope'"),
    ({"task": "qqp", "a": "only one sentence"}, "needs the second sentence"),
    ({"task": "sst", "a": "x" * 100_000}, "characters long"),
])
def test_a_bad_link_is_one_clear_message(app, query, message):
    at = app("4_Attention_and_saliency.py")
    at.query_params.update(query)
    at.run()
    assert not at.exception
    errors = [e.value for e in at.error if "could not be opened" in e.value]
    assert len(errors) == 1 and message in errors[0], [e.value for e in at.error]


def test_errors_page_names_classes_orders_labels_and_compares_slices(app):
    at = app("5_Errors.py")
    at.query_params.update({"m1": "tiny", "m2": "other"})      # a link picks both
    at.run()
    assert not at.exception and not at.error
    assert at.multiselect(key="er_ckpts").value == ["tiny", "other"]
    names = {"very negative", "negative", "neutral", "positive", "very positive"}
    tables = [d.value for d in at.dataframe]
    disagree = next(t for t in tables if "pred_other" in t.columns)
    assert set(disagree["pred_tiny"]) <= names and set(disagree["pred_other"]) <= names and len(disagree) == 2
    at.selectbox(key="er_slice").set_value("label").run()
    assert not at.exception
    slices = next(d.value for d in at.dataframe if "label" in d.value.columns and "accuracy_low" in d.value.columns)
    order = ["very negative", "negative", "neutral", "positive", "very positive"]
    assert list(slices["label"]) == [c for c in order if c in set(slices["label"])]
    assert "macro_f1" not in slices.columns and (slices["accuracy_low"] <= slices["accuracy"]).all()
    paired = next(d.value for d in at.dataframe if "verdict" in d.value.columns)
    assert set(paired["label"]) - {"all"} == set(slices["label"]) and "McNemar p" in paired.columns
    assert any(b.label == "CSV" for b in at.get("download_button"))


def test_calibration_page(app):
    at = app("7_Calibration.py")
    at.query_params.update({"m1": "tiny", "task": "qqp"})     # the Predict page's link
    at.run()
    assert not at.exception and not at.error
    assert at.multiselect(key="ca_ckpts").value == ["tiny"] and at.radio(key="ca_task").value == "qqp"
    at.multiselect(key="ca_ckpts").set_value(["tiny", "other"])
    at.radio(key="ca_task").set_value("sst").run()
    assert not at.exception and not at.error and _charts(at) == 1
    eces = [float(m.value) for m in at.metric if m.label == "ECE ↓"]
    assert len(eces) == 2 and all(0 <= e <= 1 for e in eces)


def test_behaviour_page_runs_the_suite_and_offers_weights_only(tiny_checkpoint, repo, tmp_path, monkeypatch):
    from analysis.behaviour import load_suite
    root = tmp_path / "checkpoints"
    root.mkdir()
    (root / "tiny").symlink_to(tiny_checkpoint, target_is_directory=True)
    kept = root / "kept"
    kept.mkdir()
    shutil.copytree(tiny_checkpoint / "predictions", kept / "predictions")
    monkeypatch.setenv("MINBERT_CHECKPOINTS", str(root))
    monkeypatch.chdir(repo)
    at = AppTest.from_file(str(repo / "app" / "views" / "8_Behaviour_tests.py"), default_timeout=TIMEOUT)
    at.query_params["m1"] = "kept"                             # a results-only run asked for by a link
    at.run()
    assert not at.exception
    assert any("weights not available" in i.value for i in at.info)
    assert "kept" not in at.multiselect(key="bt_ckpts").options and at.multiselect(key="bt_ckpts").value == ["tiny"]
    summary = at.dataframe[0].value
    assert list(summary["id"]) == [t.id for t in load_suite().tests] and summary["tiny"].between(0, 1).all()


def _links(at) -> list[str]:
    """The example links a bare page shows (markdown: no navigation outside the app)."""
    return [m.value for m in at.markdown if m.value.startswith("[Open in ")]


def test_a_selected_disagreement_links_to_both_models(app):
    from urllib.parse import parse_qs, urlsplit
    at = app("5_Errors.py")
    at.session_state["er_ckpts"] = ["tiny", "other"]
    at.run()
    assert not _links(at)                                      # nothing selected yet
    at.session_state["er_disagree"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    assert not at.exception
    links = _links(at)
    assert [link.split("]")[0] for link in links] == ["[Open in Attention & saliency", "[Open in Predict"]
    query = parse_qs(urlsplit(links[0].split("](", 1)[1].rstrip(")")).query)
    disagree = next(d.value for d in at.dataframe if "pred_other" in d.value.columns)
    assert query["m1"] == ["tiny"] and query["m2"] == ["other"] and query["task"] == ["sst"]
    assert query["a"] == [disagree["sentence"].iloc[0]]


def test_a_selected_behaviour_failure_links_to_its_inputs(app):
    at = app("8_Behaviour_tests.py")
    at.session_state["bt_ckpts"] = ["tiny"]
    at.run()
    fails = next((d.value for d in at.dataframe if "why" in d.value.columns), None)
    if fails is None or fails.empty:
        pytest.skip("the tiny checkpoint passed every behaviour case")
    at.session_state["bt_fail_tiny"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    assert not at.exception
    kind = fails["kind"].iloc[0]
    assert len(_links(at)) == (2 if kind == "MFT" else 4)      # original and edited input, each to both pages

