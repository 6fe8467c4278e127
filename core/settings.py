"""``MINBERT_*`` environment settings: one owner that reads them, so that a bad value is
one :class:`core.errors.ConfigError` naming the variable, its value and what it may be,
never a raw ``ValueError`` somewhere later.

    env_int(name, default, lo, hi)      a whole number in [lo, hi]
    env_float(name, default, lo, hi)    a finite number in [lo, hi]
    env_bool(name, default)             1/0, true/false, yes/no, on/off (any case)
    env_choice(name, default, choices)  one of ``choices``
    env_path(name, default)             a directory path (need not exist yet)
    env_secret(name)                    a shared secret (None when unset)
    check_environment(env)              every setting of ``SETTINGS`` read once: the app
                                        and the command-line tools call it at start

An empty value counts as unset (``MINBERT_X=`` gives the default). ``env`` defaults to
``os.environ``; tests pass a mapping.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping

from core.errors import ConfigError

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")
SECRET_MIN_CHARS = 8
MAX_VALUE_CHARS = 4_096


def _raw(name: str, env: Mapping[str, str] | None) -> str | None:
    env = os.environ if env is None else env
    value = env.get(name)
    if value is None or not str(value).strip():
        return None
    value = str(value)
    if len(value) > MAX_VALUE_CHARS or "\x00" in value:
        raise ConfigError(f"${name} is not a usable value ({len(value):,} characters"
                          f"{', with a NUL byte' if chr(0) in value else ''}): unset it or fix it")
    return value.strip()


def _bad(name: str, value: str, wanted: str, default) -> ConfigError:
    shown = value if len(value) <= 60 else value[:60] + "..."
    hint = f"unset it for the default ({default})" if default is not None else "unset it"
    return ConfigError(f"${name}={shown!r}: it must be {wanted}; {hint}")


def env_int(name: str, default: int | None, lo: int, hi: int, env: Mapping[str, str] | None = None) -> int | None:
    value = _raw(name, env)
    if value is None:
        return default
    try:
        number = int(value, 10) if len(value) <= 30 else None
    except ValueError:
        number = None
    if number is None or not lo <= number <= hi:
        raise _bad(name, value, f"a whole number from {lo:,} to {hi:,}", default)
    return number


def env_float(name: str, default: float | None, lo: float, hi: float,
              env: Mapping[str, str] | None = None) -> float | None:
    value = _raw(name, env)
    if value is None:
        return default
    try:
        number = float(value) if len(value) <= 40 else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or not lo <= number <= hi:
        raise _bad(name, value, f"a number from {lo:g} to {hi:g}", default)
    return number


def env_bool(name: str, default: bool = False, env: Mapping[str, str] | None = None) -> bool:
    value = _raw(name, env)
    if value is None:
        return default
    if value.lower() in TRUE:
        return True
    if value.lower() in FALSE:
        return False
    raise _bad(name, value, "1 or 0 (true/false, yes/no, on/off)", int(default))


def env_choice(name: str, default: str, choices: tuple[str, ...], env: Mapping[str, str] | None = None) -> str:
    value = _raw(name, env)
    if value is None:
        return default
    if value not in choices:
        raise _bad(name, value, f"one of {', '.join(choices)}", default)
    return value


def env_path(name: str, default: str | os.PathLike | None, env: Mapping[str, str] | None = None) -> Path | None:
    """A directory: refused when it exists and is not a directory."""
    value = _raw(name, env)
    if value is None:
        return Path(default) if default is not None else None
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise _bad(name, value, "a directory (this path is a file)", default)
    return path


def env_secret(name: str, env: Mapping[str, str] | None = None) -> str | None:
    value = _raw(name, env)
    if value is not None and len(value) < SECRET_MIN_CHARS:
        raise ConfigError(f"${name} is {len(value)} characters long; a shared secret needs at least "
                          f"{SECRET_MIN_CHARS}: choose a longer one (e.g. `python -c \"import secrets; "
                          f"print(secrets.token_urlsafe(16))\"`)")
    return value


# Every setting, read the way its reader reads it (the readers call the same functions).
SETTINGS = {
    "MINBERT_JOBS_ROOT": lambda env: env_path("MINBERT_JOBS_ROOT", None, env),
    "MINBERT_CHECKPOINTS": lambda env: env_path("MINBERT_CHECKPOINTS", None, env),
    "MINBERT_CACHE_DIR": lambda env: env_path("MINBERT_CACHE_DIR", None, env),
    "MINBERT_MAX_RUNNING_JOBS": lambda env: env_int("MINBERT_MAX_RUNNING_JOBS", 1, 1, 64, env),
    "MINBERT_MAX_QUEUED_JOBS": lambda env: env_int("MINBERT_MAX_QUEUED_JOBS", 10, 1, 1_000, env),
    "MINBERT_READ_ONLY": lambda env: env_bool("MINBERT_READ_ONLY", False, env),
    "MINBERT_SECRET": lambda env: env_secret("MINBERT_SECRET", env),
    "MINBERT_BACKEND": lambda env: env_choice("MINBERT_BACKEND", "local", ("local", "slurm"), env),
    "MINBERT_MEMORY_GB": lambda env: env_float("MINBERT_MEMORY_GB", None, 0.1, 1e6, env),
    "MINBERT_WATCHDOG_S": lambda env: env_float("MINBERT_WATCHDOG_S", 1.0, 0.05, 60.0, env),
    "MINBERT_ALLOW_OPEN_TRAIN": lambda env: env_bool("MINBERT_ALLOW_OPEN_TRAIN", False, env),
}


def check_environment(env: Mapping[str, str] | None = None) -> dict:
    """Read every setting of ``SETTINGS`` (the first bad one raises); returns the values."""
    return {name: read(env) for name, read in SETTINGS.items()}
