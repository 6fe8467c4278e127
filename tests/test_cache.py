"""The embedding cache: same model content + inputs -> one computation; anything that
changes the outputs -> a different key."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from core.cache import cache_path, cached_embed, cached_predict, clear_cache, model_fingerprint

TEXTS = ["A man plays the guitar.", "The stock market fell.", "Cats sleep a lot."]


@contextlib.contextmanager
def no_compute(model):
    """Make a model's encoders fail, to prove a result came from the cache."""
    def boom(*a, **k):
        raise AssertionError("recomputed although cached")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model, "embed", boom)
        mp.setattr(model, "predict_task", boom)
        yield


def test_cached_embed_computes_once(pretrained, tmp_path):
    first = cached_embed(pretrained, TEXTS, cache_dir=tmp_path)
    np.testing.assert_array_equal(first, pretrained.embed(TEXTS))
    files = list((tmp_path / "arrays").glob("*.npy"))
    assert len(files) == 1
    with no_compute(pretrained):
        again = cached_embed(pretrained, TEXTS, cache_dir=tmp_path)
    np.testing.assert_array_equal(first, again)
    # other texts are another entry
    cached_embed(pretrained, TEXTS[:2], cache_dir=tmp_path)
    assert len(list((tmp_path / "arrays").glob("*.npy"))) == 2
    assert clear_cache(tmp_path) == 2 and not list((tmp_path / "arrays").glob("*.npy"))


def test_cached_predict_pairs(pretrained, tmp_path):
    a, b = TEXTS, TEXTS[::-1]
    out = cached_predict(pretrained, "sts", a, b, cache_dir=tmp_path)
    np.testing.assert_allclose(out, pretrained.predict_similarity(a, b), atol=1e-6)
    assert cache_path(pretrained, "sts", a, b, tmp_path) != cache_path(pretrained, "sts", b, a, tmp_path)
    assert cache_path(pretrained, "sts", a, b, tmp_path) != cache_path(pretrained, "qqp", a, b, tmp_path)


def test_fingerprint_follows_weight_content(tiny_checkpoint):
    from core.model import MultitaskBert
    m1, m2 = MultitaskBert.load(tiny_checkpoint), MultitaskBert.load(tiny_checkpoint)
    assert model_fingerprint(m1) == model_fingerprint(m2)   # same bytes, other objects
    with torch.no_grad():
        m2.bert.encoder.layer[0].output.dense.bias[0] += 1e-3   # in-place edit: version bump
    assert model_fingerprint(m1) != model_fingerprint(m2)
    q = MultitaskBert.load(tiny_checkpoint, quantize="int8")
    assert model_fingerprint(q) != model_fingerprint(m1)
    m3 = MultitaskBert.load(tiny_checkpoint)
    m3.config.model.pooling = "cls"   # settings that change outputs change the key too
    assert model_fingerprint(m3) != model_fingerprint(m1)


def test_unreadable_entry_is_recomputed(pretrained, tmp_path):
    path = cache_path(pretrained, "embed", TEXTS, None, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a numpy file")
    out = cached_embed(pretrained, TEXTS, cache_dir=tmp_path)
    assert out.shape == (3, 384)
    np.testing.assert_array_equal(np.load(path), out)


# ------------------------------------------------ content keys of dev evaluation
def test_checkpoint_fingerprint_follows_file_content(tiny_checkpoint, tmp_path):
    import hashlib
    import shutil
    from core.cache import checkpoint_fingerprint, file_fingerprint
    weights = tiny_checkpoint / "model.safetensors"
    assert file_fingerprint(weights) == hashlib.sha256(weights.read_bytes()).hexdigest()
    copy = shutil.copytree(tiny_checkpoint, tmp_path / "copy")
    assert checkpoint_fingerprint(copy) == checkpoint_fingerprint(tiny_checkpoint)   # content, not path
    raw = bytearray((copy / "model.safetensors").read_bytes())
    raw[-1] ^= 1                        # one bit of one weight
    (copy / "model.safetensors").write_bytes(bytes(raw))
    assert checkpoint_fingerprint(copy) != checkpoint_fingerprint(tiny_checkpoint)
    other = shutil.copytree(tiny_checkpoint, tmp_path / "other")
    cfg = (other / "config.json").read_text()
    (other / "config.json").write_text(cfg.replace('"max_len": 32', '"max_len": 33'))
    assert '"max_len": 32' in cfg
    assert checkpoint_fingerprint(other) != checkpoint_fingerprint(tiny_checkpoint)
    assert checkpoint_fingerprint("pretrained") != checkpoint_fingerprint(tiny_checkpoint)


def test_precision_is_part_of_the_keys(tiny_checkpoint, tiny_model):
    """bf16 autocast keeps the fp32 state_dict, but not its outputs: another key."""
    from core.cache import encoder_fingerprint
    from core.model import MultitaskBert
    bf16 = MultitaskBert.load(tiny_checkpoint, quantize="bf16")
    assert model_fingerprint(bf16) != model_fingerprint(tiny_model)
    assert encoder_fingerprint(bf16) != encoder_fingerprint(tiny_model)
    fresh = MultitaskBert.load(tiny_checkpoint)
    assert encoder_fingerprint(fresh) == encoder_fingerprint(tiny_model)
    with torch.no_grad():
        fresh.heads["sst"].mlp.net[-1].bias += 1.0       # heads are not the encoder
    assert encoder_fingerprint(fresh) == encoder_fingerprint(tiny_model)
    with torch.no_grad():
        fresh.bert.embeddings.LayerNorm.bias += 1e-3
    assert encoder_fingerprint(fresh) != encoder_fingerprint(tiny_model)
