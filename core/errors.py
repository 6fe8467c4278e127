"""User-facing errors.

Every failure caused by what a user handed in (a file, a config, a checkpoint, an
argument) raises :class:`MinbertError` or a subclass, with a message that says what was
wrong and how to fix it. Bugs in our own code keep raising ordinary Python exceptions.
At the command line :func:`run_cli` turns one into ``error: ...`` and exit status 2.
"""
from __future__ import annotations

import json
import sys
from typing import Any, Callable


class MinbertError(Exception):
    """Base class of every user-caused failure."""


class ConfigError(MinbertError):
    """A recipe / config value is unknown, of the wrong type or out of range."""


class DataError(MinbertError):
    """A data file is missing, unreadable, or has no usable rows."""


class CheckpointError(MinbertError):
    """A checkpoint directory is missing files, or a file in it is corrupt."""


class ModelLoadError(MinbertError):
    """Pretrained weights could not be found or loaded."""


class JobError(MinbertError):
    """A training job could not be submitted, found or controlled."""


def run_command(body: Callable[[], int], interrupted: str = "interrupted") -> int:
    """Run a command-line tool's ``body`` and return its exit status: a
    :class:`MinbertError` is printed as ``error: <message>`` on stderr (status 2), Ctrl-C
    as ``interrupted`` (status 130); anything else is a bug and keeps its traceback."""
    try:
        return body()
    except MinbertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130


def run_cli(compute: Callable[[], Any], as_json: bool = True, show: Callable[[Any], None] | None = None) -> int:
    """The end of a command-line tool: ``compute()``, then its result printed as JSON
    (``as_json``) or by ``show(result)``; exit status 0. A :class:`MinbertError` is
    printed as ``error: <message>`` on stderr, without a traceback: exit status 2
    (:func:`run_command` decides that)."""
    def body() -> int:
        result = compute()
        if as_json or show is None:
            print(json.dumps(result, indent=2))
        else:
            show(result)
        return 0
    return run_command(body)
