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
    mode: Literal["single", "bi", "cross", "cosine"] = "bi"
    # bi: each sentence encoded alone, features of (u, v) -> MLP;  cross: the joint
    # "[CLS] a [SEP] b [SEP]" -> MLP;  cosine (similarity): (1 + cos(u, v)) * 5 / 2.
    features: list[Literal["u", "v", "abs_diff", "prod"]] = field(
        default_factory=lambda: ["u", "v", "abs_diff", "prod"])
    cosine_feature: bool = False        # append cos(u, v) to the bi-encoder features
    layers: int = 1                     # FC layers; 1 = a single linear layer
    hidden: int = 256                   # width of hidden FC layers
    dropout: float = 0.1

    def validate(self, where: str) -> None:
        _check(self.layers >= 1, f"{where}.layers must be >= 1, got {self.layers}")
        _check(self.hidden >= 1, f"{where}.hidden must be >= 1, got {self.hidden}")
        _check(0.0 <= self.dropout < 1.0, f"{where}.dropout must be in [0, 1), got {self.dropout}")
        _check(len(self.features) > 0, f"{where}.features must not be empty")


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

    def validate(self) -> None:
        _check(8 <= self.max_len <= 512, f"model.max_len must be in [8, 512], got {self.max_len}")
        _check(self.sst.mode == "single", "model.sst.mode must be 'single' (one sentence)")
        for task in ("qqp", "sts"):
            head = getattr(self, task)
            _check(head.mode in ("bi", "cross", "cosine"),
                   f"model.{task}.mode must be bi, cross or cosine, got {head.mode!r}")
        _check(self.qqp.mode != "cosine", "model.qqp.mode 'cosine' is for similarity only")
        for task in ALL_TASKS:
            getattr(self, task).validate(f"model.{task}")


@dataclass
class DataConfig:
    dir: str = "data"
    limit: int | None = None            # keep the first N training examples of each task
    eval_limit: int | None = None       # evaluate on the first N dev examples of each task

    def validate(self) -> None:
        _check(self.limit is None or self.limit >= 1, "data.limit must be >= 1")
        _check(self.eval_limit is None or self.eval_limit >= 1, "data.eval_limit must be >= 1")


@dataclass
class TrainConfig:
    tasks: list[TaskName] = field(default_factory=lambda: list(ALL_TASKS))
    schedule: Literal["round_robin"] = "round_robin"
    epochs: int = 1
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
    max_steps: int | None = None        # stop after N optimizer steps (smoke runs)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    log_every: int = 10

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
        unknown = set(self.loss_weights) - set(ALL_TASKS)
        _check(not unknown, f"train.loss_weights has unknown tasks {sorted(unknown)}")
        _check(all(w >= 0 for w in self.loss_weights.values()), "train.loss_weights must be >= 0")


@dataclass
class Config:
    name: str = "run"
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> "Config":
        self.model.validate()
        self.data.validate()
        self.train.validate()
        return self

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


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a raw dict copy."""
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
    return raw


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
