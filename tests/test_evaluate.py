"""core.evaluation.evaluator: the contract's JSON keys, prediction files, submission format."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from core.data.datasets import load_task
from core.evaluation.evaluator import (evaluate_checkpoint, main, predict_data, predict_datasets, prediction_frame,
                           sentence_level)

CONTRACT_KEYS = {"sst_acc", "sst_macro_f1", "qqp_acc", "qqp_f1", "sts_pearson", "sts_spearman",
                 "sst_n", "qqp_n", "sts_n"}


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    """The evaluation cache of every test here lives in its own temporary directory."""
    monkeypatch.setenv("MINBERT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def own_checkpoint(tiny_checkpoint, tmp_path):
    """A copy of the tiny checkpoint that a test may rewrite."""
    return shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")


def test_cli_json_keys_and_predictions(own_checkpoint, capsys):
    """(On a copy: the CLI rewrites the checkpoint's predictions/, which the other tests
    of the session read as the trainer wrote them.)"""
    rc = main([str(own_checkpoint), "--json", "--limit", "20", "--data-dir", str(REPO / "data")])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert CONTRACT_KEYS <= set(result)
    assert result["sst_n"] == result["qqp_n"] == result["sts_n"] == 20
    # --limit: a stratified sample of each dev file (1,101 / 2,000 / 863 rows), marked
    assert {t: (m["n"], m["of"], m["sampling"]) for t, m in result["subset"].items()} == {
        "sst": (20, 1101, "stratified"), "qqp": (20, 2000, "stratified"), "sts": (20, 863, "stratified")}
    preds = pd.read_csv(own_checkpoint / "predictions" / "sst-dev.csv")
    assert len(preds) == 20 and {"id", "sentence", "label", "pred", "prob_4", "correct"} <= set(preds.columns)
    assert result["sst_acc"] == preds["correct"].mean()


def test_submission_format(tiny_checkpoint, tmp_path, capsys):
    data = tmp_path / "data"  # the real test files, cut to their first 40 rows
    data.mkdir()
    for name in ("ids-sst-test-student.csv", "sts-test-student.csv"):
        lines = (REPO / "data" / name).read_text().splitlines(keepends=True)
        (data / name).write_text("".join(lines[:41]))
    rc = main([str(tiny_checkpoint), "--split", "test", "--json", "--out", str(tmp_path),
               "--data-dir", str(data)])
    assert rc == 0
    lines = (tmp_path / "sst-test-output.csv").read_text().splitlines()
    assert lines[0] == "id \t Predicted_Sentiment "
    assert len(lines) == 1 + 40
    first_id, value = lines[1].split(" , ")
    assert len(first_id) == 25 and int(value) in range(5)
    sts = (tmp_path / "sts-test-output.csv").read_text().splitlines()
    assert sts[0] == "id \t Predicted_Similiarity " and len(sts) == 1 + 40


def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), "--json"]) == 2
    assert "checkpoint directory not found" in capsys.readouterr().err


def test_prediction_frame_columns():
    data = load_task("sts", "dev", REPO / "data", limit=3)
    df = prediction_frame(data, np.array([1.0, 2.0, 3.0]))
    assert list(df["residual"]) == list(np.array([1.0, 2.0, 3.0]) - data.labels)


# ------------------------------------------------------------ fast, cached evaluation
def test_which_tasks_share_sentence_embeddings(tiny_model, pretrained):
    # tiny_checkpoint: SST single-sentence head, bi-encoder Quora head, cross-encoder STS
    assert [sentence_level(tiny_model, t) for t in ("sst", "qqp", "sts")] == [True, True, False]
    # zero-shot pair tasks read the cosine of two pooled vectors
    assert sentence_level(pretrained, "qqp") and sentence_level(pretrained, "sts")


@pytest.mark.parametrize("which", ["tiny_model", "pretrained"])
def test_shared_embedding_path_equals_predict_task(which, request):
    """Unique sentences encoded once, heads on the vectors == predict_task per pair
    (same fp32 arithmetic, other padding: differences at float rounding level)."""
    model = request.getfixturevalue(which)
    tasks = ("sst", "qqp", "sts") if which == "tiny_model" else ("qqp", "sts")
    data = {t: load_task(t, "dev", REPO / "data", limit=12) for t in tasks}
    fast = predict_datasets(model, data, batch_size=4)
    for t in tasks:
        np.testing.assert_allclose(fast[t], predict_data(model, data[t], batch_size=4), atol=1e-5, rtol=0)


def test_duplicate_sentences_are_encoded_once(pretrained):
    """A pair task whose sentences repeat encodes each distinct sentence once."""
    data = load_task("sts", "dev", REPO / "data", limit=5)
    for ex in data.examples:          # every pair: (first sentence, first sentence)
        ex.text_a = ex.text_b = data.examples[0].text_a
    seen = []
    out = predict_datasets(pretrained, {"sts": data},
                           embed=lambda texts: (seen.append(list(texts)), pretrained.embed(texts))[1])
    assert seen == [[data.examples[0].text_a]]
    np.testing.assert_allclose(out["sts"], 5.0, atol=1e-4)   # cos(u, u) = 1 -> 5 * 1


def test_evaluation_cache_identical_metrics_without_loading(own_checkpoint, monkeypatch, tmp_path):
    from core.model.multitask import MultitaskBert
    first, frames1, info1 = evaluate_checkpoint(own_checkpoint, data_dir=REPO / "data", limit=10)
    assert info1["computed_tasks"] == ["sst", "qqp", "sts"] and info1["cached_tasks"] == []

    def boom(*a, **k):
        raise AssertionError("the model was loaded although every task is cached")
    monkeypatch.setattr(MultitaskBert, "load", boom)
    again, frames2, info2 = evaluate_checkpoint(own_checkpoint, data_dir=REPO / "data", limit=10)
    assert info2["cached_tasks"] == ["sst", "qqp", "sts"] and info2["computed_tasks"] == []
    assert again == first                                   # bit-identical metrics
    for t in frames1:
        pd.testing.assert_frame_equal(frames1[t], frames2[t])
    # the same content under another path is the same entry
    moved = shutil.copytree(own_checkpoint, tmp_path / "moved")
    assert evaluate_checkpoint(moved, data_dir=REPO / "data", limit=10)[0] == first
    # another precision or other dev rows are other entries
    with pytest.raises(AssertionError, match="was loaded"):
        evaluate_checkpoint(own_checkpoint, data_dir=REPO / "data", limit=10, precision="int8")
    with pytest.raises(AssertionError, match="was loaded"):
        evaluate_checkpoint(own_checkpoint, data_dir=REPO / "data", limit=9)


def test_evaluation_cache_invalidated_when_weights_change(own_checkpoint):
    from safetensors.torch import load_file, save_file
    first, frames1, _ = evaluate_checkpoint(own_checkpoint, data_dir=REPO / "data", limit=10)
    weights = own_checkpoint / "model.safetensors"
    state = load_file(str(weights))
    biases = [k for k in state if k.startswith("heads.sst.") and k.endswith("bias") and state[k].shape == (5,)]
    assert len(biases) == 1, biases                               # the SST output layer
    state[biases[0]] = state[biases[0]] + torch_arange(state[biases[0]])   # shift the class logits apart
    save_file(state, str(weights), metadata={"format": "minbert-checkpoint"})
    second, frames2, info = evaluate_checkpoint(own_checkpoint, data_dir=REPO / "data", limit=10)
    assert info["computed_tasks"] == ["sst", "qqp", "sts"]      # new content: nothing reused
    # logits + [0, 1, 2, 3, 4] favour class 4: its probability rises on every example
    assert (frames2["sst"]["prob_4"] > frames1["sst"]["prob_4"]).all()
    assert second["qqp_acc"] == first["qqp_acc"]                # other heads: same predictions


def torch_arange(t):
    import torch
    return torch.arange(t.shape[0], dtype=t.dtype)


def test_frozen_encoder_reuses_zero_shot_embeddings(tmp_path, monkeypatch):
    """A checkpoint that kept the packaged encoder (heads on a frozen encoder) shares the
    zero-shot model's sentence embeddings: its pair tasks encode nothing again."""
    from core.model.bert import BertModel, load_tokenizer
    from core.config.schema import Config
    from core.model.multitask import MultitaskBert
    evaluate_checkpoint("pretrained", data_dir=REPO / "data", limit=6)
    cfg = Config(name="frozen")
    model = MultitaskBert(cfg, BertModel.from_pretrained("minilm"), load_tokenizer("minilm"))
    assert [sentence_level(model, t) for t in ("sst", "qqp", "sts")] == [True, True, True]
    path = model.save(tmp_path / "frozen")
    calls = []
    real = MultitaskBert.embed
    monkeypatch.setattr(MultitaskBert, "embed", lambda self, texts, **k: (calls.append(len(texts)),
                                                                         real(self, texts, **k))[1])
    metrics, _, info = evaluate_checkpoint(path, data_dir=REPO / "data", limit=6)
    sst_sentences = len(set(load_task("sst", "dev", REPO / "data", limit=6).texts_a))
    assert calls == [sst_sentences]          # only SST was encoded
    assert metrics["qqp_n"] == metrics["sts_n"] == metrics["sst_n"] == 6


def test_cli_reports_cache_hits_and_precision(tiny_checkpoint, capsys, tmp_path):
    args = [str(tiny_checkpoint), "--json", "--limit", "8", "--data-dir", str(REPO / "data"),
            "--out", str(tmp_path / "preds")]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert (first["cached"], second["cached"]) == (False, True)
    assert first["precision"] == second["precision"] == "fp32"
    assert {k: first[k] for k in CONTRACT_KEYS} == {k: second[k] for k in CONTRACT_KEYS}
    assert main(args + ["--no-cache"]) == 0
    assert json.loads(capsys.readouterr().out)["cached"] is False
    assert main(args + ["--precision", "fp32", "--quantize", "int8"]) == 2
