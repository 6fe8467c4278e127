"""The fast inference paths give the reference's answers: fp32 equals transformers,
length-sorted batches come back in input order, int8 stays close to fp32."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import MinbertError

# Deliberately mixed lengths, so sorted batches reorder them and padding differs.
TEXTS = ["A man is playing a guitar on the street corner while people walk by.", "Hi.",
         "The cat sleeps.", "Stocks fell sharply on Monday after the central bank raised rates again.",
         "Two dogs run.", "What is the best way to learn a new language quickly and well?",
         "Rain.", "She reads a book in the park every Sunday morning."]


@pytest.fixture(scope="module")
def int8_pretrained():
    from core.model.multitask import MultitaskBert
    return MultitaskBert.load("pretrained", quantize="int8")


def test_fp32_fast_path_equals_transformers(pretrained):
    """Sorted batches + SDPA + inference mode == HF BertModel, padded file-order batch."""
    import transformers
    from core.model.bert import packaged_model_dir
    path = str(packaged_model_dir())
    tok = transformers.AutoTokenizer.from_pretrained(path)
    ref = transformers.BertModel.from_pretrained(path).eval()
    batch = tok(TEXTS, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        hidden = ref(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    expected = ((hidden * m).sum(1) / m.sum(1)).numpy()
    ours = pretrained.embed(TEXTS, batch_size=3)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)


def test_sorted_batches_restore_input_order(tiny_model):
    one_by_one = np.stack([tiny_model.predict_sentiment([t])[0] for t in TEXTS])
    batched = tiny_model.predict_sentiment(TEXTS, batch_size=3)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    pairs = tiny_model.predict_similarity(TEXTS, TEXTS[::-1], batch_size=3)
    singles = [tiny_model.predict_similarity([a], [b])[0] for a, b in zip(TEXTS, TEXTS[::-1])]
    np.testing.assert_allclose(pairs, singles, atol=1e-4)


def test_int8_is_close_to_fp32(pretrained, int8_pretrained):
    assert int8_pretrained.quantization == "int8"
    from core.model.precision import KEEP_FP32
    fp32_linear = [n for n, m in int8_pretrained.bert.named_modules() if isinstance(m, torch.nn.Linear)]
    assert fp32_linear and all(n.endswith(KEEP_FP32) for n in fp32_linear), fp32_linear
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
    quantized = [m for m in int8_pretrained.bert.modules() if isinstance(m, DynamicQuantizedLinear)]
    assert len(quantized) == 37 - len(fp32_linear), len(quantized)   # 6 layers x 6 + pooler
    a, b = pretrained.embed(TEXTS), int8_pretrained.embed(TEXTS)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.95 and cos.mean() > 0.98, cos


def test_int8_checkpoint_heads_agree(tiny_checkpoint, tiny_model):
    from core.model.multitask import MultitaskBert
    q = MultitaskBert.load(tiny_checkpoint, quantize="int8")
    np.testing.assert_allclose(q.predict_sentiment(TEXTS), tiny_model.predict_sentiment(TEXTS), atol=0.05)


def test_int8_models_refuse_to_be_saved_and_bad_modes(int8_pretrained, tmp_path):
    from core.model.multitask import MultitaskBert
    with pytest.raises(MinbertError, match="quantized"):
        int8_pretrained.save(tmp_path / "q")
    with pytest.raises(MinbertError, match="unknown quantize"):
        MultitaskBert.load("pretrained", quantize="int4")


def test_full_range_activations_are_at_least_as_accurate():
    """8-bit activations (VNNI CPUs) vs torch's default 7-bit, on one FFN block."""
    from core.model.precision import quantize_linear_int8
    torch.manual_seed(0)
    make = lambda: torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64))
    ref = make()
    x = torch.randn(32, 64) * 3
    with torch.no_grad():
        y = ref(x)
        errors = {}
        for full in (False, True):
            q = make()
            q.load_state_dict(ref.state_dict())
            errors[full] = (quantize_linear_int8(q, full_range=full)(x) - y).abs().mean().item()
    assert errors[True] <= errors[False] * 1.05 and errors[True] < 0.05, errors


def test_bf16_autocast_runs_on_cpu(pretrained):
    """The bf16 training path (train.precision=bf16) works on CPU: forward + backward."""
    enc = pretrained.featurize("sst", TEXTS[:4]).batch([0, 1, 2, 3])["a"]
    bert = pretrained.bert
    with torch.no_grad():
        fp32 = bert(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).last_hidden_state
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = bert(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).last_hidden_state
    out.float().pow(2).mean().backward()
    grads = [p.grad for p in bert.parameters() if p.grad is not None]
    bert.zero_grad(set_to_none=True)
    assert grads and all(torch.isfinite(g).all() for g in grads)
    cos = torch.nn.functional.cosine_similarity(out.float(), fp32, dim=-1)   # per token
    assert cos.min() > 0.98, cos.min()


def test_trainer_bf16_step_updates_weights(tmp_path, repo):
    """train.precision=bf16 through the real trainer step (autocast on CPU here)."""
    from conftest import TINY
    from core.config.schema import Config
    from core.training.trainer import Trainer
    cfg = Config.from_yaml(repo / "configs" / "quick.yaml",
                           TINY + ["train.precision=bf16", "train.device=cpu", f"data.dir={repo / 'data'}"])
    trainer = Trainer(cfg, tmp_path / "bf16", progress=False)
    trainer.setup()
    trainer.start_stage(trainer.stages[0])
    before = trainer.model.bert.encoder.layer[0].intermediate.dense.weight.detach().clone()
    out = [trainer.train_step() for _ in range(2)]
    assert all(np.isfinite(v) for step in out for v in step["losses"].values())
    after = trainer.model.bert.encoder.layer[0].intermediate.dense.weight
    assert after.dtype == torch.float32 and not torch.equal(before, after)   # fp32 master weights moved


def test_token_budget_batches_cover_inputs_within_budget():
    from core.model.batching import token_budget_batches
    lengths = [5, 60, 12, 12, 3, 200, 7, 33, 12, 9] * 7
    batches = token_budget_batches(lengths, max_tokens=128)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))                       # each input exactly once
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)     # longest first
    for b in batches:   # padded size within the budget (a single over-long input goes alone)
        assert len(b) * max(lengths[i] for i in b) <= 128 or len(b) == 1
    assert max(len(b) for b in batches) > 10   # short inputs share larger batches
