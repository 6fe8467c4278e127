"""Methods of the best recipe (configs/best.yaml): hybrid cross + cosine pair heads,
symmetric pair augmentation, layer-wise learning-rate decay, label smoothing.

Expected values are hand computations from the definitions, not read back from the code.
"""
from __future__ import annotations

import math

import numpy as np

import pytest
import torch
import torch.nn.functional as F

from core.config.schema import Config, HeadConfig
from core.data.datasets import load_task
from core.errors import ConfigError
from core.losses.functions import sst_loss
from core.model.heads import Encoding, TaskHead

from conftest import REPO, TINY

pytestmark = pytest.mark.usefixtures("one_thread")


def _enc(pooled: torch.Tensor, joint: torch.Tensor | None = None) -> Encoding:
    j = None if joint is None else Encoding(None, None, joint)
    return Encoding(None, None, pooled, joint=j)


def test_hybrid_sts_head_starts_as_the_average_of_its_branches():
    torch.manual_seed(0)
    head = TaskHead(HeadConfig(mode="hybrid", dropout=0.0), in_dim=4, out_dim=1, task="sts").eval()
    u = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    v = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    joint = torch.randn(2, 4)
    out = head.branches(_enc(u, joint), _enc(v))
    # bi branch: 5 * cos(u, v): cos = 1 for row 0, 0 for row 1
    assert out["bi"].tolist() == pytest.approx([5.0, 0.0], abs=1e-6)
    # cross branch: sigmoid(linear(joint)) * 5
    z = head.ffn(joint).reshape(-1)
    assert out["cross"].tolist() == pytest.approx((torch.sigmoid(z) * 5).tolist(), abs=1e-6)
    # combiner initialized to (cross + bi) / 2
    expected = [(out["cross"][i].item() + out["bi"][i].item()) / 2 for i in range(2)]
    assert out["output"].tolist() == pytest.approx(expected, abs=1e-6)


def test_hybrid_qqp_bi_branch_is_the_zero_shot_calibrated_cosine_logit():
    head = TaskHead(HeadConfig(mode="hybrid", dropout=0.0), in_dim=2, out_dim=1, task="qqp").eval()
    u = torch.tensor([[1.0, 0.0]])
    v = torch.tensor([[1.0, 1.0]])            # cos = 1 / sqrt(2)
    out = head.branches(_enc(u, torch.zeros(1, 2)), _enc(v))
    # README: zero-shot paraphrase probability sigmoid((cos - 0.8133) * 10.3411)
    assert out["bi"].item() == pytest.approx((1 / math.sqrt(2) - 0.8133) * 10.3411, abs=1e-4)


def test_hybrid_head_refuses_inputs_without_the_joint_encoding():
    from core.errors import MinbertError
    head = TaskHead(HeadConfig(mode="hybrid"), in_dim=2, out_dim=1, task="sts")
    with pytest.raises(MinbertError, match="joint"):
        head.branches(_enc(torch.ones(1, 2)), _enc(torch.ones(1, 2)))


def test_hybrid_mode_needs_a_pooled_vector_head():
    with pytest.raises(ConfigError, match="hybrid"):
        Config.from_dict({"model": {"sts": {"mode": "hybrid", "arch": "cnn"}}})


def test_label_smoothing_matches_its_definition():
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5, 0.0]])
    label = torch.tensor([0])
    eps = 0.1
    logp = F.log_softmax(logits, -1)[0]
    # target distribution: (1 - eps) on the label + eps / K on every class
    expected = -((1 - eps) * logp[0] + eps / 5 * logp.sum())
    assert sst_loss(logits, label, eps).item() == pytest.approx(expected.item(), abs=1e-6)
    assert sst_loss(logits, label).item() == pytest.approx(-logp[0].item(), abs=1e-6)


def test_swapped_pairs_double_the_data_with_sides_exchanged():
    data = load_task("sts", "train", REPO / "data", limit=3)
    both = data.with_swapped_pairs()
    assert len(both) == 6
    for ex, sw in zip(both.examples[:3], both.examples[3:]):
        assert (sw.text_a, sw.text_b, sw.label) == (ex.text_b, ex.text_a, ex.label)
        assert sw.id == f"{ex.id}#swap"
    sst = load_task("sst", "train", REPO / "data", limit=3)
    assert sst.with_swapped_pairs() is sst


