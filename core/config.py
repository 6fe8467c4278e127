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

TaskName = Literal["sst", "qqp", "sts"]
ALL_TASKS = ("sst", "qqp", "sts")


@dataclass
class HeadConfig:
    """A task head: reduce token states to a vector, (pair tasks) combine the two
    sentences, then an MLP to the output."""
    mode: Literal["single", "bi", "cross", "cosine", "hybrid"] = "bi"
    # bi: each sentence encoded alone, features of (u, v) -> MLP;  cross: the joint
    # "[CLS] a [SEP] b [SEP]" -> MLP;  cosine (similarity): (1 + cos(u, v)) * 5 / 2;
    # hybrid: a cross-encoder branch (joint input -> MLP) and a bi-encoder cosine branch
    # (qqp: learned scale * (cos - centre); sts: 5 * cos), combined by a learned linear
    # layer initialized to their average (a two-member ensemble sharing one encoder).
    # Each branch is also trained on its own (train.hybrid_aux_weight).
    features: list[Literal["u", "v", "abs_diff", "prod"]] = field(
        default_factory=lambda: ["u", "v", "abs_diff", "prod"])
    cosine_feature: bool = False        # append cos(u, v) to the bi-encoder features
    # mode cosine: "linear" = 5 * cos(u, v) (MSE on it = sentence-transformers'
    # CosineSimilarityLoss; predictions clipped to [0, 5]); "affine" = (1 + cos) * 5 / 2
    # (report 000), which maps unrelated sentences (cos ~ 0) to 2.5.
    cosine_map: Literal["linear", "affine"] = "linear"
    layers: int = 1                     # FC layers; 1 = a single linear layer (deep_ffn: blocks)
    hidden: int = 256                   # width of hidden FC layers (cnn: channels per kernel,
                                        # bilstm: hidden units per direction)
    dropout: float = 0.1
    # What reads the encoder output (core/heads.py): "mlp" = pooled vector -> MLP;
    # "deep_ffn" = pooled vector -> `layers` x (Linear, LayerNorm, Dropout, ReLU) -> Linear
    # (report 001); "cnn" / "bilstm" = a CNN or BiLSTM over the token states replaces the
    # pooling, then the MLP (report 002).
    arch: Literal["mlp", "deep_ffn", "cnn", "bilstm"] = "mlp"
    kernel_sizes: list[int] = field(default_factory=lambda: [2, 3, 4])   # cnn only

    def validate(self, where: str) -> None:
        _check(self.layers >= 1, f"{where}.layers must be >= 1, got {self.layers}")
        _check(self.hidden >= 1, f"{where}.hidden must be >= 1, got {self.hidden}")
        _check(0.0 <= self.dropout < 1.0, f"{where}.dropout must be in [0, 1), got {self.dropout}")
        _check(len(self.features) > 0, f"{where}.features must not be empty")
        _check(len(self.kernel_sizes) > 0 and all(k >= 1 for k in self.kernel_sizes),
               f"{where}.kernel_sizes must be a non-empty list of sizes >= 1, got {self.kernel_sizes}")
        _check(not (self.mode == "hybrid" and self.arch != "mlp"),
               f"{where}: mode 'hybrid' reads pooled vectors; use arch mlp (got {self.arch!r})")
        _check(not (self.mode == "cosine" and self.arch == "deep_ffn"),
               f"{where}: arch 'deep_ffn' needs an output layer, but mode 'cosine' has none; "
               f"use mode bi or cross, or arch mlp")


@dataclass
class PromptConfig:
    """Q&ABERT prompting (report 001): every task becomes a (question, context) pair fed
    jointly as ``[CLS] question [SEP] context [SEP]``, the question as segment A."""
    enabled: bool = False
    sst: str = "Is this review positive or negative?"
    qqp: str = "Does the first question paraphrase the second question?"
    sts: str = "How similar are the first sentence and the second sentence?"
    pair_context: str = "First sentence: {a} Second sentence: {b}"   # context of pair tasks

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
    encoder: str = "minilm"             # "minilm" (packaged) or an HF-format BERT directory
    pooling: Literal["cls", "mean", "max", "mean_max"] = "mean"
    max_len: int = 128                  # wordpieces per input, special tokens included
    sst: HeadConfig = field(default_factory=_sst_head)
    qqp: HeadConfig = field(default_factory=HeadConfig)
    sts: HeadConfig = field(default_factory=HeadConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)

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
        self.prompts.validate()
        if self.prompts.enabled:
            for task in ("qqp", "sts"):
                _check(getattr(self, task).mode == "cross",
                       f"model.prompts.enabled feeds each pair as one (question, context) input: "
                       f"set model.{task}.mode to 'cross' (got {getattr(self, task).mode!r})")


