"""Finding, loading and fingerprinting checkpoints for the analysis tools.

    list_checkpoints(root)   "pretrained" plus every run directory under ``root`` (the default
                             root, checkpoints/, holds the shipped minbert-multitask)
    resolve_checkpoint(name) a choice ("pretrained", a name under root, or a path) -> str for load
    has_weights(name)        False for a results-only run (see below)
    load_model(name)         MultitaskBert.load of that choice
    checkpoint_hash(name)    the checkpoint's content hash (core/evaluation/cache.py: weights, config,
                             tokenizer; not its name or path), for cache keys

A run directory holds a ``config.json`` or results: ``metrics.json``, dev predictions
(``predictions/*-dev.csv``) or an embedding sample (``embeddings.json``, written by
``python -m analysis.geometry sample``). A **results-only run** is one kept without its
weights (no ``model.safetensors``): the Compare and Errors pages and the Embeddings page
work from its files; anything that needs the model says the weights are not available
locally (:func:`load_model` raises a CheckpointError that says so).

No Streamlit here: the app caches ``load_model`` with ``st.cache_resource``.
"""
from __future__ import annotations

import os
from pathlib import Path

from core.paths import REPO
from core.evaluation.cache import checkpoint_fingerprint, forget_fingerprints, model_fingerprint
from core.errors import CheckpointError
from core.model.checkpoint import PRETRAINED, SHIPPED, SHIPPED_DIR

# Where the app looks for checkpoints; the env var lets tests and deployments point elsewhere.
CHECKPOINTS_ENV = "MINBERT_CHECKPOINTS"


def checkpoints_root() -> Path:
    """``$MINBERT_CHECKPOINTS`` if set, else ``checkpoints/`` in the repository."""
    return Path(os.environ.get(CHECKPOINTS_ENV) or REPO / "checkpoints")


EMBEDDINGS_FILE = "embeddings.json"


def has_results(directory: str | os.PathLike) -> bool:
    """Whether a directory holds results to show: metrics.json or dev predictions."""
    directory = Path(directory)
    return (directory / "metrics.json").is_file() or any((directory / "predictions").glob("*-dev.csv"))


def is_run_dir(directory: str | os.PathLike) -> bool:
    """A checkpoint or a results-only run: config.json, results or an embedding sample."""
    directory = Path(directory)
    return directory.is_dir() and not directory.name.startswith(".") and (
        (directory / "config.json").is_file() or has_results(directory) or (directory / EMBEDDINGS_FILE).is_file())


def has_weights(name: str | os.PathLike, root: str | os.PathLike | None = None) -> bool:
    """Whether a checkpoint choice has its weights here ("pretrained": always); False for
    a results-only run."""
    path = resolve_checkpoint(name, root)
    return path == PRETRAINED or (Path(path) / "model.safetensors").is_file()


def results_tasks(name: str | os.PathLike, root: str | os.PathLike | None = None) -> list[str]:
    """The tasks a run has results for: dev predictions or an embedding sample (what a
    results-only run can show), in task order."""
    import json

    from core.tasks import TASKS
    directory = Path(resolve_checkpoint(name, root))
    found = {t for t in TASKS if (directory / "predictions" / f"{t}-dev.csv").is_file()}
    try:
        found |= set(json.loads((directory / EMBEDDINGS_FILE).read_text()).get("samples", {}))
    except (OSError, ValueError, AttributeError):
        pass
    return [t for t in TASKS if t in found]


def run_dirs(root: str | os.PathLike | None = None) -> list[Path]:
    """Every run directory under ``root`` (:func:`is_run_dir`), sorted by name, and those
    one level down in a folder that is not a run itself: a study's runs live in
    ``checkpoints/study/<row>-s<seed>/`` (core/experiments/study.py). ``checkpoints/pretrained``
    (the zero-shot encoder's predictions) is one of them."""
    root = Path(root) if root is not None else checkpoints_root()
    if not root.is_dir():
        return []
    found = []
    for p in sorted(root.iterdir()):
        if is_run_dir(p):
            found.append(p)
        elif p.is_dir() and not p.name.startswith("."):
            found += [q for q in sorted(p.iterdir()) if is_run_dir(q)]
    return found


def list_checkpoints(root: str | os.PathLike | None = None) -> list[str]:
    """``"pretrained"`` first, then the names of the run directories under ``root``
    (:func:`run_dirs`: finished, saved at least once, or results-only; a study's runs as
    ``study/<row>-s<seed>``), sorted."""
    root = Path(root) if root is not None else checkpoints_root()
    names = [p.relative_to(root).as_posix() for p in run_dirs(root)]
    return [PRETRAINED] + [n for n in names if n != PRETRAINED]


def resolve_checkpoint(name: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """``"pretrained"`` stays as is; a name found under ``root`` becomes its path; any
    other existing directory is used as given."""
    name = str(name)
    if name == PRETRAINED:
        return name
    root = Path(root) if root is not None else checkpoints_root()
    if is_run_dir(root / name):
        return str(root / name)
    if name == SHIPPED and (SHIPPED_DIR / "config.json").is_file():
        return str(SHIPPED_DIR)
    if is_run_dir(Path(name)):
        return name
    raise CheckpointError(f"no checkpoint {name!r}: expected a directory with config.json under "
                          f"{root} (or a path to one); train one with `python -m core.train`")


def load_model(name: str | os.PathLike, root: str | os.PathLike | None = None, device: str = "cpu"):
    """The :class:`core.model.multitask.MultitaskBert` behind a checkpoint choice, in eval mode."""
    from core.model.multitask import MultitaskBert
    path = resolve_checkpoint(name, root)
    if not has_weights(path):
        raise CheckpointError(weights_missing(name))
    return MultitaskBert.load(path, device=device)


def weights_missing(name: str | os.PathLike) -> str:
    """What to say about a results-only run where the model is needed."""
    return (f"weights not available locally: {Path(str(name)).name} is a results-only run (its metrics, "
            f"predictions and embedding sample were kept without model.safetensors); copy the weights "
            f"into its directory to inspect the model")


forget_hashes = forget_fingerprints   # the earlier name
model_state_hash = model_fingerprint   # the earlier name


def checkpoint_hash(model_or_name, root: str | os.PathLike | None = None) -> str:
    """A content hash of a checkpoint, for cache keys (:func:`core.evaluation.cache.checkpoint_fingerprint`).

    Accepts a checkpoint choice (see :func:`resolve_checkpoint`) or a loaded model: one
    loaded from a directory is hashed by its files, any other (``pretrained``, a model
    built in code) by its in-memory state (:func:`core.evaluation.cache.model_fingerprint`).
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
