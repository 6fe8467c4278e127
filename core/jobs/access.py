"""The guards of an exposed deployment (the app's Train page): which override keys the
app accepts, and whether it may change jobs at all (``MINBERT_READ_ONLY``,
``MINBERT_SECRET``). The command line on the server is not guarded.
"""
from __future__ import annotations

import hmac
from typing import Sequence

from core.errors import JobError
from core.settings import env_bool, env_secret

# Override keys the app's Train page accepts. Everything else (model.encoder and
# data.dir: arbitrary paths on the server; name; stages; train.device, which the page's
# device choice sets) is refused there; the command line takes any key.
APP_OVERRIDE_KEYS = frozenset({"description", "model.pooling", "model.max_len", "data.limit", "data.eval_limit"})
APP_OVERRIDE_PREFIXES = ("train.", "model.sst.", "model.qqp.", "model.sts.", "model.prompts.")
APP_OVERRIDE_DENIED = frozenset({"train.device"})


def check_app_overrides(overrides: Sequence[str]) -> None:
    """Raise :class:`JobError` for an override whose key the app does not accept."""
    for item in overrides:
        key = str(item).split("=", 1)[0].strip()
        allowed = key not in APP_OVERRIDE_DENIED and (
            key in APP_OVERRIDE_KEYS or any(key.startswith(p) for p in APP_OVERRIDE_PREFIXES))
        if not allowed:
            raise JobError(f"the app does not accept the override key {key!r}: it may set train.*, "
                           f"model.sst/qqp/sts/prompts.*, model.pooling, model.max_len, data.limit and "
                           f"data.eval_limit (use `python -m core.jobs submit --set ...` on the server "
                           f"for other keys)")


def access_mode(env: dict | None = None) -> str:
    """``read-only`` (``MINBERT_READ_ONLY=1``: nobody submits, cancels or resumes from the
    app), ``secret`` (``MINBERT_SECRET`` set: those actions need the secret typed on the
    Train page) or ``open``. A value that is neither 1/0 (true/false, yes/no, on/off) nor
    blank, or a secret shorter than 8 characters, is a ConfigError (core/settings.py)."""
    if env_bool("MINBERT_READ_ONLY", False, env):
        return "read-only"
    if env_secret("MINBERT_SECRET", env):
        return "secret"
    return "open"


def check_access(typed_secret: str | None, env: dict | None = None) -> None:
    """Raise :class:`JobError` unless the app may change jobs (see :func:`access_mode`)."""
    mode = access_mode(env)
    if mode == "read-only":
        raise JobError("this deployment is read-only (MINBERT_READ_ONLY is set): jobs cannot be submitted, "
                       "cancelled or resumed from the app")
    if mode == "secret":
        expected = env_secret("MINBERT_SECRET", env).encode()
        if not typed_secret or not hmac.compare_digest(str(typed_secret).encode(), expected):
            raise JobError("the access secret is missing or wrong: type the deployment's MINBERT_SECRET "
                           "in the Access secret field first")
