"""Declared limits of every number a recipe or an override sets: one owner for "is this
value allowed", used by ``Config.from_dict`` (so by the CLI, the study, the job system,
checkpoint loading and the app's override check alike).

    check_config(config)               every number of every config dataclass (and of each
                                       stage) finite and inside its declared range; every
                                       list, mapping and string within its declared length
    parse_override_value(key, text)    the YAML value of ``--set key=text``; a parse failure
                                       (e.g. a 5,000-digit integer) is a ConfigError
    estimate_training_memory(config)   bytes a training run of the recipe needs (estimate)
    check_fits(config, memory_bytes)   ConfigError when that estimate exceeds the machine's
                                       memory (:func:`machine_memory`); called where a job is
                                       submitted and where a run starts, not when a finished
                                       checkpoint is loaded (a model trained on a big machine
                                       still loads on a small one)

``RANGES`` / ``LENGTHS`` map ``(dataclass name, field name)`` to the allowed values; a
test requires an entry for every numeric field and every list / mapping / string field
of the config dataclasses, so a new option without a declared range fails the suite.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

import yaml

from core.errors import ConfigError

SEED_MAX = 2**32 - 1        # numpy's SeedSequence / np.random.seed accept [0, 2**32 - 1]
BIG = 10**9                 # counts of examples and steps: far above any data set here


@dataclass(frozen=True)
class Range:
    """Allowed values ``lo .. hi``; ``lo_open`` / ``hi_open`` exclude the bound."""
    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, value) -> bool:
        lo_ok = value > self.lo if self.lo_open else value >= self.lo
        hi_ok = value < self.hi if self.hi_open else value <= self.hi
        return lo_ok and hi_ok

    def text(self) -> str:
        def show(x) -> str:
            return f"{x:,}" if isinstance(x, int) else f"{x:g}"
        return f"{'(' if self.lo_open else '['}{show(self.lo)}, {show(self.hi)}{')' if self.hi_open else ']'}"


def _r(lo, hi, lo_open=False, hi_open=False) -> Range:
    return Range(lo, hi, lo_open, hi_open)


PROB = _r(0, 1, hi_open=True)          # dropouts, smoothing, momentum: [0, 1)
WEIGHT = _r(0, 1_000)                  # loss weights and regularization weights
WIDTH = _r(1, 65_536)                  # layer widths
RATE = _r(0, 10, lo_open=True)         # learning rates

# (dataclass, field) -> range of the field's number (of each item of a list / mapping).
RANGES: dict[tuple[str, str], Range] = {
    ("HeadConfig", "layers"): _r(1, 64), ("HeadConfig", "hidden"): WIDTH,
    ("HeadConfig", "dropout"): PROB, ("HeadConfig", "kernel_sizes"): _r(1, 64),
    ("HeadConfig", "vectors"): _r(1, 1_024), ("HeadConfig", "upscale_kernel"): _r(1, 255),
    ("HeadConfig", "out_features"): WIDTH,
    ("ModelConfig", "max_len"): _r(8, 512), ("ModelConfig", "encoder_dropout"): PROB,
    ("ModelConfig", "shared_projection"): WIDTH,
    ("DataConfig", "limit"): _r(1, BIG), ("DataConfig", "eval_limit"): _r(1, BIG),
    ("SmartConfig", "weight"): WEIGHT, ("SmartConfig", "noise_std"): _r(0, 1, lo_open=True),
    ("SmartConfig", "step_size"): _r(0, 10, lo_open=True), ("SmartConfig", "ascent_steps"): _r(1, 20),
    ("SmartConfig", "epsilon"): _r(0, 1_000, lo_open=True), ("SmartConfig", "bregman_weight"): WEIGHT,
    ("SmartConfig", "momentum"): PROB,
    ("ContrastiveConfig", "scale"): _r(0, 1_000, lo_open=True),
    ("ContrastiveConfig", "temperature"): _r(1e-4, 100), ("ContrastiveConfig", "sts_positive"): _r(0, 5),
    ("ContrastiveConfig", "sts_negative"): _r(0, 5), ("ContrastiveConfig", "negatives"): _r(1, 64),
    ("ContrastiveConfig", "margin"): _r(0, 100), ("ContrastiveConfig", "max_examples"): _r(2, BIG),
    ("LossTerm", "weight"): WEIGHT,
    ("TrainConfig", "task_ratio"): _r(0, 1_000, lo_open=True), ("TrainConfig", "epochs"): _r(1, 1_000),
    ("TrainConfig", "steps_per_epoch"): _r(1, BIG), ("TrainConfig", "batch_size"): _r(1, 8_192),
    ("TrainConfig", "epoch_fraction"): _r(0, 1, lo_open=True),
    ("TrainConfig", "task_batch_size"): _r(1, 8_192), ("TrainConfig", "eval_batch_size"): _r(1, 8_192),
    ("TrainConfig", "lr"): RATE, ("TrainConfig", "head_lr"): RATE, ("TrainConfig", "weight_decay"): _r(0, 100),
    ("TrainConfig", "warmup_ratio"): PROB, ("TrainConfig", "grad_clip"): _r(0, 1e6, lo_open=True),
    ("TrainConfig", "loss_weights"): WEIGHT, ("TrainConfig", "mnrl_weight"): WEIGHT,
    ("TrainConfig", "layer_decay"): _r(0, 1, lo_open=True), ("TrainConfig", "label_smoothing"): PROB,
    ("TrainConfig", "hybrid_aux_weight"): WEIGHT, ("TrainConfig", "max_steps"): _r(1, BIG),
    ("TrainConfig", "seed"): _r(0, SEED_MAX), ("TrainConfig", "log_every"): _r(1, BIG),
    ("TrainConfig", "resume_every"): _r(1, BIG),
}

TEXT = 2_000                # a one-line text: description, a prompt question
PATH = 4_096                # a path (PATH_MAX on Linux)
# (dataclass, field) -> the most items of a list / mapping, or characters of a string.
LENGTHS: dict[tuple[str, str], int] = {
    ("HeadConfig", "mode"): 16, ("HeadConfig", "features"): 8, ("HeadConfig", "cosine_map"): 16,
    ("HeadConfig", "arch"): 16, ("HeadConfig", "kernel_sizes"): 16, ("HeadConfig", "pooling"): 16,
    ("PromptConfig", "sst"): TEXT, ("PromptConfig", "qqp"): TEXT, ("PromptConfig", "sts"): TEXT,
    ("PromptConfig", "pair_context"): TEXT,
    ("ModelConfig", "encoder"): PATH, ("ModelConfig", "pooling"): 16,
    ("DataConfig", "dir"): PATH, ("DataConfig", "symmetric_pairs"): 2,
    ("ContrastiveConfig", "triplet_layout"): 16, ("LossTerm", "name"): 16,
    ("TrainConfig", "tasks"): 3, ("TrainConfig", "objective"): 16, ("TrainConfig", "schedule"): 16,
    ("TrainConfig", "backward"): 16, ("TrainConfig", "task_sampling"): 16, ("TrainConfig", "task_ratio"): 3,
    ("TrainConfig", "task_batch_size"): 3, ("TrainConfig", "optimizer"): 16, ("TrainConfig", "loss_weights"): 3,
    ("TrainConfig", "loss_weighting"): 16, ("TrainConfig", "losses"): 3, ("TrainConfig", "class_balanced"): 2,
    ("TrainConfig", "device"): 16, ("TrainConfig", "precision"): 16, ("TrainConfig", "select"): 16,
    ("TrainConfig", "steps_per_epoch"): 16,
    ("Config", "name"): 200, ("Config", "description"): TEXT, ("Config", "stages"): 32,
}
# the loss terms of one task (train.losses.<task>): a list inside a mapping
LOSS_TERMS_MAX = 8
ITEM_CHARS = 64             # a string inside a list / mapping: a task, a feature, a loss name


def parse_override_value(key: str, text: str) -> Any:
    """The YAML value of ``--set key=text`` (an unparsable text stays a string)."""
    if not text.strip():
        return None
    if len(text) > PATH + TEXT:
        raise ConfigError(f"--set {key}: the value is {len(text):,} characters long; the limit is "
                          f"{PATH + TEXT:,}")
    try:
        value = safe_yaml_load(text)
    except yaml.YAMLError:
        return text
    except ConfigError as e:
        raise ConfigError(f"--set {key}: {e}") from None
    if any(isinstance(v, int) and not isinstance(v, bool) and abs(v) > INT_MAX for v in _leaves(value)):
        raise ConfigError(f"--set {key}: {text[:40]!r}{'...' if len(text) > 40 else ''} holds an integer beyond "
                          f"+-2**63, which no setting takes")
    return value


INT_MAX = 2**63 - 1          # no declared range reaches it; a float field cannot convert far more


def _leaves(value):
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        else:
            yield v


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases: ``*name`` would let a few hundred characters
    describe a structure of billions of items to anything that walks it (and ``&a [*a]``
    one that contains itself)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"YAML aliases (*{event.anchor}) are not accepted",
                                              event.start_mark)
        return super().compose_node(parent, index)


def safe_yaml_load(text: str):
    """``yaml.safe_load`` without aliases; a number Python cannot convert (more than 4,300
    digits) or nesting deeper than the parser's recursion becomes :class:`ConfigError`
    (other YAML errors stay ``yaml.YAMLError``)."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)   # noqa: S506 - a SafeLoader subclass
    except (ValueError, RecursionError) as e:
        shown = f"{text[:40]!r}{'...' if len(text) > 40 else ''}"
        raise ConfigError(f"{shown} is not a usable value ({str(e)[:200]})") from None


