"""Property-based tests (hypothesis) over the predict API, the CSV loader and the config
loader: whatever the input, either a MinbertError (a message for the user) or a result
that is finite and in range; never another exception type.

Generated cases per run (max_examples, derandomized so CI is reproducible): predict API
150 + predict_one 150, CSV loader 300, config loader 300 + overrides 300 = 1,200.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from core.model.bert import BertConfig, BertModel, packaged_model_dir
from core.config.schema import Config
from core.errors import MinbertError
from core.data.inputs import read_csv_upload
from core.serving.predict import predict_one

SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])

_tiny_model = None


def tiny_model():
    global _tiny_model
    if _tiny_model is None:
        import tempfile
        directory = tempfile.mkdtemp(prefix="tiny_bert_")
        config = BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                            max_position_embeddings=64)
        torch.manual_seed(0)
        save_file({k: v.contiguous() for k, v in BertModel(config).state_dict().items()},
                  f"{directory}/model.safetensors")
        with open(f"{directory}/config.json", "w") as f:
            json.dump({**config.to_dict(), "model_type": "bert"}, f)
        for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(packaged_model_dir() / name, f"{directory}/{name}")
        from core.model.multitask import MultitaskBert
        cfg = Config.from_dict({"model": {"encoder": directory, "max_len": 24, "qqp": {"mode": "cross"}}})
        _tiny_model = MultitaskBert.from_config(cfg).eval()
    return _tiny_model


# any text, surrogates and control / zero-width characters included, sometimes long
texts = st.one_of(
    st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=40),
    st.text(alphabet=st.sampled_from(list("ab c.\u200b\x00\ud800\ufffd\U0001F600é\n")), max_size=300),
    st.builds(lambda w, n: (w + " ") * n, st.sampled_from(["good", "bad", "résumé", "\u200b"]),
              st.integers(0, 120)),
)
non_texts = st.one_of(st.none(), st.integers(), st.floats(), st.binary(max_size=8), st.lists(st.integers(), max_size=2))


def _check_output(task: str, out: np.ndarray, n: int) -> None:
    assert np.isfinite(out).all()
    if task == "sst":
        assert out.shape == (n, 5) and (out >= 0).all() and np.allclose(out.sum(1), 1, atol=1e-4)
    elif task == "qqp":
        assert out.shape == (n,) and ((0 <= out) & (out <= 1)).all()
    else:
        assert out.shape == (n,) and ((0 <= out) & (out <= 5)).all()


@settings(max_examples=150, **SETTINGS)
@given(task=st.sampled_from(["sst", "qqp", "sts"]),
       a=st.lists(st.one_of(texts, non_texts), min_size=0, max_size=3),
       b=st.lists(st.one_of(texts, non_texts), min_size=0, max_size=3))
def test_predict_api_never_raises_another_type(task, a, b):
    model = tiny_model()
    try:
        out = model.predict_task(task, a, b if task != "sst" else None)
    except MinbertError:
        return
    _check_output(task, out, len(a))


@settings(max_examples=150, **SETTINGS)
@given(task=st.sampled_from(["sentiment", "paraphrase", "similarity", "sst", "nonsense"]),
       a=st.one_of(texts, non_texts), b=st.one_of(texts, non_texts))
def test_predict_one_never_raises_another_type(task, a, b):
    try:
        r = predict_one(tiny_model(), task, a, b)
    except MinbertError:
        return
    values = r.get("probs") or [r.get("prob", r.get("score"))]
    assert all(np.isfinite(values)) and r["tokens"] >= 1 and r["windows"] >= 1


csv_bytes = st.one_of(
    st.binary(max_size=400),
    st.lists(st.lists(st.one_of(texts, st.sampled_from(['"', ",", ";", "\t", "\r\n", "sentence"])),
                      min_size=1, max_size=4), min_size=0, max_size=8)
    .map(lambda rows: "\n".join(",".join(r) for r in rows).encode("utf-8", errors="surrogatepass")),
)


@settings(max_examples=300, **SETTINGS)
@given(raw=csv_bytes, max_rows=st.integers(1, 5))
def test_csv_loader_never_raises_another_type(raw, max_rows):
    try:
        df = read_csv_upload(raw, max_rows=max_rows)
    except MinbertError:
        return
    assert 1 <= len(df) <= max_rows and df.shape[1] >= 1
    assert isinstance(df.attrs["warnings"], list)
    assert all(isinstance(v, str) for v in df.to_numpy().ravel())


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**12), st.floats(allow_nan=True), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)
config_keys = st.sampled_from(["model", "train", "data", "name", "stages", "model.max_len", "train.lr",
                               "train.resume_every", "train.epochs", "model.sst", "train.smart", "data.limit"])


@settings(max_examples=300, **SETTINGS)
@given(raw=st.dictionaries(st.sampled_from(["model", "train", "data", "name", "stages", "bogus"]),
                           st.one_of(json_values, st.dictionaries(st.sampled_from(
                               ["max_len", "lr", "epochs", "resume_every", "pooling", "batch_size", "sst",
                                "tasks", "limit", "smart"]), json_values, max_size=4)), max_size=4))
def test_config_loader_never_raises_another_type(raw):
    try:
        cfg = Config.from_dict(raw)
    except MinbertError:
        return
    assert cfg.train.resume_every >= 1 and cfg.model.max_len >= 1


@settings(max_examples=300, **SETTINGS)
@given(overrides=st.lists(st.builds(lambda k, v: f"{k}={v}", config_keys,
                                    st.one_of(st.text(max_size=12), st.integers(-5, 10**9).map(str),
                                              st.sampled_from(["null", "[]", "{}", "1e309", "nan", "-0", "[1,"]))),
                          max_size=3))
def test_config_overrides_never_raise_another_type(overrides):
    try:
        Config().with_overrides(overrides)
    except MinbertError:
        pass


@pytest.mark.parametrize("value", ["0", "-3", "1.5", "true", "x"])
def test_resume_every_is_validated(value):
    with pytest.raises(MinbertError, match="resume_every"):
        Config().with_overrides([f"train.resume_every={value}"])
