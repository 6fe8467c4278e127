"""Recipes (``configs/*.yaml``) as editable forms.

The Train page shows every field of a recipe as a typed form widget. This module
describes those fields from the :class:`core.config.schema.Config` dataclasses themselves (so a
field added to the config shows up in the form with no app change, its help text from
the field's metadata, :func:`core.config.schema.option_help`) and turns what the
user changed back into ``key=value`` overrides, which :class:`core.jobs.manager.JobManager`
validates with ``Config.from_yaml`` before it creates a job.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from core.paths import REPO
from core.config.schema import Config, option_help
from core.errors import ConfigError
from core.config.limits import parse_override_value


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


# configs/ files that are not training recipes: the study runner's plans (core/experiments/study.py),
# named study*.yaml (configs/study.yaml, configs/study-best.yaml)
STUDY_PLANS = "study*.yaml"


def list_recipes(directory: str | Path | None = None) -> list[Path]:
    """The recipe files in ``configs/`` (or ``directory``), sorted by name."""
    directory = Path(directory) if directory is not None else REPO / "configs"
    return sorted(p for p in directory.glob("*.yaml") if p.is_file() and not p.match(STUDY_PLANS))


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
            help_ = option_help().get(key, "")
            out.append(FieldSpec(key, kind, value, section, choices, help_))
    return out


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
            try:   # the same parser as --set (core/config/limits.py): no aliases, huge numbers refused
                parsed = parse_override_value(spec.key, text) if text else None
            except ConfigError as e:
                raise ConfigError(str(e)) from None
            if parsed != spec.value:
                out.append(f"{spec.key}={text if text else 'null'}")
            continue
        if spec.kind == "multichoice":
            new = list(new)
        if spec.kind == "float" and new is not None and spec.value is not None:
            try:
                if float(new) == float(spec.value):
                    continue
            except (TypeError, ValueError):
                raise ConfigError(f"{spec.key} must be a number, got {str(new)[:40]!r}") from None
        if new != spec.value:
            out.append(f"{spec.key}={_yaml_scalar(new)}")
    return out


def parse_override_lines(text: str) -> list[str]:
    """Free-form overrides, one ``key=value`` per line (blank lines and ``#`` comments
    are skipped). A line without ``=`` raises :class:`ConfigError`."""
    out = []
    if len(text or "") > 100_000:
        raise ConfigError(f"the overrides are {len(text):,} characters long; the limit is 100,000")
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
