"""One typed config object: YAML recipe -> Config -> trainer -> checkpoint -> app.

A recipe is parsed exactly once, here. Everything downstream receives the ``Config``
object (or its ``to_dict()`` saved inside a checkpoint, which ``Config.from_dict``
turns back into the same object). Unknown keys, wrong types and out-of-range values are
rejected with a :class:`ConfigError` that names the key, before any job starts.
"""
from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from core.errors import ConfigError
from core.config.limits import check_config, parse_override_value, safe_yaml_load
from core.tasks import TASK_SPECS, TASKS

TaskName = Literal["sst", "qqp", "sts"]
ALL_TASKS = TASKS                   # the task table (core/tasks.py)
PoolingName = Literal["cls", "mean", "max", "mean_max"]


def opt(default: Any = dataclasses.MISSING, *, factory: Any = None, help: str) -> Any:
    """A config field with its one-line help: the single place an option is explained.
    ``python -m core.train --help`` and the app's Train page read it (:func:`option_help`)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class HeadConfig:
    """A task head: reduce token states to a vector, (pair tasks) combine the two
    sentences, then an MLP to the output."""
    mode: Literal["single", "bi", "cross", "cosine", "hybrid"] = opt("bi", help=(
        "bi: each sentence encoded alone, features of (u, v) -> MLP; cross: the joint "
        "'[CLS] a [SEP] b [SEP]' -> MLP; cosine (similarity): a scaled cos(u, v); hybrid: a "
        "cross-encoder branch and a bi-encoder cosine branch combined by a learned linear layer."))
    features: list[Literal["u", "v", "abs_diff", "prod"]] = opt(
        factory=lambda: ["u", "v", "abs_diff", "prod"],
        help="Pair features of a bi-encoder head, from the sentence vectors u and v.")
    cosine_feature: bool = opt(False, help="Append cos(u, v) to the bi-encoder pair features (report 004).")
    cosine_map: Literal["linear", "affine"] = opt("linear", help=(
        "mode cosine: 'linear' = 5 * cos(u, v) (clipped to [0, 5] when predicting; MSE on it is "
        "sentence-transformers' CosineSimilarityLoss x 25); 'affine' = (1 + cos) * 5 / 2 (report 000)."))
    layers: int = opt(1, help=(
        "arch mlp, cnn, bilstm, pooled_*: FC layers of the final MLP (1 = one linear layer); "
        "arch deep_ffn: the number of (Linear, LayerNorm, Dropout, ReLU) blocks."))
    hidden: int = opt(256, help=(
        "Width of the final MLP's hidden layers (deep_ffn: of every block); arch cnn uses it "
        "also as channels per kernel, bilstm and pooled_bilstm as units per direction, "
        "pooled_cnn as channels: one width for reader and MLP."))
    dropout: float = opt(0.1, help="Dropout of the head.")
    arch: Literal["mlp", "deep_ffn", "cnn", "bilstm", "pooled_linear", "pooled_cnn", "pooled_bilstm"] = opt(
        "mlp", help=(
            "What reads the encoder output (core/model/heads.py): mlp = pooled vector -> MLP; deep_ffn = "
            "layers x (Linear, LayerNorm, Dropout, ReLU) -> Linear (report 001); cnn / bilstm = a CNN "
            "or BiLSTM over the token states (our own token-level heads); pooled_linear / pooled_cnn / "
            "pooled_bilstm = report 002's heads on the pooled sentence vector (shared projection, "
            "convolutional upscaling to `vectors` vectors, then a linear / CNN / BiLSTM reader)."))
    kernel_sizes: list[int] = opt(factory=lambda: [2, 3, 4], help="cnn: convolution widths over tokens.")
    pooling: PoolingName | None = opt(None, help=(
        "This task's pooling of token states (report 000 compares poolings per task); "
        "null = model.pooling."))
    vectors: int = opt(8, help="pooled_cnn / pooled_bilstm: vectors the upscaling makes of one (report 002: 8).")
    upscale_kernel: int = opt(3, help="pooled_cnn / pooled_bilstm: filter size of the upscaling convolution "
                                      "(report 002: 3).")
    out_features: int | None = opt(None, help=(
        "pooled_*: a final linear projection of the head's features to this many (report 002's STS "
        "cosine: 13); null = none."))

    def validate(self, where: str) -> None:
        _check(self.layers >= 1, f"{where}.layers must be >= 1, got {self.layers}")
        _check(self.hidden >= 1, f"{where}.hidden must be >= 1, got {self.hidden}")
        _check(0.0 <= self.dropout < 1.0, f"{where}.dropout must be in [0, 1), got {self.dropout}")
        _check(len(self.features) > 0, f"{where}.features must not be empty")
        _check(len(self.kernel_sizes) > 0 and all(k >= 1 for k in self.kernel_sizes),
               f"{where}.kernel_sizes must be a non-empty list of sizes >= 1, got {self.kernel_sizes}")
        _check(self.vectors >= 1, f"{where}.vectors must be >= 1, got {self.vectors}")
        _check(self.upscale_kernel >= 1 and self.upscale_kernel % 2 == 1,
               f"{where}.upscale_kernel must be an odd size >= 1, got {self.upscale_kernel}")
        _check(self.out_features is None or self.out_features >= 1,
               f"{where}.out_features must be >= 1 or null, got {self.out_features}")
        _check(not (self.mode == "hybrid" and self.arch != "mlp"),
               f"{where}: mode 'hybrid' reads pooled vectors; use arch mlp (got {self.arch!r})")
        _check(not (self.mode == "cosine" and self.arch == "deep_ffn"),
               f"{where}: arch 'deep_ffn' needs an output layer, but mode 'cosine' has none; "
               f"use mode bi or cross, or arch mlp")


@dataclass
class PromptConfig:
    """Q&ABERT prompting (report 001): every task becomes a (question, context) pair fed
    jointly as ``[CLS] question [SEP] context [SEP]``, the question as segment A."""
    enabled: bool = opt(False, help="Feed every task as (question, context) jointly (report 001, Q&ABERT).")
    sst: str = opt("Is this review positive or negative?", help="The question asked of each SST sentence.")
    qqp: str = opt("Does the first question paraphrase the second question?",
                   help="The question asked of each Quora pair.")
    sts: str = opt("How similar are the first sentence and the second sentence?",
                   help="The question asked of each STS pair (report 001's Table 1: \"Is the first "
                        "sentence semantically equivalent to the second sentence?\", configs/report-001).")
    pair_context: str = opt("First sentence: {a} Second sentence: {b}",
                            help="The context of a pair task, with {a} and {b} for its two sentences.")

    def validate(self) -> None:
        for task in ALL_TASKS:
            _check(bool(getattr(self, task).strip()), f"model.prompts.{task} must not be empty")
        _check("{a}" in self.pair_context and "{b}" in self.pair_context,
               "model.prompts.pair_context must contain {a} and {b}, e.g. "
               "'First sentence: {a} Second sentence: {b}'")


def _sst_head() -> HeadConfig:
    return HeadConfig(mode="single")


@dataclass
class ModelConfig:
    encoder: str = opt("minilm", help="'minilm' (packaged all-MiniLM-L6-v2) or a directory holding an HF-format BERT.")
    pooling: PoolingName = opt("mean", help="How token states become one sentence vector "
                                           "(a task's head may set its own: model.<task>.pooling).")
    max_len: int = opt(128, help="Wordpieces per input, special tokens included; longer inputs are cut.")
    sst: HeadConfig = field(default_factory=_sst_head)
    qqp: HeadConfig = field(default_factory=HeadConfig)
    sts: HeadConfig = field(default_factory=HeadConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    encoder_dropout: float | None = opt(None, help=(
        "Dropout of the encoder's hidden states and attention probabilities while training "
        "(report 003: 0.3); null = the encoder's own (0.1 for MiniLM)."))
    shared_projection: int | None = opt(None, help=(
        "report 002: one linear layer shared by all tasks maps the pooled vector to this many "
        "features (the report's 768 -> 400; here 384 -> 400) before the pooled_* heads; null = none."))
    shared_projection_bias: bool = opt(True, help=(
        "Whether the shared projection has a bias (report 002's 768 x 400 = 307,200 parameters: none)."))
    shared_upscale: bool = opt(False, help=(
        "report 002: ONE convolutional upscaling (filter upscale_kernel, one vector -> `vectors` "
        "vectors) followed by ReLU, shared by every pooled_cnn / pooled_bilstm head; false = each "
        "such head upscales on its own (no ReLU)."))

    def pooling_of(self, task: str) -> str:
        """The pooling a task's head reads (its own, else the model's)."""
        return getattr(self, task).pooling or self.pooling

    def validate(self) -> None:
        _check(8 <= self.max_len <= 512, f"model.max_len must be in [8, 512], got {self.max_len}")
        _check(self.sst.mode == "single", "model.sst.mode must be 'single' (one sentence)")
        for task in ("qqp", "sts"):
            head = getattr(self, task)
            _check(head.mode in ("bi", "cross", "cosine", "hybrid"),
                   f"model.{task}.mode must be bi, cross, cosine or hybrid, got {head.mode!r}")
        _check(self.qqp.mode != "cosine", "model.qqp.mode 'cosine' is for similarity only")
        for task in ALL_TASKS:
            getattr(self, task).validate(f"model.{task}")
        _check(self.encoder_dropout is None or 0.0 <= self.encoder_dropout < 1.0,
               f"model.encoder_dropout must be in [0, 1) or null, got {self.encoder_dropout}")
        _check(self.shared_projection is None or self.shared_projection >= 1,
               f"model.shared_projection must be >= 1 or null, got {self.shared_projection}")
        if self.shared_upscale:
            readers = [getattr(self, t) for t in ALL_TASKS if getattr(self, t).arch in ("pooled_cnn", "pooled_bilstm")]
            _check(bool(readers), "model.shared_upscale needs a pooled_cnn or pooled_bilstm head to read its vectors")
            shapes = {(h.vectors, h.upscale_kernel) for h in readers}
            _check(len(shapes) == 1, f"model.shared_upscale: the heads that read it must agree on vectors and "
                                     f"upscale_kernel, got {sorted(shapes)}")
        self.prompts.validate()
        if self.prompts.enabled:
            for task in ("qqp", "sts"):
                _check(getattr(self, task).mode == "cross",
                       f"model.prompts.enabled feeds each pair as one (question, context) input: "
                       f"set model.{task}.mode to 'cross' (got {getattr(self, task).mode!r})")


@dataclass
class DataConfig:
    dir: str = opt("data", help="Folder with the task CSV files.")
    limit: int | None = opt(None, help=(
        "Train on a seeded, label-stratified sample of N examples of each task (SST by class, Quora by "
        "label, STS by score bin; the same rows for every training seed). Blank: all."))
    eval_limit: int | None = opt(None, help=(
        "Score on a seeded, label-stratified sample of N dev examples of each task (figures marked as a "
        "subset in metrics.json). Blank: the full dev sets."))
    symmetric_pairs: list[Literal["qqp", "sts"]] = opt(factory=list, help=(
        "Pair tasks whose training pairs are also used swapped, (b, a) beside (a, b): paraphrase "
        "and similarity are symmetric relations, a cross-encoder's input is not."))

    def validate(self) -> None:
        _check(self.limit is None or self.limit >= 1, "data.limit must be >= 1")
        _check(self.eval_limit is None or self.eval_limit >= 1, "data.eval_limit must be >= 1")


@dataclass
class SmartConfig:
    """SMART (report 003): smoothness-inducing adversarial regularization of the
    supervised losses plus a Bregman proximal point term (core/losses/smart.py)."""
    weight: float = opt(0.0, help="SMART: weight of the adversarial smoothness term (report 003: 0.5); 0 = off.")
    noise_std: float = opt(1e-5, help="SMART: initial embedding noise ~ N(0, noise_std^2).")
    step_size: float = opt(1e-3, help="SMART: ascent step on the noise (l_inf-normalized gradient).")
    ascent_steps: int = opt(1, help="SMART: ascent steps on the noise.")
    epsilon: float | None = opt(None, help="SMART: l_inf radius the noise is projected to (blank: none).")
    bregman_weight: float = opt(0.0, help="Bregman proximal point: weight of the divergence from the momentum teacher; 0 = off.")
    momentum: float = opt(0.99, help="Bregman teacher <- momentum * teacher + (1 - momentum) * model.")

    def validate(self) -> None:
        _check(self.weight >= 0 and self.bregman_weight >= 0, "train.smart weights must be >= 0")
        _check(self.noise_std > 0 and self.step_size > 0, "train.smart.noise_std and step_size must be > 0")
        _check(self.ascent_steps >= 1, "train.smart.ascent_steps must be >= 1")
        _check(self.epsilon is None or self.epsilon > 0, "train.smart.epsilon must be > 0 or null")
        _check(0 <= self.momentum < 1, "train.smart.momentum must be in [0, 1)")

    @property
    def enabled(self) -> bool:
        return self.weight > 0 or self.bregman_weight > 0


@dataclass
class ContrastiveConfig:
    """Sentence-embedding objectives (sets: core/training/contrastive.py; losses: core/losses/objectives.py):
    MNRL, SimCSE, triplets."""
    scale: float = opt(20.0, help="MNRL: cosine similarities are multiplied by this (sentence-transformers: 20).")
    temperature: float = opt(0.05, help="SimCSE: cosine similarities are divided by this (report 003: 0.05).")
    sts_positive: float = opt(4.0, help="STS pairs scoring >= this are positive pairs.")
    sts_negative: float = opt(1.0, help="STS pairs scoring <= this are (hard) negatives.")
    negatives: int = opt(3, help="triplet: negatives per anchor (with the layout 'report', the ones from the anchor's dataset).")
    margin: float = opt(0.0, help="triplet: max(0, d(x, y) - logsumexp d(x, z) + margin).")
    max_examples: int | None = opt(None, help="Cap on the objective's training set (after shuffling).")
    symmetric: bool = opt(False, help="mnrl objective: average both directions (anchors rank positives and "
                                      "positives rank anchors).")
    triplet_layout: Literal["mixed", "report"] = opt("mixed", help=(
        "triplet negatives: 'mixed' = 1 from the anchor's dataset + negatives - 1 from random other "
        "datasets (our earlier layout); 'report' = report 001's: `negatives` from the anchor's "
        "dataset plus one from each other dataset, every sentence once as anchor."))

    def validate(self) -> None:
        _check(self.scale > 0, "train.contrastive.scale must be > 0")
        _check(self.temperature > 0, "train.contrastive.temperature must be > 0")
        _check(0 <= self.sts_negative < self.sts_positive <= 5,
               "train.contrastive needs 0 <= sts_negative < sts_positive <= 5")
        _check(self.negatives >= 1, "train.contrastive.negatives must be >= 1")
        _check(self.margin >= 0, "train.contrastive.margin must be >= 0")
        _check(self.max_examples is None or self.max_examples >= 2,
               "train.contrastive.max_examples must be >= 2 or null")


LossName = Literal["ce", "bce", "mse", "mse_cosine", "bce_score", "mnrl"]
# Which loss modules each task's batch may combine (core/losses/functions.py), and each task's own
# one (its default). MNRL may be added to a pair task's own loss or be its only loss
# (report 004, experiment 3: MNRL as the paraphrase objective, §4.3); with MNRL alone the
# task's head is not trained (nothing reads its output).
_KIND_LOSSES = {"multiclass": ({"ce"}, "ce"), "binary": ({"bce"}, "bce"),
                "regression": ({"mse", "mse_cosine", "bce_score"}, "mse")}
TASK_BASE_LOSSES = {t: _KIND_LOSSES[s.kind][0] for t, s in TASK_SPECS.items()}
TASK_LOSSES = {t: TASK_BASE_LOSSES[t] | ({"mnrl"} if s.pair else set()) for t, s in TASK_SPECS.items()}
DEFAULT_LOSS = {t: _KIND_LOSSES[s.kind][1] for t, s in TASK_SPECS.items()}


@dataclass
class LossTerm:
    """One loss module in a task's loss: ``weight * loss(batch)`` (core/losses/functions.py)."""
    name: LossName = opt("mse", help=(
        "ce = cross-entropy (SST); bce = binary cross-entropy with logits (Quora); mse = squared "
        "error of the 0-5 score (STS); mse_cosine = squared error of cos(u, v) against score / 5 "
        "(sentence-transformers' CosineSimilarityLoss); bce_score = binary cross-entropy of the "
        "score / 5 against the label / 5 (report 002's cross entropy for every task); mnrl = "
        "multiple negatives ranking on the batch's positive pairs (added to a pair task's own loss, "
        "or alone: report 004's experiment 3)."))
    weight: float = opt(1.0, help="The term's weight in the task's loss.")
    symmetric: bool = opt(False, help="mnrl: also rank the anchors for each positive and average both "
                                      "directions (MultipleNegativesSymmetricRankingLoss).")
    hard_negatives: bool = opt(False, help=(
        "mnrl: add the second sentences of the batch's negative pairs (Quora non-duplicates, STS <= "
        "contrastive.sts_negative) as extra candidates. Report 004 never does this."))

    def validate(self, where: str) -> None:
        _check(self.weight >= 0, f"{where}.weight must be >= 0, got {self.weight}")
        _check(self.name == "mnrl" or not (self.symmetric or self.hard_negatives),
               f"{where}: symmetric / hard_negatives are options of mnrl, not of {self.name!r}")