def test_layer_decay_gives_each_encoder_layer_its_learning_rate(tmp_path):
    from core.training.trainer import Trainer
    cfg = Config.from_yaml(REPO / "configs" / "quick.yaml", TINY + [
        f"data.dir={REPO / 'data'}", "train.layer_decay=0.5", "train.lr=1.0", "train.head_lr=3.0"])
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    trainer.setup()
    trainer.start_stage(trainer.stages[0])
    lr_of = {}
    for group in trainer.optimizer.param_groups:
        for p in group["params"]:
            lr_of[id(p)] = group["lr"]
    bert = trainer.model.bert
    L = bert.config.num_hidden_layers            # 6 for all-MiniLM-L6-v2
    # top layer: lr; layer i (0-based): lr * 0.5 ** (L - 1 - i); embeddings: lr * 0.5 ** L
    # (warm-up scales every group by the same factor: compare ratios to the top layer)
    top = lr_of[id(bert.encoder.layer[L - 1].attention.self.query.weight)]
    lr_of = {k: v / top for k, v in lr_of.items()}
    assert lr_of[id(bert.encoder.layer[0].attention.self.query.weight)] == pytest.approx(0.5 ** (L - 1))
    assert lr_of[id(bert.embeddings.word_embeddings.weight)] == pytest.approx(0.5 ** L)
    assert lr_of[id(trainer.model.heads["sst"].ffn.net[-1].weight)] == pytest.approx(3.0)
    assert trainer.optimizer.defaults["lr"] == 1.0
    # every parameter the stage's loss reaches: all but the encoder's pooler, which no pooling reads
    unused = {n for n, p in trainer.model.named_parameters() if id(p) not in lr_of}
    assert unused == {"bert.pooler.dense.weight", "bert.pooler.dense.bias"}


def test_best_recipe_trains_saves_and_predicts_with_hybrid_heads(tmp_path):
    """A smoke run of the shipped recipe: hybrid heads train (their branch losses are
    logged), the checkpoint loads and predicts all three tasks."""
    import json

    from core.model.multitask import MultitaskBert
    from core.training.trainer import Trainer
    cfg = Config.from_yaml(REPO / "configs" / "best.yaml", TINY + [f"data.dir={REPO / 'data'}"])
    Trainer(cfg, tmp_path / "best", progress=False).run()
    steps = [json.loads(line) for line in (tmp_path / "best" / "train_log.jsonl").read_text().splitlines()]
    aux = {k for e in steps if e["event"] == "step" for k in e.get("aux", {})}
    assert aux & {"qqp_cross", "qqp_bi", "sts_cross", "sts_bi"}
    m = MultitaskBert.load(tmp_path / "best")
    assert m.head_mode("qqp") == m.head_mode("sts") == "hybrid"
    p = m.predict_paraphrase(["How do I learn Python?"], ["What is the best way to learn Python?"])
    s = m.predict_similarity(["A man plays a guitar."], ["Someone is playing an instrument."])
    assert 0.0 <= p[0] <= 1.0 and 0.0 <= s[0] <= 5.0
    assert m.predict_sentiment(["a fine film"]).sum() == pytest.approx(1.0, abs=1e-5)


def test_dev_curve_figure_puts_each_evaluation_at_its_wall_time_in_minutes():
    from analysis.plots import dev_curve_figure
    events = [{"event": "start", "time": 1000.0},
              {"event": "eval", "time": 1060.0, "sst_acc": 0.4, "sts_pearson": 0.8},
              {"event": "step", "time": 1100.0},
              {"event": "eval", "time": 1180.0, "sst_acc": 0.5, "sts_pearson": 0.85}]
    fig = dev_curve_figure(events)
    traces = {t.name: t for t in fig.data}
    assert set(traces) == {"SST accuracy", "STS Pearson"}
    assert list(traces["SST accuracy"].x) == [1.0, 3.0] and list(traces["SST accuracy"].y) == [0.4, 0.5]


def test_paired_bootstrap_of_identical_predictions_is_zero_and_of_a_better_one_positive():
    import numpy as np

    from analysis.ablation import paired_bootstrap
    labels = np.array([0, 1, 1, 0, 1, 0, 1, 1])
    perfect = labels.astype(float)
    half = np.array([0, 1, 0, 1, 1, 0, 0, 1], dtype=float)    # 5 of 8 right
    assert paired_bootstrap("qqp", labels, perfect, perfect, resamples=200) == (0.0, 0.0)
    lo, hi = paired_bootstrap("qqp", labels, perfect, half, resamples=200)
    assert 0.0 <= lo <= 3 / 8 <= hi <= 1.0


def test_hybrid_ablation_reads_three_outputs_of_the_same_weights(tmp_path):
    from analysis.ablation import branch_predictions
    from core.model.multitask import MultitaskBert
    from core.training.trainer import Trainer
    cfg = Config.from_yaml(REPO / "configs" / "best.yaml", TINY + [f"data.dir={REPO / 'data'}",
                                                                    "train.tasks=[sts]"])
    Trainer(cfg, tmp_path / "h", progress=False).run()
    m = MultitaskBert.load(tmp_path / "h")
    a, b = ["A man plays a guitar.", "A dog runs."], ["Someone plays music.", "A cat sleeps."]
    out = branch_predictions(m, "sts", a, b)
    w, bias = m.heads["sts"].combine.weight.detach(), m.heads["sts"].combine.bias.item()
    expected = np.clip(w[0].item() * out["cross"] + w[1].item() * out["bi"] + bias, 0, 5)
    np.testing.assert_allclose(out["output"], expected, atol=1e-5)
    np.testing.assert_allclose(out["output"], m.predict_similarity(a, b), atol=1e-5)
