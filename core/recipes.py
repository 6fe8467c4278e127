"""Recipes (``configs/*.yaml``) as editable forms.

The Train page shows every field of a recipe as a typed form widget. This module
describes those fields from the :class:`core.config.Config` dataclasses themselves (so a
field added to the config shows up in the form with no app change) and turns what the
user changed back into ``key=value`` overrides, which :class:`core.jobs.JobManager`
validates with ``Config.from_yaml`` before it creates a job.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from core.config import Config
from core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

# One-line explanations shown next to the most used fields.
HELP = {
    "name": "Name of the run (the job's checkpoint directory gets its own, unique name).",
    "model.encoder": "'minilm' (packaged all-MiniLM-L6-v2) or a directory holding an HF-format BERT.",
    "model.pooling": "How token states become one sentence vector.",
    "model.max_len": "Wordpieces per input, special tokens included; longer inputs are cut.",
    "data.dir": "Folder with the task CSV files.",
    "data.limit": "Keep only the first N training examples of each task (blank: all).",
    "data.eval_limit": "Evaluate on the first N dev examples of each task (blank: all).",
    "train.tasks": "Tasks trained jointly, one batch of each per optimizer step.",
    "train.epochs": "Passes of steps_per_epoch steps, each followed by a dev evaluation.",
    "train.steps_per_epoch": "An integer, or 'min' / 'max' (batches in the smallest / largest task).",
    "train.lr": "Encoder learning rate.",
    "train.head_lr": "Learning rate of the task heads (blank: same as lr).",
    "train.freeze_encoder": "Train the heads only; the encoder's outputs are then computed once and cached.",
    "train.max_steps": "Stop after N optimizer steps (blank: no limit).",
    "train.device": "auto picks a GPU when one is visible.",
    "train.loss_weights": "Weight of each task's loss in the joint loss.",
}


@dataclass
class FieldSpec:
    """One editable recipe field.

    ``kind``: ``bool``, ``int``, ``float``, ``str``, ``choice`` (one of ``choices``),
    ``multichoice`` (a list drawn from ``choices``) or ``yaml`` (free text parsed as
    YAML: optional numbers and unions such as ``int | 'min' | 'max'``; blank = null).
    """
    key: str
    kind: str
    value: Any
    section: str
    choices: tuple = ()
    help: str = ""

    @property
    def label(self) -> str:
        return self.key.rsplit(".", 1)[-1]

    def text(self) -> str:
        """The value as a ``yaml``-kind widget shows it."""
        return "" if self.value is None else _yaml_scalar(self.value)


def list_recipes(directory: str | Path | None = None) -> list[Path]:
    """The recipe files in ``configs/`` (or ``directory``), sorted by name."""
    directory = Path(directory) if directory is not None else REPO / "configs"
    return sorted(p for p in directory.glob("*.yaml") if p.is_file())


def recipe_fields(config: Config) -> list[FieldSpec]:
    """Every editable field of ``config``, in declaration order."""
    return _fields(config, "")


def _fields(obj: Any, prefix: str) -> list[FieldSpec]:
    hints = get_type_hints(type(obj))
    out: list[FieldSpec] = []
    for f in dataclasses.fields(obj):
        key, tp, value = f"{prefix}{f.name}", hints[f.name], getattr(obj, f.name)
        section = prefix.rstrip(".") or "general"
        if dataclasses.is_dataclass(tp):
            out += _fields(value, key + ".")
        else:
            kind, choices = _kind(tp)
            help_ = HELP.get(key) or _comments(type(obj)).get(f.name, "")
            out.append(FieldSpec(key, kind, value, section, choices, help_))
    return out


@functools.cache
def _comments(cls) -> dict[str, str]:
    """Field name -> the ``# comment`` after its declaration in the dataclass source."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    found = {}
    for match in re.finditer(r"^\s+(\w+)\s*:[^#\n]*#\s*(.+)$", source, re.MULTILINE):
        found[match.group(1)] = match.group(2).strip()
    return found


def _kind(tp) -> tuple[str, tuple]:
    origin = get_origin(tp)
    if tp is bool:
        return "bool", ()
    if tp in (int, float, str):
        return tp.__name__, ()
    if origin is Literal:
        return "choice", get_args(tp)
    if origin is list and get_origin(get_args(tp)[0]) is Literal:
        return "multichoice", get_args(get_args(tp)[0])
    return "yaml", ()  # unions, optionals, dicts, other lists: edited as YAML text


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)  # keeps 2e-05 readable and exact
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False)
    return text.strip().removesuffix("...").strip()  # scalars are dumped as "value\n...\n"


def to_overrides(fields: list[FieldSpec], values: dict[str, Any]) -> list[str]:
    """``key=value`` overrides for the fields whose new value differs from the recipe.

    ``values`` maps field keys to widget values; ``yaml`` fields give text (blank means
    null), which is parsed so that an unchanged value in another spelling is no change.
    """
    out = []
    for spec in fields:
        if spec.key not in values:
            continue
        new = values[spec.key]
        if spec.kind == "yaml":
            text = str(new).strip()
            try:
                parsed = yaml.safe_load(text) if text else None
            except yaml.YAMLError as e:
                raise ConfigError(f"{spec.key}: {text!r} is not a valid value ({e})") from None
            if parsed != spec.value:
                out.append(f"{spec.key}={text if text else 'null'}")
            continue
        if spec.kind == "multichoice":
            new = list(new)
        if spec.kind == "float" and new is not None and spec.value is not None:
            if float(new) == float(spec.value):
                continue
        if new != spec.value:
            out.append(f"{spec.key}={_yaml_scalar(new)}")
    return out


def parse_override_lines(text: str) -> list[str]:
    """Free-form overrides, one ``key=value`` per line (blank lines and ``#`` comments
    are skipped). A line without ``=`` raises :class:`ConfigError`."""
    out = []
    for i, line in enumerate((text or "").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--set "):
            line = line[len("--set "):].strip()
        if "=" not in line or not line.split("=", 1)[0].strip():
            raise ConfigError(f"override line {i} ({line!r}) is not of the form key=value, e.g. train.lr=3e-5")
        out.append(line)
    return out
