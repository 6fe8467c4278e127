"""Each report recipe pins the constants its report states.

The expected values below are literals taken from the report texts
(../shared/reports/00X_*.txt), each with its section, table or equation, never read
back from the code under test: a wrong prompt, weight or layout in a recipe fails here.
(Sections of reports 000, 002, 003 and 004 not yet rewritten still quote issues 3 and 11.)
"""
from __future__ import annotations

import math

import pytest

from conftest import REPO
from core.config.schema import Config

CONFIGS = REPO / "configs"


def recipe(name: str, *overrides: str) -> Config:
    return Config.from_yaml(CONFIGS / f"{name}.yaml", list(overrides))


def stages(cfg: Config) -> dict:
    return dict(cfg.stage_plan())


# ------------------------------------------------------------------ report 001
R001 = ("report-001-baseline", "report-001-triplet", "report-001-qabert")


@pytest.mark.parametrize("name", R001)
def test_report_001_shared_setup(name):
    cfg = recipe(name)
    m, plan = cfg.model, stages(cfg)
    train = list(plan.values())[-1]
    # §4.1: [CLS] of the encoder for all three tasks
    assert m.pooling == "cls" and all(m.pooling_of(t) == "cls" for t in ("sst", "qqp", "sts"))
    # §4.1: 4 x (Linear -> LayerNorm -> Dropout -> ReLU), then a final Linear; §5.3: dropout 0.1
    for task in ("sst", "qqp", "sts"):
        head = getattr(m, task)
        assert (head.arch, head.layers, head.dropout) == ("deep_ffn", 4, 0.1)
    # §4.1: each epoch SST, then STS, then Quora; §5.3: full SST and STS, a Quora subset
    assert train.schedule == "sequential" and train.tasks == ["sst", "sts", "qqp"]
    assert train.task_sampling == "ratio" and train.task_ratio["qqp"] * 100 < 15_997
    assert train.task_ratio["sst"] * 100 == pytest.approx(8_544) and train.task_ratio["sts"] * 100 == pytest.approx(6_040)
    # §4.2.3: SST drawn with inverse label frequency (WeightedRandomSampler)
    assert train.class_balanced == ["sst"]
    # §4.1: cross entropy (SST), MSE (STS), BCE (Quora); AdamW
    assert [[t.name for t in train.task_losses(k)] for k in ("sst", "sts", "qqp")] == [["ce"], ["mse"], ["bce"]]
    assert train.optimizer in ("adamw", "torch_adamw")
    # §4.3, §5.3, §5.4.3: learning rate 1e-5 (one rate); §5.4.3: 100 epochs
    assert train.lr == 1e-5 and train.head_lr is None
    assert train.epochs == 100


def test_report_001_baseline_concatenates_two_cls_vectors():
    m = recipe("report-001-baseline").model
    # §4.2.2: "our baseline for those 2 tasks receives 2 CLS tokens and concatenates them"
    for task in ("qqp", "sts"):
        assert getattr(m, task).mode == "bi" and getattr(m, task).features == ["u", "v"]
        assert not getattr(m, task).cosine_feature
    assert not m.prompts.enabled


def test_report_001_prompts_are_the_reports_table_1():
    cfg = recipe("report-001-qabert")
    p = cfg.model.prompts
    assert p.enabled
    # Table 1: the three questions and the pair context
    assert p.sst == "Is this review positive or negative?"
    assert p.qqp == "Does the first question paraphrase the second question?"
    assert p.sts == "Is the first sentence semantically equivalent to the second sentence?"
    assert p.pair_context == "First sentence: {a} Second sentence: {b}"
    # §4.2.2: Q&ABERT reads one [CLS] that embeds both sentences: a joint (cross) input
    assert cfg.model.qqp.mode == "cross" and cfg.model.sts.mode == "cross"
    # Table 2 lists Q&ABERT and the triplet model separately: no triplet stage here
    assert all(t.objective == "supervised" for t in stages(cfg).values())


def test_report_001_triplet_model():
    cfg = recipe("report-001-triplet")
    plan = stages(cfg)
    assert list(plan) == ["triplet", "multitask"]
    triplet = plan["triplet"]
    c = triplet.contrastive
    # §4.2.1: three negatives from the anchor's data set, one from each of the other two
    assert triplet.objective == "triplet" and c.triplet_layout == "report" and c.negatives == 3
    assert triplet.tasks == ["sst", "sts", "qqp"]          # all three data sets
    # §4.2.1: STS "in the range of either 0-2 or 3-5"
    assert (c.sts_negative, c.sts_positive) == (2.0, 3.0)
    # §4.2.1: all available data; §6.1: the loss "after only 5 epochs"
    assert c.max_examples is None and triplet.epochs == 5
    # Eq. 1 has no margin; the declared substitution (recipe header): 0.83, the margin at
    # which MiniLM starts with §6.1's ~5% active anchors on the training triplets
    assert c.margin == 0.83
    # then the baseline (Table 2: "Triplet Loss" is the baseline plus the pre-training)
    base = recipe("report-001-baseline")
    import dataclasses
    same = dataclasses.replace(plan["multitask"], contrastive=stages(base)["train"].contrastive)
    assert cfg.model == base.model and same == stages(base)["train"]   # contrastive: unused by it


