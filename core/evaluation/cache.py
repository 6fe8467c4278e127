"""Content hashes, and arrays cached on disk under them: the project's one hash.

    checkpoint_fingerprint(path)     sha256 of a checkpoint directory's files (weights,
                                     config, tokenizer; "pretrained": the packaged encoder
                                     and the zero-shot constants; the shipped-model alias
                                     resolved as loading does), no model loaded
    model_fingerprint(model)         sha256 of an in-memory model's tensors and settings
    encoder_fingerprint(model)       the same for what its sentence embeddings depend on
    file_fingerprint(path)           sha256 of one file's bytes
    texts_fingerprint(texts_a, ...)  sha256 of exact lists of texts
    keyed_path(kind, parts)          where an array keyed by such strings lives
    cached_array(path, compute)      the array stored there, or ``compute()`` stored first

Users: dev evaluation (core/evaluation/evaluator.py: a checkpoint evaluated before - under any
name or path - is never loaded again; an encoder encoded before is never run again),
the analysis tools (analysis/checkpoints.py ``checkpoint_hash``: the keys of the
Embeddings page's samples and of the app's per-checkpoint caches).

A key is a hash of **content**: the same weights loaded from anywhere share entries,
while a retrained checkpoint in the same directory, another pooling or precision, or a
changed list of sentences never hits a stale one. File hashes are memoized per (path,
inode, size, mtime, ctime) and model hashes per model object, recomputed when a
parameter was modified in place (PyTorch's per-tensor version counters tell);
:func:`forget_fingerprints` drops both memos.

Files live in ``checkpoints/.cache/`` of the repository unless ``cache_dir`` or the
environment variable ``MINBERT_CACHE_DIR`` says otherwise. Writes go through
core/atomic.py; an unreadable entry is recomputed and rewritten.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import weakref
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from core.paths import REPO
from core.atomic import atomic_write_bytes

log = logging.getLogger(__name__)

CACHE_VERSION = 1
# Files of a checkpoint directory whose bytes decide its outputs.
CHECKPOINT_FILES = ("model.safetensors", "config.json", "tokenizer.json", "vocab.txt",
                    "tokenizer_config.json", "special_tokens_map.json")


def default_cache_dir() -> Path:
    return Path(os.environ.get("MINBERT_CACHE_DIR") or REPO / "checkpoints" / ".cache")


# ------------------------------------------------------------------ hashing
def _update_with(h, value) -> None:
    """Feed a state_dict value into the hash: tensors by their bytes (quantized ones by
    their integer values and scales), containers item by item, the rest by repr."""
    if isinstance(value, torch.Tensor):
        t = value.detach()
        if t.is_quantized:
            scales = t.q_per_channel_scales() if t.qscheme() in (torch.per_channel_affine,
                                                                 torch.per_channel_symmetric) \
                else torch.tensor([t.q_scale()])
            _update_with(h, t.int_repr())
            _update_with(h, scales)
            return
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, (tuple, list)):
        for item in value:
            _update_with(h, item)
    else:
        h.update(repr(value).encode())


def _versions(model: torch.nn.Module) -> tuple[int, ...]:
    return tuple(t._version for t in [*model.parameters(), *model.buffers()])


# model -> (what the digest was computed from, digest); entries go with their models
_MODEL_MEMO: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_ENCODER_MEMO: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def model_fingerprint(model) -> str:
    """sha256 of a MultitaskBert's weights and of the settings that shape its outputs."""
    versions = _versions(model)
    memo = _MODEL_MEMO.get(model)
    if memo is not None and memo[0] == versions:
        return memo[1]
    h = hashlib.sha256()
    for name, value in model.state_dict().items():
        h.update(name.encode())
        _update_with(h, value)
    # pooling, max_len, prompts, heads: every model setting that shapes the outputs
    h.update(json.dumps(dataclasses.asdict(model.config.model), sort_keys=True, default=str).encode())
    precision = getattr(model, "quantization", None)
    if precision is not None:   # bf16 autocast keeps the fp32 state_dict but not its outputs
        h.update(f"precision={precision}".encode())
    digest = h.hexdigest()
    _MODEL_MEMO[model] = (versions, digest)
    return digest


