"""core/evaluation/cache.py: content hashes (same content -> one key; anything that changes the
outputs -> another) and the arrays cached under them."""
from __future__ import annotations

import numpy as np
import torch

from core.evaluation.cache import cached_array, keyed_path, model_fingerprint, read_array, texts_fingerprint, write_array

TEXTS = ["A man plays the guitar.", "The stock market fell.", "Cats sleep a lot."]


def test_cached_array_computes_once(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return np.arange(6, dtype=np.float32).reshape(2, 3)
    path = keyed_path("embed", ["model-a", texts_fingerprint(TEXTS)], tmp_path)
    first = cached_array(path, compute)
    again = cached_array(path, compute)
    assert len(calls) == 1 and np.array_equal(first, again) and again.tolist() == [[0, 1, 2], [3, 4, 5]]
    # other texts, another kind or another model: other entries
    assert path != keyed_path("embed", ["model-a", texts_fingerprint(TEXTS[:2])], tmp_path)
    assert path != keyed_path("eval-sts", ["model-a", texts_fingerprint(TEXTS)], tmp_path)
    assert texts_fingerprint(TEXTS, TEXTS[::-1]) != texts_fingerprint(TEXTS[::-1], TEXTS)   # pairs are ordered


def test_unreadable_entry_is_recomputed_and_dicts_are_npz(tmp_path):
    path = tmp_path / "arrays" / "x.npy"
    path.parent.mkdir()
    path.write_bytes(b"not a numpy file")
    assert read_array(path) is None
    out = cached_array(path, lambda: np.ones(3))
    assert np.load(path).tolist() == [1.0, 1.0, 1.0] and out.tolist() == [1.0, 1.0, 1.0]
    write_array(tmp_path / "s.npz", {"a": np.zeros(2), "b": np.arange(3)})
    both = read_array(tmp_path / "s.npz")
    assert sorted(both) == ["a", "b"] and both["b"].tolist() == [0, 1, 2]
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]   # atomic writes leave nothing behind


def test_fingerprint_follows_weight_content(tiny_checkpoint):
    from core.model.multitask import MultitaskBert
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


# ------------------------------------------------ content keys of dev evaluation
def test_checkpoint_fingerprint_follows_file_content(tiny_checkpoint, tmp_path):
    import hashlib
    import shutil
    from core.evaluation.cache import checkpoint_fingerprint, file_fingerprint
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
    from core.evaluation.cache import encoder_fingerprint
    from core.model.multitask import MultitaskBert
    bf16 = MultitaskBert.load(tiny_checkpoint, quantize="bf16")
    assert model_fingerprint(bf16) != model_fingerprint(tiny_model)
    assert encoder_fingerprint(bf16) != encoder_fingerprint(tiny_model)
    fresh = MultitaskBert.load(tiny_checkpoint)
    assert encoder_fingerprint(fresh) == encoder_fingerprint(tiny_model)
    with torch.no_grad():
        fresh.heads["sst"].ffn.net[-1].bias += 1.0       # heads are not the encoder
    assert encoder_fingerprint(fresh) == encoder_fingerprint(tiny_model)
    with torch.no_grad():
        fresh.bert.embeddings.LayerNorm.bias += 1e-3
    assert encoder_fingerprint(fresh) != encoder_fingerprint(tiny_model)