def test_report_001_eq1_is_a_sum_over_anchors():
    import torch
    from core.losses.functions import triplet_loss
    # Eq. 1: L = sum_i^A max(0, d(x_i, y_i) - log sum_j^N exp d(x_i, z_j)), Euclidean d
    x, y = torch.zeros(2, 2), torch.tensor([[6.0, 8.0], [0.0, 10.0]])      # d = 10, 10
    z = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]] * 2)                       # d = 1, 1
    assert triplet_loss(x, y, z).item() == pytest.approx(2 * (10.0 - math.log(2 * math.e)), rel=1e-6)


# ------------------------------------------------------------------ report 003
def test_report_003_is_table_1_run_0():
    cfg = recipe("report-003-smart-simcse")
    m = cfg.model
    plan = stages(cfg)
    # Table 1 run 0: pre-QQP ✓, MEAN, joint-loss ✓, SMART ✓, U-CL ×, S-CL ✓
    assert list(plan) == ["supervised-cl", "quora", "joint"]
    assert m.pooling == "mean"
    assert "unsupervised-cl" in [s["name"] for s in cfg.stages if s.get("skip")]      # defined, off
    joint = plan["joint"]
    # §3: SST one layer -> 5 logits; Quora one layer on [s1, s2, |s1 - s2|]; STS imitates it
    assert m.sst.layers == 1
    for task in ("qqp", "sts"):
        head = getattr(m, task)
        assert (head.mode, head.features, head.layers, head.cosine_feature) == ("bi", ["u", "v", "abs_diff"], 1, False)
    # §3: cross-entropy, binary cross-entropy, mean squared error
    assert [[t.name for t in joint.task_losses(k)] for k in ("sst", "qqp", "sts")] == [["ce"], ["bce"], ["mse"]]
    # §3.3: L = w1 L_SST + w2 L_STS + w3 L_QQP, w1 = w2 = w3 = 1
    assert joint.loss_weighting == "fixed" and joint.loss_weights == {"sst": 1.0, "qqp": 1.0, "sts": 1.0}
    assert joint.backward == "joint" and joint.schedule == "round_robin"
    # §3.2: n batches of each task per epoch, n the smallest loader's
    assert joint.steps_per_epoch == "min"
    # §4.3: 20 epochs, fixed lr 1e-5, dropout 0.3, batch 8, AdamW with weight decay 0.001
    assert (joint.epochs, joint.lr, joint.batch_size, joint.weight_decay) == (20, 1e-5, 8, 0.001)
    assert joint.lr_schedule == "constant" and joint.warmup_ratio == 0.0
    assert m.encoder_dropout == 0.3 and all(getattr(m, t).dropout == 0.3 for t in ("sst", "qqp", "sts"))
    # §3.6, §4.3: SMART weighted 0.5, with Bregman proximal point optimization
    assert joint.smart.weight == 0.5 and joint.smart.bregman_weight > 0
    # §4.3: pre-training on QQP for 10 epochs of 1000 iterations
    assert plan["quora"].tasks == ["qqp"] and (plan["quora"].epochs, plan["quora"].steps_per_epoch) == (10, 1000)
    # §3.5: supervised SimCSE, one epoch, batch 16, lr 3e-5, tau 0.05
    scl = plan["supervised-cl"]
    assert (scl.objective, scl.epochs, scl.batch_size, scl.lr, scl.contrastive.temperature) == (
        "simcse_sup", 1, 16, 3e-5, 0.05)
    # §3.4: unsupervised SimCSE, one epoch, batch 64, lr 3e-5, tau 0.05
    ucl = dict(cfg.with_overrides(["stages.unsupervised-cl.skip=false"]).stage_plan())["unsupervised-cl"]
    assert (ucl.objective, ucl.epochs, ucl.batch_size, ucl.lr, ucl.contrastive.temperature) == (
        "simcse_unsup", 1, 64, 3e-5, 0.05)
    # no MNRL and no cosine features: those are report 004's
    assert all(term.name != "mnrl" for t in plan.values() if t.objective == "supervised"
               for task in t.tasks for term in t.task_losses(task))


def test_smart_divergences_are_symmetric_kl_and_mse():
    from core.losses.smart import TASK_DIVERGENCE
    # §3.6: symmetrized KL for classification, mean squared error for regression (STS)
    assert TASK_DIVERGENCE == {"sst": "categorical", "qqp": "bernoulli", "sts": "mse"}


