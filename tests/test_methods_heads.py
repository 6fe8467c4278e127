"""Heads (deep FFN, CNN and BiLSTM over token states) and Q&ABERT prompts."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from core.model.bert import BertConfig, BertModel, load_tokenizer
from core.config.schema import Config, HeadConfig, PromptConfig
from core.errors import ConfigError
from core.model.heads import DeepFFN, TokenBiLSTM, TokenCNN
from core.model.heads import Encoding, TaskHead
from core.model.multitask import MultitaskBert
from core.model.prompts import encode_prompted, prompt_texts


# one intra-op thread: small ops are faster without thread hand-offs on 2 cores
pytestmark = pytest.mark.usefixtures("one_thread")


def _tokens(seed=0, B=3, T=6, H=8):
    torch.manual_seed(seed)
    tokens = torch.randn(B, T, H)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
    return tokens, mask


def _with_garbage_padding(tokens, mask, extra=3):
    """The same batch with more (and non-zero) padding appended."""
    B, T, H = tokens.shape
    padded = torch.cat([tokens, torch.randn(B, extra, H) * 100], dim=1)
    new_mask = torch.cat([mask, torch.zeros(B, extra, dtype=mask.dtype)], dim=1)
    padded[new_mask == 0] = 55.0                     # existing pads hold anything too
    return padded, new_mask


def test_deep_ffn_is_blocks_of_linear_layernorm_dropout_relu():
    ffn = DeepFFN(10, 5, blocks=4, hidden=16, dropout=0.1)
    kinds = [type(m) for m in ffn.net]
    assert kinds == [nn.Linear, nn.LayerNorm, nn.Dropout, nn.ReLU] * 4 + [nn.Linear]
    assert ffn(torch.randn(2, 10)).shape == (2, 5)


@pytest.mark.parametrize("reducer", [TokenCNN(8, channels=4, kernel_sizes=(1, 2, 3)), TokenBiLSTM(8, hidden=5)])
def test_token_reducers_ignore_padding(reducer):
    reducer.eval()
    tokens, mask = _tokens()
    out = reducer(tokens, mask)
    assert out.shape == (3, reducer.output_dim)
    again = reducer(*_with_garbage_padding(tokens, mask))
    assert torch.allclose(out, again, atol=1e-5)
    # and each row only depends on its own tokens
    alone = reducer(tokens[1:2, :3], mask[1:2, :3])
    assert torch.allclose(out[1:2], alone, atol=1e-5)


def test_cnn_by_hand():
    """Kernel width 2, one channel summing both positions' first feature: max over valid windows."""
    cnn = TokenCNN(2, channels=1, kernel_sizes=(2,))
    with torch.no_grad():
        cnn.convs[0].weight.copy_(torch.tensor([[[1.0, 1.0], [0.0, 0.0]]]))
        cnn.convs[0].bias.zero_()
    tokens = torch.tensor([[[1.0, 9.0], [2.0, 9.0], [4.0, 9.0], [100.0, 9.0]]])
    mask = torch.tensor([[1, 1, 1, 0]])
    # windows (zero-padded on the left): [0+1, 1+2, 2+4]; the window reaching the pad is excluded
    assert cnn(tokens, mask).item() == pytest.approx(6.0)


def test_bilstm_uses_last_states_of_both_directions():
    lstm = TokenBiLSTM(3, hidden=2)
    tokens, mask = torch.randn(1, 4, 3), torch.ones(1, 4, dtype=torch.long)
    out, (h, _) = lstm.lstm(tokens)
    expected = torch.cat([out[0, -1, :2], out[0, 0, 2:]])   # forward at the end, backward at the start
    assert torch.allclose(lstm(tokens, mask)[0], expected, atol=1e-6)


