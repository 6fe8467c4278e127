"""Finding, loading and fingerprinting checkpoints for the analysis tools.

    list_checkpoints(root)   "pretrained" plus every directory under ``root`` holding config.json
                             (the default root, checkpoints/, holds the shipped minbert-multitask)
    resolve_checkpoint(name) a choice ("pretrained", a name under root, or a path) -> str for load
    load_model(name)         MultitaskBert.load of that choice
    checkpoint_hash(name)    sha256 of the checkpoint's weights + config (content, not path)

No Streamlit here: the app caches ``load_model`` with ``st.cache_resource``.
"""
from __future__ import annotations

import hashlib
import os
import weakref
from pathlib import Path

from core.errors import CheckpointError
from core.model import PRETRAINED, SHIPPED, SHIPPED_DIR

REPO = Path(__file__).resolve().parents[1]
# Where the app looks for checkpoints; the env var lets tests and deployments point elsewhere.
CHECKPOINTS_ENV = "MINBERT_CHECKPOINTS"

_HASHES: dict[tuple, str] = {}  # (path, size, mtime_ns) per file -> digest, per process
_MODEL_HASHES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> state digest


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


def forget_hashes() -> None:
    """Drop the memoised file and model digests of this process (a benchmark of the
    cold path; files are re-hashed on next use)."""
    _HASHES.clear()
    _MODEL_HASHES.clear()


def _file_digest(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def model_state_hash(model) -> str:
    """A content hash of an in-memory model (its config and every tensor of its state),
    for models that were not loaded from a checkpoint directory. Memoised per model
    object: analysis code does not change weights."""
    if model in _MODEL_HASHES:
        return _MODEL_HASHES[model]
    import json

    import numpy as np
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    h.update(json.dumps(config.to_dict() if hasattr(config, "to_dict") else repr(config),
                        sort_keys=True, default=str).encode())
    for key, tensor in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(np.ascontiguousarray(tensor.detach().float().cpu().numpy()).tobytes())
    _MODEL_HASHES[model] = digest = h.hexdigest()
    return digest


def checkpoint_hash(model_or_name, root: str | os.PathLike | None = None) -> str:
    """A content hash of a checkpoint (weights + config.json), for cache keys.

    Accepts a checkpoint choice (see :func:`resolve_checkpoint`) or a loaded model: one
    loaded from a directory is hashed by its files (each file once per process while its
    size and mtime stay the same), any other (``pretrained``, a model built in code) by
    its in-memory state.
    """
    if not isinstance(model_or_name, (str, os.PathLike)):
        directory = getattr(model_or_name, "checkpoint_dir", None)
        if directory is None:
            return model_state_hash(model_or_name)
        model_or_name = str(directory)
    name = resolve_checkpoint(model_or_name, root)
    if name == PRETRAINED:
        from core.bert import packaged_model_dir
        from core.model import ZERO_SHOT_PARAPHRASE
        directory = packaged_model_dir()
        parts = [PRETRAINED, repr(sorted(ZERO_SHOT_PARAPHRASE.items()))]
    else:
        directory = Path(name)
        parts = []
    if not (directory / "model.safetensors").is_file():
        raise CheckpointError(f"{directory} has no model.safetensors to fingerprint")
    for fname in ("config.json", "model.safetensors"):
        path = directory / fname
        if path.is_file():
            parts.append(f"{fname}:{_file_digest(path)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