# ------------------------------------------------------------------ report 004
@pytest.mark.parametrize("name", ["report-004-baseline", "report-004-rr-cosine"])
def test_report_004_shared_setup(name):
    cfg = recipe(name)
    (train,) = stages(cfg).values()
    # §5.3: learning rate 1e-5 for fine-tuning, batch size 8, dropout 0.3
    assert (train.lr, train.head_lr, train.batch_size) == (1e-5, None, 8)
    assert all(getattr(cfg.model, t).dropout == 0.3 for t in ("sst", "qqp", "sts"))
    # §4.2: MSE for STS, cross entropy for SST, binary cross entropy with logits for paraphrase
    assert [[t.name for t in train.task_losses(k)] for k in ("sts", "sst", "qqp")] == [["mse"], ["ce"], ["bce"]]
    # §4.4: the cosine is concatenated to the embeddings: pair features [u; v] (+ cos), no |u - v|, u * v
    for task in ("qqp", "sts"):
        assert getattr(cfg.model, task).mode == "bi" and getattr(cfg.model, task).features == ["u", "v"]


def test_report_004_experiments_2_and_6():
    base = stages(recipe("report-004-baseline"))["train"]
    # §4.2: the baseline trains one dataset/task at a time for every epoch; no cosine feature
    assert base.schedule == "sequential"
    assert not recipe("report-004-baseline").model.qqp.cosine_feature
    rr = recipe("report-004-rr-cosine")
    (train,) = stages(rr).values()
    # §4.2: J_Combined = J_Sentiment + J_Paraphrase + J_Semantic every batch, one update
    assert train.schedule == "round_robin" and train.backward == "joint"
    assert train.loss_weighting == "fixed" and train.loss_weights == {"sst": 1.0, "qqp": 1.0, "sts": 1.0}
    # §4.4: cosine similarity for both the STS and the paraphrase heads (experiment 6)
    assert rr.model.qqp.cosine_feature and rr.model.sts.cosine_feature


def test_report_004_mnrl_is_the_paraphrase_objective_of_experiment_3():
    import yaml
    rows = {r["name"]: r for r in yaml.safe_load((CONFIGS / "study" / "004.yaml").read_text())["rows"]}
    # §4.3: J_Paraphrase = -(1/K) sum_i log P(y_i | x_i): MNRL is the paraphrase loss itself
    assert rows["004-e3"]["set"] == [{"train.losses.qqp": [{"name": "mnrl"}]}]
    cfg = recipe("report-004-baseline", "train.losses.qqp=[{name: mnrl}]")
    terms = cfg.train.task_losses("qqp")
    assert [t.name for t in terms] == ["mnrl"] and not terms[0].hard_negatives
    # §5.3: "1e-3 for pretraining" (experiment 1)
    assert "train.lr=1.0e-3" in rows["004-e1"]["set"] and "train.freeze_encoder=true" in rows["004-e1"]["set"]


# ------------------------------------------------------------------ report 000
def test_report_000_mtdnn():
    cfg = recipe("report-000-mtdnn")
    m, (train,) = cfg.model, stages(cfg).values()
    # Eq. 1: softmax(W_SST^T x), x the [CLS] embedding: one linear layer
    assert (m.sst.mode, m.sst.layers, m.pooling_of("sst")) == ("single", 1, "cls")
    # Eq. 2: softmax(W_para^T [x1; x2]): one linear layer on the two embeddings concatenated
    assert (m.qqp.mode, m.qqp.features, m.qqp.layers) == ("bi", ["u", "v"], 1)
    # Eq. 3: Sim = (1 + cos-sim(x1, x2)) * 5 / 2; §4.1: mean squared error; §6.2: [CLS] by default
    assert (m.sts.mode, m.sts.cosine_map, m.pooling_of("sts")) == ("cosine", "affine", "cls")
    assert [t.name for t in train.task_losses("sts")] == ["mse"]
    # Algorithm 1: merge all tasks' mini-batches, shuffle, one task's batch per update
    assert train.schedule == "mtdnn" and train.tasks == ["sst", "qqp", "sts"]
    # §4.2, §5.2: truncated to the same length as the smallest dataset (1:1:1, Table 4)
    assert train.task_sampling == "truncate"
    # §5.2: dropout 0.3, batch size 8, learning rate 1e-5
    assert (m.sst.dropout, m.qqp.dropout) == (0.3, 0.3)
    assert (train.batch_size, train.lr, train.head_lr) == (8, 1e-5, None)
    # §5.2: saved when better on two out of three tasks
    assert train.select == "majority"