@pytest.mark.parametrize("arch,uses_tokens", [("mlp", False), ("deep_ffn", False), ("cnn", True), ("bilstm", True)])
@pytest.mark.parametrize("mode", ["single", "bi", "cross", "cosine"])
def test_task_head_architectures(arch, uses_tokens, mode):
    if arch == "deep_ffn" and mode == "cosine":
        with pytest.raises(ConfigError, match="deep_ffn"):
            HeadConfig(mode=mode, arch=arch).validate("model.sts")
        return
    cfg = HeadConfig(mode=mode, arch=arch, layers=2, hidden=6, kernel_sizes=[2, 3])
    head = TaskHead(cfg, in_dim=16, out_dim=3, token_dim=8).eval()
    assert head.uses_tokens is uses_tokens
    tokens, mask = _tokens()
    enc = Encoding(tokens, mask, torch.randn(3, 16))
    out = head(enc, enc if mode in ("bi", "cosine") else None)
    assert out.shape == ((3,) if mode == "cosine" else (3, 3))
    if arch == "deep_ffn":
        assert isinstance(head.ffn, DeepFFN) and len(head.ffn.net) == 2 * 4 + 1


_TOKENIZER = []


def _tiny_model(cfg: Config) -> MultitaskBert:
    if not _TOKENIZER:
        _TOKENIZER.append(load_tokenizer("minilm"))
    enc = BertModel(BertConfig(vocab_size=_TOKENIZER[0].vocab_size, hidden_size=16, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=32))
    return MultitaskBert(cfg, enc, _TOKENIZER[0]).eval()


def test_token_heads_disable_the_frozen_cache():
    pooled = _tiny_model(Config.from_dict({"model": {"max_len": 16}}))
    tokens = _tiny_model(Config.from_dict({"model": {"max_len": 16, "sst": {"mode": "single", "arch": "cnn"}}}))
    assert pooled.heads_use_pooled_only() and not tokens.heads_use_pooled_only()
    probs = tokens.predict_sentiment(["good", "a much longer and rather bad film"])
    assert probs.shape == (2, 5)


def test_prompt_texts_and_segments():
    prompts = PromptConfig(enabled=True)
    q, c = prompt_texts(prompts, "sst", ["a fine film"])
    assert q == ["Is this review positive or negative?"] and c == ["a fine film"]
    q, c = prompt_texts(prompts, "qqp", ["How old {b} are you?"], ["What is your age?"])
    assert q == ["Does the first question paraphrase the second question?"]
    assert c == ["First sentence: How old {b} are you? Second sentence: What is your age?"]
    tok = load_tokenizer("minilm")
    enc = encode_prompted(tok, prompts, "sts", ["a man sings"], ["a man is singing"], max_len=64)
    ids, types = enc.input_ids[0], enc.token_type_ids[0]
    question = tok(prompts.sts, add_special_tokens=False)["input_ids"]
    assert ids[1:1 + len(question)] == question                    # the question is segment A
    assert types[:len(question) + 2] == [0] * (len(question) + 2)  # [CLS] question [SEP]
    assert set(types[len(question) + 2:]) == {1}                   # the context is segment B
    # a short max_len cuts the context, not the question
    short = encode_prompted(tok, prompts, "sts", ["a man sings " * 20], ["x"], max_len=24)
    assert short.input_ids[0][1:1 + len(question)] == question and len(short.input_ids[0]) == 24
    with pytest.raises(ConfigError, match="no room"):
        encode_prompted(tok, prompts, "sts", ["a"], ["b"], max_len=12)


def test_prompted_model_feeds_every_task_jointly():
    cfg = Config.from_dict({"model": {"max_len": 48, "prompts": {"enabled": True},
                                      "qqp": {"mode": "cross"}, "sts": {"mode": "cross"}}})
    model = _tiny_model(cfg)
    sst = model.featurize("sst", ["nice"])
    assert list(sst.parts) == ["a"] and 1 in sst.parts["a"].token_type_ids[0]
    pair = model.featurize("qqp", ["q one"], ["q two"])
    assert list(pair.parts) == ["ab"]
    assert model.predict_paraphrase(["q one"], ["q two"]).shape == (1,)
    with pytest.raises(ConfigError, match="mode to 'cross'"):
        Config.from_dict({"model": {"prompts": {"enabled": True}}})
    with pytest.raises(ConfigError, match="pair_context"):
        Config.from_dict({"model": {"prompts": {"pair_context": "no slots"}}})