Objective = Literal["supervised", "mnrl", "simcse_unsup", "simcse_sup", "triplet"]
CONTRASTIVE_OBJECTIVES = ("mnrl", "simcse_unsup", "simcse_sup", "triplet")


@dataclass
class TrainConfig:
    tasks: list[TaskName] = opt(factory=lambda: list(ALL_TASKS), help=(
        "Tasks this stage trains (round_robin: one batch of each per step; sequential: in this order)."))
    objective: Objective = opt("supervised", help=(
        "What is optimized: 'supervised' = the task losses through the heads; the others train the "
        "encoder alone on sentence-embedding objectives built from the tasks' training data "
        "(core/training/contrastive.py)."))
    schedule: Literal["round_robin", "sequential", "mtdnn"] = opt("round_robin", help=(
        "How tasks share the steps (core/training/schedules.py): round_robin = one batch of every task per "
        "step, joint loss; sequential = each epoch all of task 1, then task 2 ...; mtdnn = all "
        "tasks' batches merged and shuffled, one task per step."))
    backward: Literal["joint", "cyclic"] = opt("joint", help=(
        "round_robin: 'joint' = one optimizer step on the summed loss of all tasks' batches; "
        "'cyclic' = one backward and optimizer step per task, in train.tasks order "
        "(report 003's 'joint loss x')."))
    task_sampling: Literal["proportional", "truncate", "resample", "ratio"] = opt("proportional", help=(
        "sequential / mtdnn: batches each task gives an epoch. proportional = its size; truncate / "
        "resample = all tasks cut / resampled to the smallest / largest; ratio = task_ratio."))
    task_ratio: dict[str, float] = opt(factory=dict, help="task_sampling ratio: e.g. {sst: 1, qqp: 2, sts: 1}.")
    epochs: int = opt(1, help="Passes of steps_per_epoch steps, each followed by a dev evaluation.")
    epoch_fraction: float = opt(1.0, help=(
        "Run this fraction of every epoch's steps (in (0, 1]; the natural or stated "
        "steps_per_epoch, scaled and rounded, task proportions kept): a declared budget that "
        "shortens a recipe's epochs, e.g. a study on CPUs."))
    steps_per_epoch: int | Literal["min", "max"] = opt("min", help=(
        "An integer, or 'min' / 'max' (round_robin: batches in the smallest / largest task; "
        "sequential / mtdnn: the natural epoch of task_sampling)."))
    batch_size: int = opt(32, help="Examples per task batch.")
    task_batch_size: dict[str, int] = opt(factory=dict, help=(
        "Per-task batch sizes, e.g. {sst: 64, qqp: 32}; tasks not named use batch_size."))
    eval_batch_size: int = opt(128, help="Batch size of dev evaluation.")
    lr: float = opt(2e-5, help="Encoder learning rate.")
    head_lr: float | None = opt(1e-3, help="Learning rate of the task heads (blank: same as lr).")
    weight_decay: float = opt(0.01, help="AdamW weight decay (not on biases and LayerNorm).")
    warmup_ratio: float = opt(0.1, help="Fraction of the stage's steps of linear warm-up, then lr_schedule.")
    lr_schedule: Literal["linear", "constant"] = opt("linear", help=(
        "After the warm-up: 'linear' = decay to 0 at the stage's last step; 'constant' = the learning "
        "rate held (a report that states one rate and no schedule; the DFP starter code's)."))
    grad_clip: float | None = opt(1.0, help="Clip the gradient norm to this (blank: no clipping).")
    freeze_encoder: bool = opt(False, help="Train the heads only; the encoder's outputs are then computed once and cached.")
    optimizer: Literal["adamw", "torch_adamw"] = opt("adamw", help="adamw = our own AdamW (core/training/optim.py); torch_adamw = torch's fused one.")
    loss_weights: dict[str, float] = opt(factory=lambda: {t: 1.0 for t in ALL_TASKS},
                                         help="Weight of each task's loss in the joint loss.")
    loss_weighting: Literal["fixed", "dev", "uncertainty"] = opt("fixed", help=(
        "fixed = loss_weights; dev = re-weighted each epoch from the last dev scores (worse task, "
        "larger weight); uncertainty = learned (Kendall et al. 2018). core/losses/weighting.py"))
    losses: dict[str, list[LossTerm]] = opt(factory=dict, help=(
        "Loss modules of each task's batch, e.g. {qqp: [{name: bce}, {name: mnrl, weight: 0.5}]} "
        "(core/losses/functions.py); a task not named uses ce / bce / mse (+ mnrl_weight * mnrl on pair tasks)."))
    class_balanced: list[Literal["sst", "qqp"]] = opt(factory=list, help="Tasks drawn class-balanced (inverse label frequency, report 001).")
    mnrl_weight: float = opt(0.0, help=(
        "+ weight * MNRL on the positive pairs of qqp/sts batches (shorthand for an mnrl term in "
        "train.losses of both pair tasks)."))
    layer_decay: float = opt(1.0, help=(
        "Layer-wise learning-rate decay: the top encoder layer trains at lr, each layer below at "
        "decay times the one above; 1.0 = one learning rate for the whole encoder."))
    label_smoothing: float = opt(0.0, help="SST cross-entropy label smoothing (Szegedy et al. 2016).")
    hybrid_aux_weight: float = opt(1.0, help="hybrid heads: + weight * (loss of each branch alone).")

    smart: SmartConfig = field(default_factory=SmartConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    max_steps: int | None = opt(None, help="Stop after N optimizer steps (blank: no limit; every stage).")
    seed: int = opt(0, help="Seed of weights, batches and dropout.")
    device: Literal["auto", "cpu", "cuda"] = opt("auto", help="auto picks a GPU when one is visible.")
    precision: Literal["fp32", "bf16"] = opt("fp32", help=(
        "bf16 = forward and loss under bf16 autocast (CUDA, and CPUs with AVX-512 BF16)."))
    compile: bool = opt(False, help="torch.compile the encoder.")
    log_every: int = opt(10, help="Log a step event every N optimizer steps.")
    resume_every: int = opt(200, help=(
        "Save resume state (resume/, used by --resume) every N optimizer steps as well as at each "
        "epoch end (200 steps: a few minutes on 2 CPU cores, one ~100 MB write)."))
    dev_eval: Literal["epoch", "stage_end", "none"] = opt("epoch", help=(
        "When the stage is evaluated on dev: after every epoch, only after its last ('stage_end': "
        "a stage whose epochs are not checkpoint candidates, e.g. an encoder pre-training stage), "
        "or never ('none': a stage before the last); epochs without one log their mean training "
        "loss in an epoch_done event."))
    select: Literal["mean", "last", "majority"] = opt("mean", help=(
        "Which epoch of the last stage becomes the checkpoint: 'mean' = the best mean dev score of "
        "the trained tasks; 'last' = the last epoch (no choice on dev); 'majority' = an epoch "
        "replaces the checkpoint when it is better on more than half of the trained tasks' primary "
        "metrics (report 000 §5.2: two of three)."))

    def batch_size_of(self, task: str) -> int:
        return self.task_batch_size.get(task, self.batch_size)

    def task_losses(self, task: str) -> list[LossTerm]:
        """The loss modules of a task's batch: ``losses[task]``, else the task's own loss
        plus ``mnrl_weight`` * MNRL on pair tasks (the behaviour before ``losses`` existed)."""
        if task in self.losses:
            return list(self.losses[task])
        terms = [LossTerm(DEFAULT_LOSS[task])]
        if task in ("qqp", "sts") and self.mnrl_weight > 0:
            terms.append(LossTerm("mnrl", self.mnrl_weight))
        return terms

    def validate(self) -> None:
        _check(len(self.tasks) > 0, "train.tasks must name at least one task")
        _check(len(set(self.tasks)) == len(self.tasks), "train.tasks has duplicates")
        _check(self.epochs >= 1, f"train.epochs must be >= 1, got {self.epochs}")
        _check(self.batch_size >= 1 and self.eval_batch_size >= 1, "batch sizes must be >= 1")
        unknown = set(self.task_batch_size) - set(ALL_TASKS)
        _check(not unknown, f"train.task_batch_size has unknown tasks {sorted(unknown)}")
        _check(all(b >= 1 for b in self.task_batch_size.values()), "train.task_batch_size values must be >= 1")
        _check(not isinstance(self.steps_per_epoch, int) or self.steps_per_epoch >= 1,
               "train.steps_per_epoch must be >= 1, 'min' or 'max'")
        _check(0 < self.epoch_fraction <= 1, f"train.epoch_fraction must be in (0, 1], got {self.epoch_fraction}")
        _check(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        _check(self.head_lr is None or self.head_lr > 0, "train.head_lr must be > 0")
        _check(self.weight_decay >= 0, "train.weight_decay must be >= 0")
        _check(0 <= self.warmup_ratio < 1, "train.warmup_ratio must be in [0, 1)")
        _check(self.grad_clip is None or self.grad_clip > 0, "train.grad_clip must be > 0 or null")
        _check(self.max_steps is None or self.max_steps >= 1, "train.max_steps must be >= 1")
        _check(self.log_every >= 1, "train.log_every must be >= 1")
        _check(isinstance(self.resume_every, int) and not isinstance(self.resume_every, bool)
               and self.resume_every >= 1,
               f"train.resume_every must be an integer >= 1 (optimizer steps), got {self.resume_every!r}")
        unknown = set(self.loss_weights) - set(ALL_TASKS)
        _check(not unknown, f"train.loss_weights has unknown tasks {sorted(unknown)}")
        _check(all(w >= 0 for w in self.loss_weights.values()), "train.loss_weights must be >= 0")
        unknown = set(self.task_ratio) - set(ALL_TASKS)
        _check(not unknown, f"train.task_ratio has unknown tasks {sorted(unknown)}")
        _check(all(r > 0 for r in self.task_ratio.values()), "train.task_ratio values must be > 0")
        if self.task_sampling == "ratio":
            missing = [t for t in self.tasks if t not in self.task_ratio]
            _check(not missing, f"train.task_sampling 'ratio' needs train.task_ratio for every task; "
                                f"missing {missing}, e.g. task_ratio: {{sst: 1, qqp: 2, sts: 1}}")
        _check(self.mnrl_weight >= 0, "train.mnrl_weight must be >= 0")
        unknown = set(self.losses) - set(ALL_TASKS)
        _check(not unknown, f"train.losses has unknown tasks {sorted(unknown)}")
        for task, terms in self.losses.items():
            where = f"train.losses.{task}"
            for i, term in enumerate(terms):
                term.validate(f"{where}[{i}]")
            names = [t.name for t in terms]
            bad = sorted(set(names) - TASK_LOSSES[task])
            _check(not bad, f"{where}: {bad} cannot train {task}; allowed: {sorted(TASK_LOSSES[task])}")
            _check(len(set(names)) == len(names), f"{where} names a loss twice: {names}")
            _check(bool(names), f"{where} is empty: name at least one loss, e.g. [{{name: {DEFAULT_LOSS[task]}}}]")
        _check(0 < self.layer_decay <= 1, f"train.layer_decay must be in (0, 1], got {self.layer_decay}")
        _check(0 <= self.label_smoothing < 1, f"train.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        _check(self.hybrid_aux_weight >= 0, "train.hybrid_aux_weight must be >= 0")
        self.smart.validate()
        self.contrastive.validate()
        if self.objective != "supervised":
            _check(not self.freeze_encoder, f"train.objective {self.objective!r} trains the encoder; "
                                            f"it cannot be combined with freeze_encoder")


@dataclass
class Config:
    name: str = opt("run", help="Name of the run (the job's checkpoint directory gets its own, unique name).")
    description: str = opt("", help="One line on what the recipe is.")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stages: list[dict[str, Any]] = opt(factory=list, help=(
        "A multi-stage recipe: each stage is a mapping with a name and any train fields to change "
        "for that stage, e.g. {name: quora, tasks: [qqp], epochs: 1}; every stage starts from the "
        "previous stage's weights; skip: true leaves a stage out (--set stages.NAME.skip=true). "
        "Empty: one stage = train."))

    def validate(self) -> "Config":
        self.model.validate()
        self.data.validate()
        self.train.validate()
        plan = self.stage_plan()
        _check(plan[-1][1].dev_eval != "none",
               "the last stage's epochs are the checkpoint candidates: its train.dev_eval cannot be 'none'")
        for name, train in plan:
            where = f"stage {name!r}: " if self.stages else ""
            if train.objective == "supervised":
                for task in ("qqp", "sts"):
                    mode = getattr(self.model, task).mode
                    needs = sorted({t.name for t in train.task_losses(task)} & {"mnrl", "mse_cosine"})
                    if task in train.tasks and needs and mode not in ("bi", "cosine", "hybrid"):
                        hint = ("train.mnrl_weight" if task not in train.losses else f"train.losses.{task} "
                                f"({', '.join(needs)})")
                        raise ConfigError(f"{where}{hint} needs sentence embeddings of both sides: "
                                          f"set model.{task}.mode to bi or cosine (got {mode!r})")
                self._check_sts_head_trained(where, train)
            if train.objective == "supervised" and train.freeze_encoder:
                sts = self.model.sts
                weightless = (sts.mode == "cosine" and sts.arch in ("mlp", "pooled_linear")
                              and not sts.out_features and self.model.shared_projection is None)
                _check("sts" not in train.tasks or not weightless,
                       f"{where}train.freeze_encoder with model.sts.mode 'cosine' leaves nothing to "
                       f"train for STS (the cosine head has no weights): use sts mode bi or cross, "
                       f"or unfreeze the encoder")
        return self

    def _check_sts_head_trained(self, where: str, train: "TrainConfig") -> None:
        """An STS loss of ``mse_cosine`` alone (MNRL aside) reads the two sentence vectors,
        never the head's output: a bi head's MLP or a hybrid head's combiner and cross
        branch, which make the STS prediction, would stay as initialised."""
        mode = self.model.sts.mode
        names = {t.name for t in train.task_losses("sts")}
        if "sts" in train.tasks and mode in ("bi", "hybrid") and "mse_cosine" in names and names <= {"mse_cosine", "mnrl"}:
            raise ConfigError(
                f"{where}train.losses.sts is mse_cosine alone, which trains the sentence vectors (cos(u, v)) "
                f"but never the {mode} head that makes the STS prediction: add the head's own loss "
                f"(train.losses.sts: [{{name: mse}}, {{name: mse_cosine}}]) or set model.sts.mode to cosine "
                f"(whose prediction is that cosine)")

    # ------------------------------------------------------------------ stages
    def stage_plan(self) -> list[tuple[str, TrainConfig]]:
        """``(name, TrainConfig)`` of every stage in order: ``train`` with each stage's
        fields applied on top (nested sections such as ``smart`` are merged key by key)."""
        if not self.stages:
            return [("train", self.train)]
        base = dataclasses.asdict(self.train)
        plan, names = [], set()
        for i, stage in enumerate(self.stages):
            where = f"stages[{i}]"
            _check(isinstance(stage, dict), f"{where} must be a mapping with a name and train fields")
            name = stage.get("name")
            _check(isinstance(name, str) and bool(name.strip()),
                   f"{where} needs a name, e.g. {{name: joint, tasks: [sst, qqp, sts]}}")
            _check(name not in names, f"{where}: the stage name {name!r} is used twice")
            names.add(name)
            skip = stage.get("skip", False)
            _check(isinstance(skip, bool), f"{where} ({name}): skip must be true or false, got {skip!r}")
            if skip:   # a stage the recipe defines but this run leaves out (e.g. a Table 1 column off)
                continue
            fields = {k: v for k, v in stage.items() if k not in ("name", "skip")}
            fixed = sorted(set(fields) & set(RUN_LEVEL_TRAIN_FIELDS))
            _check(not fixed, f"{where} ({name}): {', '.join(fixed)} cannot be set per stage; "
                              f"set them under train: (a --max-steps limit applies to every stage)")
            try:
                train = _build(TrainConfig, _deep_merge(base, fields), "train")
                train.validate()
            except ConfigError as e:
                raise ConfigError(f"{where} ({name}): {e}") from None
            plan.append((name, train))
        _check(bool(plan), "every stage is skipped: a recipe needs at least one stage to run")
        return plan

    def head_tasks(self) -> list[str]:
        """Tasks that get a head: every task some supervised stage trains."""
        tasks = {t for _, train in self.stage_plan() if train.objective == "supervised" for t in train.tasks}
        return [t for t in ALL_TASKS if t in tasks]

    # --------------------------------------------------------------- conversion
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> "Config":
        config = _build(cls, raw or {}, "").validate()
        check_config(config)   # core/config/limits.py: the declared range of every number
        return config

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> "Config":
        path = Path(path)
        raw = read_yaml_mapping(path, "config file", "a mapping of sections")
        raw.setdefault("name", path.stem)
        try:
            return cls.from_dict(apply_overrides(raw, overrides or []))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def with_overrides(self, overrides: list[str]) -> "Config":
        return Config.from_dict(apply_overrides(self.to_dict(), overrides))


# train fields a stage may not change: they describe the run, not one stage.
RUN_LEVEL_TRAIN_FIELDS = ("max_steps", "device", "precision", "compile")


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in ("loss_weights", "task_ratio"):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a raw dict copy.

    A ``train.*`` override holds for the whole run: in a multi-stage recipe the same
    key is also removed from every stage, so all stages inherit the new value (e.g.
    ``--set train.batch_size=8`` makes every stage use batch 8). ``stages.NAME.key=value``
    sets a train field of one stage, found by its name (e.g.
    ``stages.triplet.steps_per_epoch=40``); overrides apply in order, so a
    ``stages.NAME.*`` after a ``train.*`` of the same key wins for that stage."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        parsed = parse_override_value(key.strip(), value)
        if parts[0] == "stages" and len(parts) >= 3:
            _set_stage_field(raw, parts[1], parts[2:], parsed, key.strip())
            continue
        node = raw
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part} is not a section")
        node[parts[-1]] = parsed
        if parts[0] == "train" and len(parts) > 1 and isinstance(raw.get("stages"), list):
            for stage in raw["stages"]:
                _drop_path(stage, parts[1:])
    return raw


def _set_stage_field(raw: dict[str, Any], name: str, path: list[str], value: Any, key: str) -> None:
    """``stages.NAME.a.b=value``: set ``a.b`` in the stage named NAME."""
    stages = raw.get("stages")
    names = [s.get("name") for s in stages if isinstance(s, dict)] if isinstance(stages, list) else []
    if name not in names:
        raise ConfigError(f"--set {key}: the recipe has no stage named {name!r}"
                          + (f"; its stages: {', '.join(map(str, names))}" if names else " (it has no stages)"))
    node = stages[names.index(name)]
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part} is not a section")
    node[path[-1]] = value


def _drop_path(node: Any, path: list[str]) -> None:
    for part in path[:-1]:
        if not isinstance(node, dict) or not isinstance(node.get(part), dict):
            return
        node = node[part]
    if isinstance(node, dict):
        node.pop(path[-1], None)


# -------------------------------------------------------------- typed building
def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _build(cls, raw: Any, where: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(_join(where, k) for k in unknown)}; "
                          f"allowed here: {', '.join(names)}")
    kwargs = {k: _coerce(hints[k], v, _join(where, k)) for k, v in raw.items()}
    return cls(**kwargs)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _coerce(tp, value, where: str):
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[-1] if len(errors) == 1 else
                          f"{where}: {value!r} fits none of the allowed forms ({'; '.join(errors)})")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where} must be one of {list(allowed)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        (item,) = get_args(tp)
        return [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        kt, vt = get_args(tp)
        return {_coerce(kt, k, where): _coerce(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "2e-5" as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            return float(value)
        except OverflowError:   # an integer beyond a float's range, e.g. 10**400
            raise ConfigError(f"{where} = {str(value)[:20]}... is too large for a number") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    if tp is Any or tp is typing.Any:
        return value
    raise TypeError(f"config type {tp} at {where} is not supported")  # our bug, not the user's


def read_yaml_mapping(path: Path, what: str, shape: str) -> dict:
    """The YAML mapping in ``path`` (an empty file is ``{}``); a missing file, invalid YAML
    or another top level raises :class:`ConfigError` naming ``what`` and the ``shape``
    expected. Recipes and study plans are read through it."""
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        raw = safe_yaml_load(path.read_text()) or {}   # core/config/limits.py: no aliases, no 5,000-digit numbers
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} cannot be read as UTF-8 text ({e})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be {shape}")
    return raw


# ----------------------------------------------------------------- option help
def option_help(cls: type = None, prefix: str = "") -> dict[str, str]:
    """``{"train.lr": "Encoder learning rate.", ...}``: every recipe field's one-line help,
    from the config dataclasses' field metadata (the one place options are explained;
    read by ``python -m core.train --help`` and by the app's Train page)."""
    cls = Config if cls is None else cls
    hints = get_type_hints(cls)
    out: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        key, tp = f"{prefix}{f.name}", hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(option_help(tp, key + "."))
        elif f.metadata.get("help"):
            out[key] = f.metadata["help"]
    return out


def format_option_help(width: int = 100) -> str:
    """The recipe fields and their help as text (``python -m core.train --help``)."""
    import textwrap
    lines = ["recipe fields (YAML keys; any of them as --set KEY=VALUE):"]
    for key, text in option_help().items():
        lines.append(f"  {key}")
        lines += textwrap.wrap(text, width, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)
