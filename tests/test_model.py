"""MultitaskBert: pooling, heads, predict API, checkpoint format and its failure modes."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from core.model.bert import BertModel, load_tokenizer
from core.config.schema import Config
from core.errors import CheckpointError, MinbertError
from core.model.heads import PairFeatures, Pooling, scaled_cosine
from core.model.multitask import MultitaskBert


@pytest.mark.parametrize("mode", Pooling.MODES)
def test_pooling_ignores_padding(mode):
    torch.manual_seed(0)
    tokens = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    garbage = tokens.clone()
    garbage[0, 3:] = 1e4  # padded positions hold anything
    pool = Pooling(mode)
    assert torch.allclose(pool(tokens, mask), pool(garbage, mask))
    out = pool(tokens, mask)
    assert out.shape == (2, pool.output_dim(4))
    real = tokens[0, :3]
    expected = {"cls": real[0], "mean": real.mean(0), "max": real.max(0).values,
                "mean_max": torch.cat([real.mean(0), real.max(0).values])}[mode]
    assert torch.allclose(out[0], expected, atol=1e-6)


def test_unknown_pooling_is_a_user_error():
    with pytest.raises(MinbertError, match="unknown pooling"):
        Pooling("avg")


def test_pair_features_and_scaled_cosine():
    u, v = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    feats = PairFeatures(["u", "v", "abs_diff", "prod"], cosine=True)(u, v)
    assert feats.tolist() == [[1.0, 0.0, 0.0, 2.0, 1.0, 2.0, 0.0, 0.0, 0.0]]
    assert PairFeatures(["u"], cosine=True).output_dim(2) == 3
    assert scaled_cosine(u, u).item() == pytest.approx(5.0)
    assert scaled_cosine(u, -u).item() == pytest.approx(0.0)
    assert scaled_cosine(u, v).item() == pytest.approx(2.5)


@pytest.fixture(scope="module")
def untrained():
    """Every head variant over the packaged encoder, random heads (no training needed)."""
    cfg = Config.from_dict({"model": {"max_len": 32, "qqp": {"mode": "cross", "layers": 2},
                                      "sts": {"mode": "bi", "cosine_feature": True}}})
    return MultitaskBert(cfg, BertModel.from_pretrained("minilm"), load_tokenizer("minilm")).eval()


def test_heads_shapes_and_ranges(untrained):
    a = ["good movie", "a terrible, terrible film that never ends", "ok"]
    b = ["great film", "what", "fine I guess"]
    s = untrained.predict_sentiment(a)
    assert s.shape == (3, 5) and np.allclose(s.sum(1), 1, atol=1e-5) and (s >= 0).all()
    p = untrained.predict_paraphrase(a, b)
    assert p.shape == (3,) and ((p >= 0) & (p <= 1)).all()
    r = untrained.predict_similarity(a, b)
    assert r.shape == (3,) and ((r >= 0) & (r <= 5)).all()
    e = untrained.embed(a)
    assert e.shape == (3, 384) and e.dtype == np.float32


def test_predictions_keep_input_order(untrained):
    """Length-sorted batching must give each input its own prediction back."""
    texts = ["short", "a considerably longer sentence with quite a few more words in it", "mid length one"] * 3
    together = untrained.predict_sentiment(texts, batch_size=2)
    alone = np.stack([untrained.predict_sentiment([t])[0] for t in texts])
    assert np.allclose(together, alone, atol=1e-5)


def test_predict_input_errors(untrained):
    with pytest.raises(MinbertError, match="differ in length"):
        untrained.predict_paraphrase(["a", "b"], ["c"])
    with pytest.raises(MinbertError, match="texts item 1 must be a string, got int"):
        untrained.predict_sentiment(["ok", 3])
    assert untrained.predict_sentiment([]).shape == (0, 5)
    assert untrained.predict_similarity("one", "one").shape == (1,)  # a bare string is one input


def test_pretrained_zero_shot(pretrained):
    a = ["A man is playing a guitar.", "A man is playing a guitar."]
    b = ["A man plays the guitar.", "The stock market fell sharply today."]
    sim = pretrained.predict_similarity(a, b)
    assert sim[0] > 3.5 and sim[1] < 1.5
    para = pretrained.predict_paraphrase(a, b)
    assert para[0] > 0.5 > para[1]
    with pytest.raises(MinbertError, match="no sentiment head"):
        pretrained.predict_sentiment(["great"])
    # embed == mean pooling of our encoder (the sentence-transformers recipe)
    e = pretrained.embed(a[:1])
    enc = pretrained.tokenizer(a[:1], return_tensors="pt")
    with torch.no_grad():
        h = pretrained.bert(**enc).last_hidden_state
    assert np.allclose(e[0], h[0].mean(0).numpy(), atol=1e-5)


def test_checkpoint_roundtrip(tmp_path, untrained):
    untrained.save(tmp_path / "c")
    loaded = MultitaskBert.load(tmp_path / "c")
    a, b = ["a quiet film"], ["a silent movie"]
    assert np.allclose(untrained.predict_sentiment(a), loaded.predict_sentiment(a), atol=1e-6)
    assert np.allclose(untrained.predict_paraphrase(a, b), loaded.predict_paraphrase(a, b), atol=1e-6)
    assert loaded.config.to_dict() == untrained.config.to_dict()


@pytest.mark.parametrize("damage,needle", [
    ("no_dir", "checkpoint directory not found"),
    ("no_config", "config.json is missing"),
    ("bad_json", "config.json is corrupt"),
    ("not_ours", "not a minBERT checkpoint"),
    ("no_weights", "model.safetensors is missing"),
    ("truncated_weights", "model.safetensors is corrupt"),
    ("wrong_weights", "does not match its config.json"),
    ("future_version", "format_version"),
])
def test_corrupt_checkpoints_are_named(tmp_path, tiny_checkpoint, damage, needle):
    ckpt = tmp_path / "c"
    shutil.copytree(tiny_checkpoint, ckpt)
    cfg_path, w_path = ckpt / "config.json", ckpt / "model.safetensors"
    if damage == "no_dir":
        ckpt = tmp_path / "missing"
    elif damage == "no_config":
        cfg_path.unlink()
    elif damage == "bad_json":
        cfg_path.write_text(cfg_path.read_text()[:50])
    elif damage == "not_ours":
        cfg_path.write_text(json.dumps({"model_type": "bert"}))
    elif damage == "no_weights":
        w_path.unlink()
    elif damage == "truncated_weights":
        w_path.write_bytes(w_path.read_bytes()[:1000])
    elif damage == "wrong_weights":
        from safetensors.torch import save_file
        save_file({"x": torch.zeros(2)}, str(w_path))
        # the COMPLETE marker lists the new size: the content check is what fails
        marker = json.loads((ckpt / "COMPLETE").read_text())
        marker["files"]["model.safetensors"] = w_path.stat().st_size
        (ckpt / "COMPLETE").write_text(json.dumps(marker))
    elif damage == "future_version":
        meta = json.loads(cfg_path.read_text())
        meta["format_version"] = 99
        cfg_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=needle):
        MultitaskBert.load(ckpt)


def test_to_prediction_by_hand(untrained):
    """softmax / sigmoid / clip, computed by hand: logits [0, ln 3] -> [1/4, 3/4]."""
    logits = torch.tensor([[0.0, float(np.log(3.0))]])
    assert torch.allclose(untrained.to_prediction("sst", logits), torch.tensor([[0.25, 0.75]]))
    assert untrained.to_prediction("qqp", torch.tensor([0.0])).item() == 0.5
    scores = torch.tensor([-1.0, 2.5, 6.0])
    assert untrained.to_prediction("sts", scores).tolist() == [0.0, 2.5, 5.0]
    assert untrained.to_prediction("sts", scores, clip=False).tolist() == [-1.0, 2.5, 6.0]


def test_served_tasks_and_sentence_level(untrained):
    enc, tok = untrained.bert, untrained.tokenizer
    assert untrained.served_tasks() == ["sst", "qqp", "sts"]
    bare = MultitaskBert(untrained.config, enc, tok, tasks=[])
    assert bare.served_tasks() == ["qqp", "sts"]                 # zero-shot only
    assert MultitaskBert(untrained.config, enc, tok, tasks=["sst"]).served_tasks() == ["sst", "qqp", "sts"]
    # untrained: sst single (pooled), qqp cross (reads the joint input), sts bi (pooled)
    assert [untrained.sentence_level(t) for t in ("sst", "qqp", "sts")] == [True, False, True]
    assert [bare.sentence_level(t) for t in ("sst", "qqp", "sts")] == [False, True, True]


def test_predict_from_embeddings_equals_predict_task(untrained):
    """The heads on cached sentence vectors give what the full path gives."""
    a, b = ["good movie", "a dull, plodding film"], ["great film", "what a bore"]
    emb_a, emb_b = untrained.embed(a), untrained.embed(b)
    assert np.allclose(untrained.predict_from_embeddings("sst", emb_a), untrained.predict_sentiment(a), atol=1e-5)
    assert np.allclose(untrained.predict_from_embeddings("sts", emb_a, emb_b),
                       untrained.predict_similarity(a, b), atol=1e-5)


def test_checkpoint_tasks_without_loading(tiny_checkpoint):
    from core.model.checkpoint import checkpoint_tasks
    assert checkpoint_tasks("pretrained") == ["qqp", "sts"]
    assert checkpoint_tasks(tiny_checkpoint) == MultitaskBert.load(tiny_checkpoint).served_tasks()
    with pytest.raises(CheckpointError, match="not found"):
        checkpoint_tasks(tiny_checkpoint.parent / "nope")


def test_heads_saved_before_the_ffn_rename_load(tmp_path, untrained):
    """A checkpoint whose head tensors are named ``heads.<task>.mlp.*`` (written before
    TaskHead.mlp became TaskHead.ffn) loads with the same predictions: the checkpoint key
    map (core/model/checkpoint.py) reads them, no hook on the head."""
    from safetensors.torch import load_file, save_file
    untrained.save(tmp_path / "c")
    path = tmp_path / "c" / "model.safetensors"
    state = load_file(str(path))
    assert any(".ffn." in k for k in state)
    old = {k.replace(".ffn.", ".mlp."): v for k, v in state.items()}
    save_file(old, str(path), metadata={"format": "minbert-checkpoint"})
    marker = json.loads((tmp_path / "c" / "COMPLETE").read_text())
    marker["files"]["model.safetensors"] = path.stat().st_size
    (tmp_path / "c" / "COMPLETE").write_text(json.dumps(marker))
    loaded = MultitaskBert.load(tmp_path / "c")
    a = ["a quiet film"]
    assert np.allclose(untrained.predict_sentiment(a), loaded.predict_sentiment(a), atol=1e-6)
    from core.model.checkpoint import read_checkpoint_weights
    assert not any(".mlp." in k for k in read_checkpoint_weights(tmp_path / "c"))
    from core.model.heads import TaskHead
    assert "_load_from_state_dict" not in vars(TaskHead)