def test_report_000_study_ratios_are_table_4s():
    import yaml
    rows = {r["name"]: r for r in yaml.safe_load((CONFIGS / "study" / "000.yaml").read_text())["rows"]}
    # Table 4: "1:x:1 indicates the ratio of samples in SST:Quora:STS"
    assert "train.task_ratio={sst: 1, qqp: 2, sts: 1}" in rows["000-mt-1:2:1"]["set"]
    assert "train.task_ratio={sst: 1, qqp: 4, sts: 1}" in rows["000-mt-1:4:1"]["set"]
    # Table 5 poolings on STS alone (§6.2: "for individual tasks")
    for name, pooling in (("000-sts-mean", "mean"), ("000-sts-max", "max"), ("000-sts-mean-max", "mean_max")):
        assert rows[name]["set"] == ["train.tasks=[sts]", f"model.pooling={pooling}"]
    # Table 6: lr 1e-4, 1e-6, 1e-7 and 2 / 3 fc layers on SST alone
    assert {r["set"][1] for n, r in rows.items() if n.startswith("000-sst-")} == {
        "model.sst.layers=2", "model.sst.layers=3", "train.lr=1.0e-4", "train.lr=1.0e-6", "train.lr=1.0e-7"}


# ------------------------------------------------------------------ report 002
R002 = ("report-002-baseline", "report-002-recurrent", "report-002-cnn-heads")


@pytest.mark.parametrize("name", R002)
def test_report_002_shared_setup(name):
    cfg = recipe(name)
    m = cfg.model
    # §3.1: a linear layer with 307,200 parameters from 768 to 400 features: 768 x 400, no bias
    assert m.shared_projection == 400 and 768 * 400 == 307_200 and m.shared_projection_bias is False
    plan = stages(cfg)
    assert list(plan) == ["pretrain", "finetune"]                 # §4.3: two phases, in this order
    pre, fine = plan["pretrain"], plan["finetune"]
    # §4.3: pre-training batch 64, lr 0.001, ten epochs; fine-tuning batch 8, lr 10^-6, 25 epochs; AdamW
    assert (pre.batch_size, pre.lr, pre.epochs) == (64, 0.001, 10)
    assert (fine.batch_size, fine.lr, fine.epochs) == (8, 1e-6, 25)
    assert pre.optimizer in ("adamw", "torch_adamw") and fine.optimizer == pre.optimizer
    assert pre.head_lr is None and fine.head_lr is None            # one learning rate per phase
    # §4.1.2: a representative Quora subset of 8,544 training pairs per epoch (= SST's 8,544)
    assert pre.steps_per_epoch * pre.batch_size >= 8_544 > (pre.steps_per_epoch - 1) * pre.batch_size
    assert fine.steps_per_epoch * fine.batch_size == 8_544
    # §3: cross entropy for every task
    assert [t.name for task in ("sst", "qqp", "sts") for t in fine.task_losses(task)] == ["ce", "bce", "bce_score"]


def test_report_002_baseline_is_linear_with_a_13_feature_cosine():
    m = recipe("report-002-baseline").model
    # §3.1: only linear layers per task; STS: 13 features, cosine similarity
    assert [getattr(m, t).arch for t in ("sst", "qqp", "sts")] == ["pooled_linear"] * 3
    assert m.sst.layers == 1 and m.qqp.layers == 1
    assert m.sts.mode == "cosine" and m.sts.out_features == 13 and m.sts.cosine_map == "affine"
    assert not m.shared_upscale


@pytest.mark.parametrize("name", ["report-002-recurrent", "report-002-cnn-heads"])
def test_report_002_upscaling_and_dropout(name):
    m = recipe(name).model
    # §3.2.1: convolutional upscaling, filter size 3, the one embedding into 8; shared (§3.2.2)
    assert m.shared_upscale
    for task in ("sst", "sts"):
        assert getattr(m, task).upscale_kernel == 3 and getattr(m, task).vectors == 8
    # §4.3: dropout 0.3 for both architectures; §3.2.2: Quora "just employed a linear model"
    assert all(getattr(m, t).dropout == 0.3 for t in ("sst", "qqp", "sts"))
    assert m.qqp.arch == "pooled_linear" and m.qqp.layers == 1


def test_report_002_recurrent_and_convolutional_heads():
    rec = recipe("report-002-recurrent").model
    # §3.2.1: bidirectional LSTM into 32 features, final hidden state, a linear layer to a single output
    assert rec.sts.arch == "pooled_bilstm" and rec.sts.hidden == 32 and rec.sts.mode != "cosine"
    conv = recipe("report-002-cnn-heads").model
    # §3.2.2: convolutional SST and STS; STS by cosine (of 13 features, §5)
    assert conv.sst.arch == "pooled_cnn" and conv.sts.arch == "pooled_cnn"
    assert conv.sts.mode == "cosine" and conv.sts.out_features == 13