# ------------------------------------------------ report 002's pooled-vector heads
def test_conv_upscale_turns_one_vector_into_n_by_hand():
    from core.model.heads import ConvUpscale
    up = ConvUpscale(n_vectors=2, kernel=3)
    with torch.no_grad():
        up.conv.weight.zero_()
        up.conv.bias.zero_()
        up.conv.weight[0, 0] = torch.tensor([0.0, 1.0, 0.0])    # vector 0: the input itself
        up.conv.weight[1, 0] = torch.tensor([1.0, 0.0, 0.0])    # vector 1: shifted right by one
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    out = up(x)
    assert out.shape == (1, 2, 4)
    assert out[0, 0].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert out[0, 1].tolist() == [0.0, 1.0, 2.0, 3.0]               # zero padding at the start


def test_pooled_readers_shapes_and_parts():
    from core.model.heads import PooledReader, VectorBiLSTM, VectorCNN
    x = torch.randn(4, 400)
    # report 002's STS head: upscaling to 8 vectors, BiLSTM of 32 features, linear to 13
    sts = PooledReader("pooled_bilstm", 400, hidden=32, n_vectors=8, upscale_kernel=3, out_features=13)
    assert isinstance(sts.reader, VectorBiLSTM) and sts.reader.lstm.hidden_size == 32
    assert sts.upscale.conv.out_channels == 8 and sts.upscale.conv.kernel_size == (3,)
    assert sts(x).shape == (4, 13)
    # CNN head: convolution over the 8 vectors, batch norm, (ReLU, max pooling), dropout
    sst = PooledReader("pooled_cnn", 400, hidden=64, dropout=0.2)
    assert isinstance(sst.reader, VectorCNN) and isinstance(sst.reader.norm, nn.BatchNorm1d)
    assert sst.reader.dropout.p == 0.2 and sst(x).shape == (4, 64)
    # linear: the vector as it is (the task's linear layer follows in the head)
    assert torch.equal(PooledReader("pooled_linear", 400)(x), x)


def test_report_002_model_shares_one_projection_and_saves(tmp_path):
    cfg = Config.from_dict({"model": {
        "max_len": 16, "shared_projection": 20,
        "sst": {"mode": "single", "arch": "pooled_cnn", "hidden": 6},
        "qqp": {"mode": "cross", "arch": "pooled_linear"},
        "sts": {"mode": "cosine", "arch": "pooled_bilstm", "hidden": 4, "out_features": 13, "cosine_map": "affine"}}})
    model = _tiny_model(cfg)
    assert model.shared_projection.in_features == 16 and model.shared_projection.out_features == 20
    assert sum(k.startswith("shared_projection.") for k in model.state_dict()) == 2     # one layer, not per head
    assert model.heads_use_pooled_only()                 # the frozen-encoder cache applies
    scores = model.predict_similarity(["a dog runs", "hi"], ["a cat runs", "bye"])
    assert scores.shape == (2,) and ((0 <= scores) & (scores <= 5)).all()
    assert model.predict_sentiment(["fine"]).shape == (1, 5)
    model.save(tmp_path / "ck")
    again = MultitaskBert.load(tmp_path / "ck")
    assert torch.allclose(torch.as_tensor(again.predict_similarity(["a dog runs"], ["a cat runs"])),
                          torch.as_tensor(model.predict_similarity(["a dog runs"], ["a cat runs"])))


