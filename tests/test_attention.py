"""analysis.attention: maps are softmax rows that match the encoder, rollout math."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from analysis.attention import attention_maps, attention_rollout, segments, sep_positions, tokenize_input
from core.errors import MinbertError


@pytest.fixture(scope="module")
def pair_maps(pretrained):
    return attention_maps(pretrained, "A man plays guitar.", "Someone plays an instrument.")


def test_shapes_tokens_and_rows_sum_to_one(pretrained, pair_maps):
    tokens, maps = pair_maps
    cfg = pretrained.bert.config
    assert maps.shape == (cfg.num_hidden_layers, cfg.num_attention_heads, len(tokens), len(tokens))
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert sep_positions(tokens) == [tokens.index("[SEP]"), len(tokens) - 1]
    assert "someone" in tokens and "guitar" in tokens  # wordpieces, lower-cased
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)
    assert (maps >= 0).all()


def test_maps_match_encoder_and_recomputed_softmax(pretrained, pair_maps):
    tokens, maps = pair_maps
    _, batch = tokenize_input(pretrained, "A man plays guitar.", "Someone plays an instrument.")
    with torch.no_grad():
        out = pretrained.bert(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                              output_attentions=True, output_hidden_states=True)
    for layer, probs in enumerate(out.attentions):
        np.testing.assert_allclose(maps[layer], probs[0].numpy(), atol=1e-6)
    # Independently: softmax(Q K^T / sqrt(d)) from the layer's input hidden states.
    for layer in (0, len(out.attentions) - 1):
        att = pretrained.bert.encoder.layer[layer].attention.self
        h = out.hidden_states[layer][0]
        T, d = h.shape[0], att.head_dim
        q = att.query(h).view(T, att.num_heads, d).transpose(0, 1)
        k = att.key(h).view(T, att.num_heads, d).transpose(0, 1)
        expected = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
        np.testing.assert_allclose(maps[layer], expected.detach().numpy(), atol=1e-5)


def test_single_sentence_and_checkpoint(tiny_model):
    tokens, maps = attention_maps(tiny_model, "unbelievably good")
    assert sep_positions(tokens) == [len(tokens) - 1]
    assert any(t.startswith("##") for t in tokens)  # wordpieces are kept as tokens
    assert maps.shape[-1] == len(tokens)
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)


def test_segments_mark_the_second_sentence():
    tokens = ["[CLS]", "a", "[SEP]", "b", "c", "[SEP]"]
    assert segments(tokens) == [0, 0, 0, 1, 1, 1]
    assert sep_positions(tokens) == [2, 5]


def test_rollout_hand_computed():
    # 2 layers, 1 head, 2 tokens; residual 0.5.
    a0 = np.array([[[0.0, 1.0], [1.0, 0.0]]])
    a1 = np.array([[[1.0, 0.0], [0.5, 0.5]]])
    flow = attention_rollout(np.stack([a0, a1]), residual=0.5)
    l0 = 0.5 * np.eye(2) + 0.5 * a0[0]                  # [[.5, .5], [.5, .5]]
    l1 = 0.5 * np.eye(2) + 0.5 * a1[0]                  # [[1, 0], [.25, .75]]
    np.testing.assert_allclose(flow[0], l0, atol=1e-6)
    np.testing.assert_allclose(flow[1], l1 @ l0, atol=1e-6)
    np.testing.assert_allclose(flow.sum(-1), 1.0, atol=1e-6)


def test_rollout_of_real_maps_is_row_stochastic(pair_maps):
    flow = attention_rollout(pair_maps[1])
    assert flow.shape == (pair_maps[1].shape[0], *pair_maps[1].shape[2:])
    np.testing.assert_allclose(flow.sum(-1), 1.0, atol=1e-5)


def test_bad_inputs(pretrained):
    with pytest.raises(MinbertError, match="empty"):
        attention_maps(pretrained, "   ")
    with pytest.raises(MinbertError, match="empty"):
        attention_maps(pretrained, "fine", "")
    with pytest.raises(MinbertError, match="layers, heads"):
        attention_rollout(np.zeros((2, 3)))
