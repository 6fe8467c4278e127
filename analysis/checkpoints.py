"""Finding, loading and fingerprinting checkpoints for the analysis tools.

    list_checkpoints(root)   "pretrained" plus every directory under ``root`` holding config.json
                             (the default root, checkpoints/, holds the shipped minbert-multitask)
    resolve_checkpoint(name) a choice ("pretrained", a name under root, or a path) -> str for load
    load_model(name)         MultitaskBert.load of that choice
    checkpoint_hash(name)    the checkpoint's content hash (core/cache.py: weights, config,
                             tokenizer; not its name or path), for cache keys

No Streamlit here: the app caches ``load_model`` with ``st.cache_resource``.
"""
from __future__ import annotations

import os
from pathlib import Path

from core.cache import checkpoint_fingerprint, forget_fingerprints, model_fingerprint
from core.errors import CheckpointError
from core.model import PRETRAINED, SHIPPED, SHIPPED_DIR

REPO = Path(__file__).resolve().parents[1]
# Where the app looks for checkpoints; the env var lets tests and deployments point elsewhere.
CHECKPOINTS_ENV = "MINBERT_CHECKPOINTS"


def checkpoints_root() -> Path:
    """``$MINBERT_CHECKPOINTS`` if set, else ``checkpoints/`` in the repository."""
    return Path(os.environ.get(CHECKPOINTS_ENV) or REPO / "checkpoints")


def list_checkpoints(root: str | os.PathLike | None = None) -> list[str]:
    """``"pretrained"`` first, then the names of directories under ``root`` that hold a
    ``config.json`` (finished or at least saved once), sorted."""
    root = Path(root) if root is not None else checkpoints_root()
    names = []
    if root.is_dir():
        names = sorted(p.name for p in root.iterdir()
                       if p.is_dir() and not p.name.startswith(".") and (p / "config.json").is_file())
    return [PRETRAINED] + names


def resolve_checkpoint(name: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """``"pretrained"`` stays as is; a name found under ``root`` becomes its path; any
    other existing directory is used as given."""
    name = str(name)
    if name == PRETRAINED:
        return name
    root = Path(root) if root is not None else checkpoints_root()
    if (root / name / "config.json").is_file():
        return str(root / name)
    if name == SHIPPED and (SHIPPED_DIR / "config.json").is_file():
        return str(SHIPPED_DIR)
    if (Path(name) / "config.json").is_file():
        return name
    raise CheckpointError(f"no checkpoint {name!r}: expected a directory with config.json under "
                          f"{root} (or a path to one); train one with `python -m core.train`")


def load_model(name: str | os.PathLike, root: str | os.PathLike | None = None, device: str = "cpu"):
    """The :class:`core.model.MultitaskBert` behind a checkpoint choice, in eval mode."""
    from core.model import MultitaskBert
    return MultitaskBert.load(resolve_checkpoint(name, root), device=device)


forget_hashes = forget_fingerprints   # the earlier name
model_state_hash = model_fingerprint   # the earlier name


def checkpoint_hash(model_or_name, root: str | os.PathLike | None = None) -> str:
    """A content hash of a checkpoint, for cache keys (:func:`core.cache.checkpoint_fingerprint`).

    Accepts a checkpoint choice (see :func:`resolve_checkpoint`) or a loaded model: one
    loaded from a directory is hashed by its files, any other (``pretrained``, a model
    built in code) by its in-memory state (:func:`core.cache.model_fingerprint`).
    """
    if not isinstance(model_or_name, (str, os.PathLike)):
        directory = getattr(model_or_name, "checkpoint_dir", None)
        if directory is None:
            return model_fingerprint(model_or_name)
        model_or_name = str(directory)
    name = resolve_checkpoint(model_or_name, root)
    if name != PRETRAINED and not (Path(name) / "model.safetensors").is_file():
        raise CheckpointError(f"{name} has no model.safetensors to fingerprint")
    return checkpoint_fingerprint(name)