def test_report_002_shared_upscaling_by_hand():
    """§3.2.1-3.2.2: one convolutional upscaling (filter 3, one vector -> 8) + ReLU after the
    shared projection (no bias: 768 x 400 = 307,200 parameters, §3.1), read by every head
    that reads vectors; a linear head reads the projected vector itself."""
    cfg = Config.from_dict({"model": {
        "max_len": 16, "shared_projection": 20, "shared_projection_bias": False, "shared_upscale": True,
        "sst": {"mode": "single", "arch": "pooled_cnn", "hidden": 6, "dropout": 0.0},
        "qqp": {"mode": "cross", "arch": "pooled_linear"},
        "sts": {"mode": "cross", "arch": "pooled_bilstm", "hidden": 4}}})
    model = _tiny_model(cfg)
    assert model.shared_projection.bias is None and model.shared_projection.weight.numel() == 16 * 20
    keys = [k for k in model.state_dict() if "upscale" in k]
    assert keys == ["shared_upscale.conv.weight", "shared_upscale.conv.bias"]       # one, not per head
    pooled = torch.randn(3, 16)
    projected = pooled @ model.shared_projection.weight.T
    conv = model.shared_upscale.conv
    by_hand = torch.stack([torch.relu(torch.nn.functional.conv1d(projected.unsqueeze(1), conv.weight[i:i + 1],
                                                                  conv.bias[i:i + 1], padding=1)).squeeze(1)
                           for i in range(8)], dim=1)                            # [3, 8, 20]
    head = model.heads["sst"]
    expected = head.ffn(head.reader.reader(by_hand))
    assert torch.allclose(model.head_forward("sst", Encoding(None, None, pooled)), expected, atol=1e-6)
    qqp = model.heads["qqp"]
    assert torch.allclose(model.head_forward("qqp", Encoding(None, None, pooled)), qqp.ffn(projected).reshape(-1),
                          atol=1e-6)
    with pytest.raises(ConfigError, match="must agree"):
        Config.from_dict({"model": {"shared_upscale": True, "sst": {"mode": "single", "arch": "pooled_cnn"},
                                    "sts": {"mode": "cosine", "arch": "pooled_bilstm", "vectors": 4}}})
    with pytest.raises(ConfigError, match="needs a pooled_cnn or pooled_bilstm head"):
        Config.from_dict({"model": {"shared_upscale": True}})


def test_per_task_pooling_changes_only_that_task():
    base = {"max_len": 16, "pooling": "mean", "sts": {"mode": "cosine"}, "qqp": {"mode": "bi"}}
    torch.manual_seed(0)
    mean = _tiny_model(Config.from_dict({"model": base}))
    cls_sts = Config.from_dict({"model": {**base, "sts": {"mode": "cosine", "pooling": "cls"}}})
    other = MultitaskBert(cls_sts, mean.bert, mean.tokenizer, tasks=["sst", "qqp", "sts"])
    other.heads.load_state_dict(mean.heads.state_dict())
    other.eval(), mean.eval()
    a, b = ["a dog runs in the park"], ["a cat sleeps on the mat"]
    assert torch.allclose(torch.as_tensor(other.predict_paraphrase(a, b)), torch.as_tensor(mean.predict_paraphrase(a, b)))
    assert not torch.allclose(torch.as_tensor(other.predict_similarity(a, b)),
                              torch.as_tensor(mean.predict_similarity(a, b)))
    # the CLS-pooled STS equals 5 * cos of the [CLS] states
    feats = other.featurize("sts", a, b)
    batch = feats.batch([0])
    with torch.no_grad():
        u = other.bert(**{k: batch["a"][k] for k in ("input_ids", "attention_mask", "token_type_ids")}).last_hidden_state[:, 0]
        v = other.bert(**{k: batch["b"][k] for k in ("input_ids", "attention_mask", "token_type_ids")}).last_hidden_state[:, 0]
    expected = (torch.nn.functional.cosine_similarity(u, v) * 5).clamp(0, 5)
    assert other.predict_similarity(a, b)[0] == pytest.approx(expected.item(), abs=1e-5)
    assert not other.sentence_level("sts") and other.sentence_level("qqp")
