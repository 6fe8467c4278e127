"""Declared limits of every number a recipe or an override sets: one owner for "is this
value allowed", used by ``Config.from_dict`` (so by the CLI, the study, the job system
and the app's override check alike).

``check_config(config)`` raises :class:`core.errors.ConfigError` naming the key, its
value and the allowed range; ``parse_override_value(key, text)`` parses the value of a
``--set key=value`` as YAML and turns every parse failure into a ``ConfigError``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import yaml

from core.errors import ConfigError


def parse_override_value(key: str, text: str) -> Any:
    """The YAML value of ``--set key=text`` (an unparsable text stays a string)."""
    if not text.strip():
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    except ValueError as e:   # e.g. an integer of more digits than Python converts
        raise ConfigError(f"--set {key}: {text[:40]!r}{'...' if len(text) > 40 else ''} is not a usable "
                          f"value ({e})") from None


def _numbers(obj: Any, prefix: str):
    """(dotted key, value) of every int / float field of a config dataclass, nested."""
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from _numbers(getattr(obj, f.name), f"{prefix}{f.name}.")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{prefix}{k}.")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield prefix[:-1], obj


def check_config(config: Any) -> None:
    """Every number of ``config`` (and of each of its stages) is finite."""
    for key, value in _numbers(config, ""):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key} = {value!r}: it must be a finite number")