@dataclass
class DataConfig:
    dir: str = "data"
    limit: int | None = None            # keep the first N training examples of each task
    eval_limit: int | None = None       # evaluate on the first N dev examples of each task
    # Pair tasks whose training pairs are also used swapped, (b, a) beside (a, b):
    # paraphrase and similarity are symmetric relations, a cross-encoder's input is not.
    symmetric_pairs: list[Literal["qqp", "sts"]] = field(default_factory=list)

    def validate(self) -> None:
        _check(self.limit is None or self.limit >= 1, "data.limit must be >= 1")
        _check(self.eval_limit is None or self.eval_limit >= 1, "data.eval_limit must be >= 1")


@dataclass
class SmartConfig:
    """SMART (report 003): smoothness-inducing adversarial regularization of the
    supervised losses plus a Bregman proximal point term (core/smart.py)."""
    weight: float = 0.0                 # lambda_s of the smoothness term; 0 = SMART off
    noise_std: float = 1e-5             # initial embedding noise ~ N(0, noise_std^2)
    step_size: float = 1e-3             # ascent step on the noise (l_inf-normalized gradient)
    ascent_steps: int = 1
    epsilon: float | None = None        # l_inf radius the noise is projected to (null: none)
    bregman_weight: float = 0.0         # mu of the proximal term against the momentum teacher
    momentum: float = 0.99              # teacher <- momentum * teacher + (1 - momentum) * model

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
    """Sentence-embedding objectives (core/contrastive.py): MNRL, SimCSE, triplets."""
    scale: float = 20.0                 # MNRL: cosine similarities are multiplied by this
    temperature: float = 0.05           # SimCSE: cosine similarities are divided by this
    sts_positive: float = 4.0           # STS pairs scoring >= this are positive pairs
    sts_negative: float = 1.0           # STS pairs scoring <= this are (hard) negatives
    negatives: int = 3                  # triplet: negatives per anchor
    margin: float = 0.0                 # triplet: max(0, d(x, y) - logsumexp d(x, z) + margin)
    max_examples: int | None = None     # cap on the objective's training set (after shuffling)

    def validate(self) -> None:
        _check(self.scale > 0, "train.contrastive.scale must be > 0")
        _check(self.temperature > 0, "train.contrastive.temperature must be > 0")
        _check(0 <= self.sts_negative < self.sts_positive <= 5,
               "train.contrastive needs 0 <= sts_negative < sts_positive <= 5")
        _check(self.negatives >= 1, "train.contrastive.negatives must be >= 1")
        _check(self.margin >= 0, "train.contrastive.margin must be >= 0")
        _check(self.max_examples is None or self.max_examples >= 2,
               "train.contrastive.max_examples must be >= 2 or null")


Objective = Literal["supervised", "mnrl", "simcse_unsup", "simcse_sup", "triplet"]
CONTRASTIVE_OBJECTIVES = ("mnrl", "simcse_unsup", "simcse_sup", "triplet")