def encoder_fingerprint(model) -> str:
    """sha256 of what a MultitaskBert's sentence embeddings depend on: the encoder's
    tensors, pooling, max_len, the tokenizer's vocabulary and the inference precision."""
    versions = _versions(model.bert)
    memo = _ENCODER_MEMO.get(model)
    settings = (model.config.model.pooling, model.config.model.max_len, getattr(model, "quantization", None))
    if memo is not None and memo[0] == (versions, settings):
        return memo[1]
    h = hashlib.sha256()
    for name, value in model.bert.state_dict().items():
        h.update(name.encode())
        _update_with(h, value)
    h.update(json.dumps(settings).encode())
    h.update(json.dumps(sorted(model.tokenizer.get_vocab().items())).encode())
    h.update(f"lower={getattr(model.tokenizer, 'do_lower_case', None)}".encode())
    digest = h.hexdigest()
    _ENCODER_MEMO[model] = ((versions, settings), digest)
    return digest


_FILE_MEMO: dict[tuple, str] = {}


def forget_fingerprints() -> None:
    """Drop the memoized file and model digests of this process (files and models are
    hashed again on next use: a benchmark of the cold path)."""
    _FILE_MEMO.clear()
    _MODEL_MEMO.clear()
    _ENCODER_MEMO.clear()


def file_fingerprint(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, memoized per (path, inode, size, mtime, ctime) within
    this process (a rewrite changes the timestamps; a copy is another path)."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _FILE_MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _FILE_MEMO[key] = h.hexdigest()
    return _FILE_MEMO[key]


def checkpoint_fingerprint(path: str | os.PathLike) -> str:
    """sha256 of a checkpoint's content: its weights, config and tokenizer files
    (``"pretrained"``: the packaged encoder's; ``"minbert-multitask"``: the shipped
    checkpoint's, as :meth:`MultitaskBert.load` resolves it). Cheap: no model is loaded."""
    from core.model.checkpoint import PRETRAINED, resolve_checkpoint
    if str(path) == PRETRAINED:
        from core.model.bert import packaged_model_dir
        from core.model.heads import STS_MAX, ZERO_SHOT_PARAPHRASE
        directory = packaged_model_dir()
        # the zero-shot heads are constants in code: they are part of the content
        tag = f"pretrained|{sorted(ZERO_SHOT_PARAPHRASE.items())}|{STS_MAX}"
    else:   # the shipped-model alias names a directory too (core/model/checkpoint.py)
        directory, tag = resolve_checkpoint(path), "checkpoint"
    h = hashlib.sha256(tag.encode())
    for name in CHECKPOINT_FILES:
        file = directory / name
        if file.is_file():
            h.update(f"|{name}:{file_fingerprint(file)}".encode())
    return h.hexdigest()


def texts_fingerprint(*lists: Sequence[str] | None) -> str:
    h = hashlib.sha256()
    for texts in lists:
        h.update(json.dumps(None if texts is None else list(texts), ensure_ascii=False).encode())
        h.update(b"\x00")
    return h.hexdigest()


# -------------------------------------------------------------------- cache
def keyed_path(kind: str, parts: Sequence[str], cache_dir: str | os.PathLike | None = None) -> Path:
    """Where an array of ``kind`` identified by the strings ``parts`` is stored."""
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = hashlib.sha256("|".join([f"v{CACHE_VERSION}", kind, *parts]).encode()).hexdigest()
    return directory / "arrays" / f"{kind}-{key[:32]}.npy"


def read_array(path: Path) -> np.ndarray | dict[str, np.ndarray] | None:
    """The array stored at ``path`` (a ``.npz`` file: a dict of arrays), or None
    (absent or unreadable)."""
    path = Path(path)
    if path.is_file():
        try:
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as z:
                    return {k: z[k] for k in z.files}
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            log.warning("cache entry %s is unreadable (%s); recomputing it", path, e)
    return None


def write_array(path: Path, value: np.ndarray | dict[str, np.ndarray]) -> None:
    """Store ``value`` at ``path``, whole or not at all (core/atomic.py): an array as
    ``.npy``, a dict of arrays as ``.npz``. A failed write is logged, never raised."""
    buf = io.BytesIO()
    if isinstance(value, dict):
        np.savez(buf, **value)
    else:
        np.save(buf, np.asarray(value), allow_pickle=False)
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buf.getvalue())
    except OSError as e:   # a read-only or full disk must not break a prediction
        log.warning("could not write cache entry %s: %s", path, e)


def cached_array(path: Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The array stored at ``path``, or ``compute()`` stored there first."""
    value = read_array(path)
    if value is not None:
        return value
    value = np.asarray(compute())
    write_array(path, value)
    return value
