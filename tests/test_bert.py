"""Our from-scratch encoder against transformers.BertModel on the same weights."""
from __future__ import annotations

import json

import pytest
import torch

from core.model.bert import BertModel, load_tokenizer, packaged_model_dir
from core.errors import ModelLoadError

SENTS_A = ["A man is playing a guitar.", "hi", "The gorgeously elaborate continuation of the trilogy "
           "is so huge that a column of words cannot adequately describe it."]
SENTS_B = ["Someone plays an instrument.", "a much longer second segment to force padding on row two", "ok"]


@pytest.fixture(scope="module")
def ours():
    return BertModel.from_pretrained("minilm")


@pytest.fixture(scope="module")
def reference():
    from transformers import BertModel as HFBertModel
    return HFBertModel.from_pretrained(str(packaged_model_dir()), attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def batch():
    tok = load_tokenizer("minilm")
    return tok(SENTS_A, SENTS_B, padding=True, return_tensors="pt")


def test_padding_present(batch):
    assert (batch["attention_mask"] == 0).any(), "the test batch must contain padding"
    assert (batch["token_type_ids"] == 1).any()


@torch.no_grad()
def test_matches_transformers(ours, reference, batch):
    mine = ours(**batch, output_attentions=True, output_hidden_states=True)
    ref = reference(**batch, output_attentions=True, output_hidden_states=True)
    mask = batch["attention_mask"].bool()
    assert (mine.last_hidden_state - ref.last_hidden_state)[mask].abs().max() <= 1e-4
    assert (mine.pooler_output - ref.pooler_output).abs().max() <= 1e-4
    assert len(mine.attentions) == len(ref.attentions) == 6
    for a, r in zip(mine.attentions, ref.attentions):
        assert a.shape == r.shape == (3, 12, batch["input_ids"].shape[1], batch["input_ids"].shape[1])
        assert (a - r).abs().max() <= 1e-4
    assert len(mine.hidden_states) == 7
    for h, r in zip(mine.hidden_states, ref.hidden_states):
        assert (h - r)[mask].abs().max() <= 1e-4


@torch.no_grad()
def test_fused_attention_path_equals_explicit(ours, batch):
    fast = ours(**batch).last_hidden_state
    slow = ours(**batch, output_attentions=True).last_hidden_state
    mask = batch["attention_mask"].bool()
    assert (fast - slow)[mask].abs().max() <= 1e-5


@torch.no_grad()
def test_padding_does_not_change_real_tokens(ours):
    tok = load_tokenizer("minilm")
    alone = tok(["A man is playing a guitar."], return_tensors="pt")
    padded = tok(["A man is playing a guitar.", "x " * 40], padding=True, return_tensors="pt")
    n = alone["input_ids"].shape[1]
    a = ours(**alone).last_hidden_state[0]
    b = ours(**padded).last_hidden_state[0, :n]
    assert (a - b).abs().max() <= 1e-4
    # attention to padding is zero
    att = ours(**padded, output_attentions=True).attentions[0][0]
    assert att[..., n:].abs().max() == 0


def test_attention_rows_sum_to_one(ours, batch):
    with torch.no_grad():
        out = ours(**batch, output_attentions=True)
    for layer in out.attentions:
        assert torch.allclose(layer.sum(-1), torch.ones_like(layer.sum(-1)), atol=1e-5)


def test_loads_hf_directory_with_prefixed_keys_and_bin(tmp_path, ours):
    """An HF BertFor* style directory (``bert.`` prefix, pytorch_model.bin) loads too."""
    d = tmp_path / "hf"
    d.mkdir()
    src = packaged_model_dir()
    (d / "config.json").write_text((src / "config.json").read_text())
    (d / "vocab.txt").write_text((src / "vocab.txt").read_text())
    state = {f"bert.{k}": v.clone() for k, v in ours.state_dict().items()}
    state["cls.predictions.bias"] = torch.zeros(3)
    torch.save(state, d / "pytorch_model.bin")
    loaded = BertModel.from_pretrained(d)
    for k, v in ours.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    tok = load_tokenizer(d)
    assert tok("hello world")["input_ids"] == load_tokenizer("minilm")("hello world")["input_ids"]


@pytest.mark.parametrize("case", ["missing_dir", "no_weights", "corrupt_weights", "bad_config", "hub_offline"])
def test_load_errors_are_clear(tmp_path, case, monkeypatch):
    d = tmp_path / "m"
    if case == "missing_dir":
        target, needle = tmp_path / "nope" / "model", "no such model directory"
    elif case == "hub_offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        target, needle = "someorg/not-a-real-bert-xyz", "could not find"
    else:
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32,
                                                   "num_attention_heads": 4, "num_hidden_layers": 1,
                                                   "intermediate_size": 64}))
        target = d
        if case == "no_weights":
            needle = "neither model.safetensors nor pytorch_model.bin"
        elif case == "corrupt_weights":
            (d / "model.safetensors").write_bytes(b"\x00garbage" * 10)
            needle = "corrupt"
        else:
            (d / "config.json").write_text("{not json")
            needle = "not valid JSON"
    with pytest.raises(ModelLoadError, match=needle):
        BertModel.from_pretrained(target)


class Payload:
    """An arbitrary Python object: unpickling it would run code from the file."""


def test_pickled_objects_are_refused(tmp_path):
    """weights_only=True: a .bin holding arbitrary objects is not unpickled."""
    d = tmp_path / "evil"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "bert"}))
    torch.save({"x": Payload()}, d / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="weights_only"):
        BertModel.from_pretrained(d)


def _tiny_dir(tmp_path):
    from safetensors.torch import save_file

    from core.model.bert import BertConfig
    cfg = {"model_type": "bert", "vocab_size": 50, "hidden_size": 32, "num_attention_heads": 4,
           "num_hidden_layers": 1, "intermediate_size": 64, "max_position_embeddings": 16}
    d = tmp_path / "tiny"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    state = BertModel(BertConfig.from_dict(cfg)).state_dict()
    return d, state, save_file


def test_every_tensor_is_counted(tmp_path):
    """One layer with a pooler has 23 tensors: embeddings 5 (word, position, type, LayerNorm
    weight + bias), the layer 16 (q, k, v, attention output, intermediate and output dense:
    6 x (weight, bias), 2 LayerNorms x 2), the pooler 2. One missing is named, with both counts."""
    d, state, save_file = _tiny_dir(tmp_path)
    assert len(state) == 23
    del state["encoder.layer.0.output.dense.bias"]
    save_file(dict(state), str(d / "model.safetensors"))
    with pytest.raises(ModelLoadError, match=r"the file has 22 tensors, the config describes 23; "
                                             r"1 tensors missing \(\['encoder.layer.0.output.dense.bias'\]\)"):
        BertModel.from_pretrained(d)


def test_tensors_an_encoder_does_not_use_are_counted_and_logged(tmp_path, caplog):
    d, state, save_file = _tiny_dir(tmp_path)
    extra = {"cls.predictions.bias": torch.zeros(50), "embeddings.position_ids": torch.arange(16)[None]}
    save_file({**state, **extra}, str(d / "model.safetensors"))
    with caplog.at_level("INFO", logger="core.model.bert"):
        model = BertModel.from_pretrained(d)
    assert "2 of its 25 tensors are not part of an encoder" in caplog.text
    assert "cls.predictions.bias" in caplog.text and "embeddings.position_ids" in caplog.text
    assert len(model.state_dict()) == 23
