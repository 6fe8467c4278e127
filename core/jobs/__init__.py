"""Background training jobs: store, submission, orchestration and backends (local, Slurm).
Never imports torch, core.model, core.training, core.serving or core.evaluation.

The package face: ``from core.jobs import Job, JobManager, fmt_duration`` (and the app's
guards ``access_mode``, ``check_access``, ``check_app_overrides``), resolved on first use so
that importing one submodule (e.g. :mod:`core.jobs.launch` from a study) stays light.
Where each piece lives: :mod:`core.jobs.manager`'s docstring.
"""
from __future__ import annotations

import importlib

_FACE = {"Job": "core.jobs.store", "JobManager": "core.jobs.manager", "fmt_duration": "core.jobs.progress",
         "Progress": "core.jobs.progress", "access_mode": "core.jobs.access", "check_access": "core.jobs.access",
         "check_app_overrides": "core.jobs.access"}
__all__ = sorted(_FACE)


def __getattr__(name: str):
    if name in _FACE:
        return getattr(importlib.import_module(_FACE[name]), name)
    raise AttributeError(f"module 'core.jobs' has no attribute {name!r}")
