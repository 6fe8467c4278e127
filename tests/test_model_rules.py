"""One owner per rule of the model's area (issue #23), each asked by every place that
needs it: "is this text readable" (core.data.inputs.readable_problem: the predict API,
the serving code, the attention maps); the shipped-model alias
(core.model.checkpoint.resolve_checkpoint: loading, serving, the evaluation cache's
fingerprints); the checkpoint key map (core.model.checkpoint.current_key); and a
predict call's answer returned as a typed Reading, never kept on the shared model."""
from __future__ import annotations

import shutil

import pandas as pd
import pytest

from conftest import REPO
from core.errors import MinbertError

# Texts a model cannot read, each for its own reason, and ones it can.
UNREADABLE = ["", "   ", "\u200b\u200b", "\u2060", "\x00\x01", "\ud800", "ok \udfff ok"]
READABLE = ["fine", "  padded  ", "caf\u00e9", "\u4e2d\u6587", "a\u200bb"]


# ------------------------------------------------------------------ readable
def test_the_readable_rule_by_hand():
    from core.data.inputs import readable_problem
    for text in UNREADABLE:
        assert readable_problem(text) is not None, repr(text)
    for text in READABLE:
        assert readable_problem(text) is None, repr(text)
    assert "must be a string" in readable_problem(None)
    assert "surrogate (U+D800)" in readable_problem("\ud800")


def test_attention_maps_refuse_what_the_predict_api_refuses(pretrained):
    """Before: analysis/attention.py only refused empty or whitespace-only texts, so a
    text of zero-width characters or a lone surrogate got attention maps of an empty
    input (or a tokenizer crash) where the predict API refused it."""
    from analysis.attention import attention_maps
    for text in UNREADABLE:
        with pytest.raises(MinbertError):
            attention_maps(pretrained, text)
        with pytest.raises(MinbertError):
            attention_maps(pretrained, "fine", text)
        with pytest.raises(MinbertError):
            pretrained.predict_similarity([text], ["fine"])
    for text in READABLE:
        tokens, maps = attention_maps(pretrained, text)
        assert len(tokens) == maps.shape[-1] >= 3


def test_batch_rows_get_a_note_exactly_when_the_rule_says_so(pretrained):
    from core.data.inputs import readable_problem
    from core.serving.predict import predict_frame
    # blank cells get their own note; surrogates cannot be in a frame (pyarrow strings are
    # UTF-8) nor in a decoded upload
    texts = [t for t in UNREADABLE if t.strip() and not any("\ud800" <= c <= "\udfff" for c in t)] + READABLE
    df = pd.DataFrame({"a": texts, "b": ["fine"] * len(texts)})
    out = predict_frame({"m": pretrained}, "similarity", df, "a", "b")
    noted = (out["note"] != "").tolist()
    assert noted == [readable_problem(t.strip()) is not None for t in texts]


# ------------------------------------------------------------- shipped alias
def _fake_checkpoint(directory, weights: bytes):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.safetensors").write_bytes(weights)
    (directory / "config.json").write_text("{}")
    return directory


def test_evaluation_cache_fingerprint_of_the_shipped_alias_is_its_directorys(tmp_path, monkeypatch):
    """Before: checkpoint_fingerprint("minbert-multitask") hashed ./minbert-multitask, which
    does not exist outside checkpoints/: the evaluation cache of the shipped model was keyed
    on no file at all, so a new shipped model would have hit the old one's cached figures."""
    from core.evaluation.cache import checkpoint_fingerprint
    from core.model import checkpoint
    fake = _fake_checkpoint(tmp_path / "shipped", b"weights one")
    monkeypatch.setattr(checkpoint, "SHIPPED_DIR", fake)
    monkeypatch.chdir(tmp_path)   # no ./minbert-multitask here
    first = checkpoint_fingerprint("minbert-multitask")
    assert first == checkpoint_fingerprint(fake)
    (fake / "model.safetensors").write_bytes(b"other weights, another length")
    assert checkpoint_fingerprint("minbert-multitask") != first
    assert checkpoint_fingerprint("minbert-multitask") == checkpoint_fingerprint(fake)


@pytest.mark.skipif(not (REPO / "checkpoints" / "minbert-multitask" / "model.safetensors").is_file(),
                    reason="checkpoints/minbert-multitask is not in this checkout")
def test_the_real_shipped_alias_fingerprints_the_shipped_files(tmp_path, monkeypatch):
    from core.evaluation.cache import checkpoint_fingerprint
    monkeypatch.chdir(tmp_path)
    assert checkpoint_fingerprint("minbert-multitask") == \
        checkpoint_fingerprint(REPO / "checkpoints" / "minbert-multitask")
    assert checkpoint_fingerprint("minbert-multitask") != checkpoint_fingerprint(tmp_path / "minbert-multitask")


def test_loading_serving_and_tasks_resolve_the_alias_in_one_place(tiny_checkpoint, tmp_path, monkeypatch):
    from core.model import MultitaskBert, checkpoint
    from core.serving.predict import load_for_serving
    copy = tmp_path / "shipped"
    shutil.copytree(tiny_checkpoint, copy)
    monkeypatch.setattr(checkpoint, "SHIPPED_DIR", copy)
    monkeypatch.chdir(tmp_path)
    assert checkpoint.resolve_checkpoint("minbert-multitask") == copy
    assert MultitaskBert.load("minbert-multitask").checkpoint_dir == copy
    assert load_for_serving("minbert-multitask", warm=False).checkpoint_dir == copy
    assert checkpoint.checkpoint_tasks("minbert-multitask") == MultitaskBert.load(copy).served_tasks()
    (tmp_path / "minbert-multitask").mkdir()   # a directory of that name where we are wins, as before
    assert checkpoint.resolve_checkpoint("minbert-multitask").resolve() == tmp_path / "minbert-multitask"


# -------------------------------------------------------------------- key map
def test_checkpoint_key_map_by_hand():
    from core.model.checkpoint import current_key
    assert current_key("heads.sst.mlp.net.1.weight") == "heads.sst.ffn.net.1.weight"
    assert current_key("heads.qqp.mlp.net.4.bias") == "heads.qqp.ffn.net.4.bias"
    assert current_key("heads.sst.ffn.net.1.weight") == "heads.sst.ffn.net.1.weight"
    assert current_key("bert.encoder.layer.0.output.dense.weight") == "bert.encoder.layer.0.output.dense.weight"
    assert current_key("heads.sts.reader.mlp.weight") == "heads.sts.reader.mlp.weight"   # not a head's part


# -------------------------------------------------------------------- results
def test_a_prediction_is_returned_not_kept_on_the_shared_model(tiny_model):
    """Before: predict_task wrote ``last_read_tokens`` / ``last_windows`` onto the model,
    which the app shares between sessions (one session read another's numbers)."""
    before = set(vars(tiny_model))
    first = tiny_model.read("sst", ["one short review"])
    second = tiny_model.read("sst", ["word " * 100])
    assert set(vars(tiny_model)) == before
    assert first.windows == [1] and second.windows[0] > 1
    count = lambda t: len(tiny_model.tokenizer(t, add_special_tokens=False)["input_ids"])   # the tokenizer's
    assert first.read_tokens == [count("one short review")] and second.read_tokens == [count("word " * 100)]
    assert first.max_len == second.max_len == tiny_model.config.model.max_len