@dataclass
class TrainConfig:
    tasks: list[TaskName] = field(default_factory=lambda: list(ALL_TASKS))
    # What is optimized: "supervised" = the task losses through the heads; the others
    # train the encoder alone on sentence-embedding objectives built from the tasks'
    # training data (see core/contrastive.py).
    objective: Objective = "supervised"
    # How tasks share the steps (core/schedules.py): round_robin = one batch of every
    # task per step, joint loss; sequential = each epoch all of task 1, then task 2 ...;
    # mtdnn = all tasks' batches merged and shuffled, one task per step.
    schedule: Literal["round_robin", "sequential", "mtdnn"] = "round_robin"
    # sequential / mtdnn: batches each task gives an epoch. proportional = its size;
    # truncate / resample = all tasks cut / resampled to the smallest / largest;
    # ratio = task_ratio (e.g. {sst: 1, qqp: 2, sts: 1}).
    task_sampling: Literal["proportional", "truncate", "resample", "ratio"] = "proportional"
    task_ratio: dict[str, float] = field(default_factory=dict)
    epochs: int = 1
    # round_robin: "min" / "max" = the smallest / largest task's batches per epoch;
    # sequential / mtdnn: "min" / "max" = the natural epoch of task_sampling; a number
    # rescales the task_sampling counts to that many steps (same proportions).
    steps_per_epoch: int | Literal["min", "max"] = "min"
    batch_size: int = 32
    eval_batch_size: int = 128
    lr: float = 2e-5                    # encoder learning rate
    head_lr: float | None = 1e-3        # heads' learning rate (None: same as lr)
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_clip: float | None = 1.0
    freeze_encoder: bool = False        # "heads only": the encoder gets no gradient
    optimizer: Literal["adamw", "torch_adamw"] = "adamw"
    loss_weights: dict[str, float] = field(default_factory=lambda: {t: 1.0 for t in ALL_TASKS})
    # fixed = loss_weights; dev = re-weighted each epoch from the last dev scores (worse
    # task, larger weight); uncertainty = learned (Kendall et al. 2018). core/weighting.py
    loss_weighting: Literal["fixed", "dev", "uncertainty"] = "fixed"
    class_balanced: list[Literal["sst", "qqp"]] = field(default_factory=list)  # inverse-frequency sampling
    mnrl_weight: float = 0.0            # + weight * MNRL on the positive pairs of qqp/sts batches
    # Layer-wise learning-rate decay (Clark et al. 2020, ELECTRA; Sun et al. 2019): the top
    # encoder layer trains at lr, each layer below at decay times the one above, the
    # embeddings at lr * decay^n_layers. 1.0 = one learning rate for the whole encoder.
    layer_decay: float = 1.0
    label_smoothing: float = 0.0        # SST cross-entropy label smoothing (Szegedy et al. 2016)
    hybrid_aux_weight: float = 1.0      # hybrid heads: + weight * (loss of each branch alone)

    smart: SmartConfig = field(default_factory=SmartConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    max_steps: int | None = None        # stop after N optimizer steps (smoke runs)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Speed (core/distributed.py for several GPUs): bf16 = forward and loss under bf16
    # autocast (CUDA, and CPUs with AVX-512 BF16); compile = torch.compile the encoder.
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False
    log_every: int = 10
    # Resume state (``resume/``, used by --resume) every N optimizer steps as well as
    # at each epoch end. 200 steps is a few minutes of work on 2 CPU cores (~0.5-1 s a
    # step for the full-fine-tuning recipes) and costs one ~100 MB write.
    resume_every: int = 200

    def validate(self) -> None:
        _check(len(self.tasks) > 0, "train.tasks must name at least one task")
        _check(len(set(self.tasks)) == len(self.tasks), "train.tasks has duplicates")
        _check(self.epochs >= 1, f"train.epochs must be >= 1, got {self.epochs}")
        _check(self.batch_size >= 1 and self.eval_batch_size >= 1, "batch sizes must be >= 1")
        _check(not isinstance(self.steps_per_epoch, int) or self.steps_per_epoch >= 1,
               "train.steps_per_epoch must be >= 1, 'min' or 'max'")
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
    name: str = "run"
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # A multi-stage recipe: each stage is a mapping with a ``name`` and any ``train``
    # fields to change for that stage, e.g. ``{name: quora, tasks: [qqp], epochs: 1}``;
    # every stage starts from the previous stage's weights. Empty: one stage = ``train``.
    stages: list[dict[str, Any]] = field(default_factory=list)

    def validate(self) -> "Config":
        self.model.validate()
        self.data.validate()
        self.train.validate()
        plan = self.stage_plan()
        for name, train in plan:
            where = f"stage {name!r}: " if self.stages else ""
            if train.objective == "supervised" and train.mnrl_weight > 0:
                for task in ("qqp", "sts"):
                    _check(task not in train.tasks or getattr(self.model, task).mode in ("bi", "cosine", "hybrid"),
                           f"{where}train.mnrl_weight needs sentence embeddings of both sides: "
                           f"set model.{task}.mode to bi or cosine (got {getattr(self.model, task).mode!r})")
            if train.objective == "supervised" and train.freeze_encoder:
                _check("sts" not in train.tasks or self.model.sts.mode != "cosine",
                       f"{where}train.freeze_encoder with model.sts.mode 'cosine' leaves nothing to "
                       f"train for STS (the cosine head has no weights): use sts mode bi or cross, "
                       f"or unfreeze the encoder")
        return self

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
            fields = {k: v for k, v in stage.items() if k != "name"}
            fixed = sorted(set(fields) & set(RUN_LEVEL_TRAIN_FIELDS))
            _check(not fixed, f"{where} ({name}): {', '.join(fixed)} cannot be set per stage; "
                              f"set them under train: (a --max-steps limit applies to every stage)")
            try:
                train = _build(TrainConfig, _deep_merge(base, fields), "train")
                train.validate()
            except ConfigError as e:
                raise ConfigError(f"{where} ({name}): {e}") from None
            plan.append((name, train))
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
        return _build(cls, raw or {}, "").validate()

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> "Config":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
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
    ``--set train.batch_size=8`` makes every stage use batch 8)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            parsed = value
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
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    if tp is Any or tp is typing.Any:
        return value
    raise TypeError(f"config type {tp} at {where} is not supported")  # our bug, not the user's


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    return Config.from_yaml(path, overrides)