# ------------------------------------------------------------------ ranges
def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_number(owner: str, name: str, key: str, value) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} = {value!r}: it must be a finite number")
    allowed = RANGES.get((owner, name))
    if allowed is not None and value not in allowed:
        shown = value if not isinstance(value, int) or abs(value) < 10**15 else f"a {len(str(abs(value)))}-digit number"
        raise ConfigError(f"{key} = {shown}: out of range, allowed {allowed.text()}")


def _check_length(owner: str, name: str, key: str, value, cap: int | None = None) -> None:
    cap = cap if cap is not None else LENGTHS.get((owner, name))
    if cap is not None and len(value) > cap:
        what = "characters" if isinstance(value, str) else "items"
        raise ConfigError(f"{key} has {len(value):,} {what}; the limit is {cap:,}")


def _check_value(owner: str, name: str, key: str, value, item: bool = False) -> None:
    """``item``: ``value`` is an item of the field's list / mapping (its length cap is the
    container's; a string item gets ``ITEM_CHARS``)."""
    if dataclasses.is_dataclass(value):
        _check_fields(value, key + ".")
    elif _is_number(value):
        _check_number(owner, name, key, value)
    elif isinstance(value, str):
        _check_length(owner, name, key, value, ITEM_CHARS if item else None)
    elif isinstance(value, list):
        _check_length(owner, name, key, value, LOSS_TERMS_MAX if item else None)
        for i, x in enumerate(value):
            _check_value(owner, name, f"{key}[{i}]", x, item=True)
    elif isinstance(value, dict):
        _check_length(owner, name, key, value)
        for k, x in value.items():
            _check_value(owner, name, f"{key}.{k}", x, item=True)


def _check_fields(obj: Any, prefix: str) -> None:
    owner = type(obj).__name__
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if owner == "Config" and f.name == "stages":
            _check_length(owner, f.name, "stages", value)   # their fields: via stage_plan below
            continue
        _check_value(owner, f.name, prefix + f.name, value)


def check_config(config: Any) -> None:
    """Every number of ``config`` (and of each of its stages) finite and in its declared
    range, every list, mapping and string within its declared length; else
    :class:`ConfigError` naming the key, the value and what is allowed."""
    _check_fields(config, "")
    stages = getattr(config, "stages", None)
    if stages:
        for i, (name, train) in enumerate(config.stage_plan()):
            try:
                _check_fields(train, "train.")
            except ConfigError as e:
                raise ConfigError(f"stages[{i}] ({name}): {e}") from None


# ------------------------------------------------------------------ the machine
def machine_memory() -> int:
    """Bytes of memory this process may use: the cgroup limit (a container's) when one is
    set, else the machine's RAM; ``MINBERT_MEMORY_GB`` overrides both."""
    from core.settings import env_float
    gb = env_float("MINBERT_MEMORY_GB", None, 0.1, 1e6)
    if gb is not None:
        return int(gb * 2**30)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < ram:
            return int(text)
    return ram
