"""The bf16 inference path and the rule that picks it (core/model/precision.py, core/tools/quantize.py).

Tolerances: bf16 keeps 8 significant bits (relative rounding 2**-9 = 0.2 % per matmul
input) and autocast accumulates in fp32 and keeps the residual stream, LayerNorm and
pooling in fp32, so sentence embeddings stay within a cosine of 1 - 1e-4 of fp32
(measured min 0.99996 on 600 STS dev sentences). The tests ask for 0.999: ten times the
measured error; a path that mixed up rows or ran bf16 without fp32 accumulation would fall
far below it, and one that silently skipped bf16 (cosine 1.0) is caught separately.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.model import precision
from core.errors import MinbertError
from core.evaluation.metrics import pearson

TEXTS = ["A man is playing a guitar on the street corner while people walk by.", "Hi.",
         "The cat sleeps.", "Stocks fell sharply on Monday after the central bank raised rates again.",
         "What is the best way to learn a new language quickly and well?", "Rain."]


@pytest.fixture
def flags(monkeypatch):
    """Pretend the CPU advertises exactly the given flags."""
    def set_flags(*names):
        monkeypatch.setattr(precision, "_all_cpu_flags", lambda: frozenset(names))
    return set_flags


@pytest.fixture(scope="module")
def bf16_pretrained():
    from core.model.multitask import MultitaskBert
    return MultitaskBert.load("pretrained", quantize="bf16")


def test_bf16_rule_reads_the_cpu_flags(flags):
    flags("avx2", "avx512f", "avx512_bf16")
    assert precision.bf16_is_fast("cpu") and precision.serving_mode("cpu") == "bf16"
    flags("avx2", "amx_tile", "amx_bf16")
    assert precision.bf16_is_fast(torch.device("cpu"))
    flags("avx2", "avx512f", "avx512_vnni")          # Cascade Lake: VNNI but no bf16
    assert not precision.bf16_is_fast("cpu") and precision.serving_mode("cpu") == "int8"
    assert precision.cpu_has_vnni()
    flags()
    assert precision.serving_mode("cpu") == "int8" and not precision.cpu_has_vnni()


def test_bench_uses_the_one_rule():
    """core.model.precision owns "is bf16 fast here": no other module of core/ decides it
    (defines the function, or reads the CPU flags bf16 needs) on its own."""
    import re

    from conftest import REPO
    own = REPO / "core" / "model" / "precision.py"
    others = [p for p in sorted((REPO / "core").rglob("*.py")) if p != own
              and re.search(r"def bf16_is_fast|def cpu_has_vnni|['\"]avx512_bf16['\"]|['\"]amx_bf16['\"]", p.read_text())]
    assert others == []
    for module in ("core/tools/bench.py", "core/tools/quantize.py"):
        assert "from core.model.precision import" in (REPO / module).read_text() and \
            "bf16_is_fast" in (REPO / module).read_text(), module


def test_cpu_flags_lists_only_relevant_ones():
    flags = precision.cpu_flags()
    assert set(flags) <= set(precision.RELEVANT_CPU_FLAGS) and flags == sorted(flags)
    everything = precision.cpu_flags(relevant_only=False)
    assert set(flags) <= set(everything)
    assert ("avx512_bf16" in everything or "amx_bf16" in everything) == precision.cpu_has_bf16()


def test_auto_picks_bf16_or_int8_by_the_rule(flags):
    from core.model.multitask import MultitaskBert
    flags("avx512_bf16", "avx512_vnni")
    m = MultitaskBert.load("pretrained", quantize="auto")
    assert m.quantization == "bf16" and precision.is_bf16(m.bert)
    flags("avx2")
    m = MultitaskBert.load("pretrained", quantize="auto")
    assert m.quantization == "int8" and not precision.is_bf16(m.bert)


def test_bf16_runs_matmuls_in_bf16_and_returns_fp32(bf16_pretrained, pretrained):
    seen = []
    layer = bf16_pretrained.bert.encoder.layer[0].intermediate.dense
    handle = layer.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    try:
        enc = bf16_pretrained.featurize("sst", TEXTS[:2]).batch([0, 1])["a"]
        with torch.inference_mode():
            out = bf16_pretrained.bert(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    finally:
        handle.remove()
    assert seen == [torch.bfloat16]                      # the matmul ran in bf16
    assert out.last_hidden_state.dtype == torch.float32  # pooling and heads get fp32
    # same weights, same parameter names: nothing was converted
    ref = pretrained.state_dict()
    for name, value in bf16_pretrained.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, ref[name]), name


def test_bf16_embeddings_close_to_fp32(bf16_pretrained, pretrained):
    a, b = bf16_pretrained.embed(TEXTS), pretrained.embed(TEXTS)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.999, cos
    assert np.abs(a - b).max() > 0      # really another computation than fp32


@pytest.mark.parametrize("mode,max_gap", [("bf16", 0.005), ("int8", 0.01)])
def test_fast_path_metric_gap_on_sts_dev(mode, max_gap, pretrained, repo):
    """Zero-shot STS dev Pearson (first 150 pairs): bf16 within 0.5 points of fp32 (the
    issue's bar for a serving path), int8 within 1 point."""
    from core.data.datasets import load_task
    from core.model.multitask import MultitaskBert
    fast = MultitaskBert.load("pretrained", quantize=mode)
    data = load_task("sts", "dev", repo / "data", limit=150)
    fp32, ours = (pearson(data.labels, m.predict_similarity(data.texts_a, data.texts_b)) for m in (pretrained, fast))
    assert abs(fp32 - ours) < max_gap, (mode, fp32, ours)


def test_bf16_checkpoint_heads_agree(tiny_checkpoint, tiny_model):
    """Trained heads (SST probabilities, cross-encoder STS) on the bf16 encoder."""
    from core.model.multitask import MultitaskBert
    m = MultitaskBert.load(tiny_checkpoint, quantize="bf16")
    np.testing.assert_allclose(m.predict_sentiment(TEXTS), tiny_model.predict_sentiment(TEXTS), atol=0.01)
    np.testing.assert_allclose(m.predict_similarity(TEXTS, TEXTS[::-1]),
                               tiny_model.predict_similarity(TEXTS, TEXTS[::-1]), atol=0.05)


def test_modes_none_and_errors(pretrained):
    from core.model.multitask import MultitaskBert
    from core.model.precision import precision_name, quantize_model
    assert quantize_model(pretrained, None) is pretrained and precision_name(pretrained) == "fp32"
    q = MultitaskBert.load("pretrained", quantize="int8")
    assert quantize_model(q, "int8") is q                    # idempotent
    with pytest.raises(MinbertError, match="already serves int8"):
        quantize_model(q, "bf16")
    with pytest.raises(MinbertError, match="unknown quantize"):
        quantize_model(q, "fp16")


def test_warm_up_and_serving_label(tiny_checkpoint):
    from core.model.precision import describe_precision, precision_name
    from core.serving.predict import load_for_serving
    m = load_for_serving(str(tiny_checkpoint), quantize="auto")
    assert precision_name(m) == precision.serving_mode("cpu")
    assert m.warm_up_seconds > 0
    label = describe_precision(m)
    assert label.startswith(precision_name(m))
    assert describe_precision(None) == "fp32 (exact)"
