"""On-disk cache of embeddings and predictions, keyed by model content and inputs.

    from core.cache import cached_embed, cached_predict
    emb = cached_embed(model, texts)                   # [n, d], computed once per model + texts
    probs = cached_predict(model, "sst", texts)        # MultitaskBert.predict_task, cached

Dev evaluation (core/evaluate.py) uses two more keys, so that a checkpoint evaluated
before is never loaded again and an encoder encoded before is never run again:

* :func:`checkpoint_fingerprint` - the sha256 of a checkpoint directory's files
  (``model.safetensors``, ``config.json``, tokenizer files), computed without loading the
  model (memoized per path, size and mtime within a process);
* :func:`encoder_fingerprint` - the encoder's tensors only, with pooling, ``max_len``, the
  tokenizer's vocabulary and the inference precision: a checkpoint trained with a frozen
  encoder shares it with ``pretrained``, so their sentence embeddings are computed once.

Re-opening an app page or re-running an analysis then reads a ``.npy`` file instead of
re-encoding a dataset. A key is the sha256 of

* the model's **content**: every tensor of its ``state_dict`` (the bytes that
  ``model.safetensors`` holds; int8-quantized weights hash differently from fp32) and
  its model settings (pooling, ``max_len``, prompts, heads), and
* the inputs: the task or "embed", and the exact list(s) of texts.

So a retrained checkpoint in the same directory, a different pooling or a changed list
of sentences never hits a stale entry, while the same weights loaded from anywhere (a
checkpoint, a model still in memory after training) share entries. The model hash is
computed once per model object and recomputed only when a parameter was modified in
place (PyTorch's per-tensor version counters tell).

Files live in ``checkpoints/.cache/`` of the repository unless ``cache_dir`` or the
environment variable ``MINBERT_CACHE_DIR`` says otherwise; :func:`clear_cache` empties it.
Writes are atomic (a temporary file then a rename), and an unreadable entry is
recomputed and rewritten.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
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


def model_fingerprint(model) -> str:
    """sha256 of a MultitaskBert's weights and of the settings that shape its outputs."""
    versions = _versions(model)
    memo = getattr(model, "_fingerprint_memo", None)
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
    model._fingerprint_memo = (versions, digest)
    return digest


def encoder_fingerprint(model) -> str:
    """sha256 of what a MultitaskBert's sentence embeddings depend on: the encoder's
    tensors, pooling, max_len, the tokenizer's vocabulary and the inference precision."""
    versions = _versions(model.bert)
    memo = getattr(model, "_encoder_fingerprint_memo", None)
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
    model._encoder_fingerprint_memo = ((versions, settings), digest)
    return digest


_FILE_MEMO: dict[tuple, str] = {}


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
    (``"pretrained"``: the packaged encoder's). Cheap: no model is loaded."""
    if str(path) == "pretrained":
        from core.bert import packaged_model_dir
        from core.model import STS_MAX, ZERO_SHOT_PARAPHRASE
        directory = packaged_model_dir()
        # the zero-shot heads are constants in code: they are part of the content
        tag = f"pretrained|{sorted(ZERO_SHOT_PARAPHRASE.items())}|{STS_MAX}"
    else:
        directory, tag = Path(path), "checkpoint"
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
def cache_path(model, kind: str, texts_a: Sequence[str], texts_b: Sequence[str] | None = None,
               cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the result of ``kind`` ("embed" or a task) on these inputs is stored."""
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = hashlib.sha256(f"v{CACHE_VERSION}|{kind}|{model_fingerprint(model)}|"
                         f"{texts_fingerprint(texts_a, texts_b)}".encode()).hexdigest()
    return directory / "arrays" / f"{kind}-{key[:32]}.npy"


def keyed_path(kind: str, parts: Sequence[str], cache_dir: str | os.PathLike | None = None) -> Path:
    """Where an array of ``kind`` identified by the strings ``parts`` is stored."""
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = hashlib.sha256("|".join([f"v{CACHE_VERSION}", kind, *parts]).encode()).hexdigest()
    return directory / "arrays" / f"{kind}-{key[:32]}.npy"


def read_array(path: Path) -> np.ndarray | None:
    """The array stored at ``path``, or None (absent or unreadable)."""
    if path.is_file():
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            log.warning("cache entry %s is unreadable (%s); recomputing it", path, e)
    return None


def write_array(path: Path, value: np.ndarray) -> None:
    """Store ``value`` at ``path`` atomically; a failed write is logged, never raised."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(value), allow_pickle=False)
        os.replace(tmp, path)
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


def cached_embed(model, texts: Sequence[str], batch_size: int = 64,
                 cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """``model.embed(texts)``, computed once per (model content, texts)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    return cached_array(cache_path(model, "embed", texts, None, cache_dir),
                        lambda: model.embed(texts, batch_size=batch_size))


def cached_predict(model, task: str, texts_a: Sequence[str], texts_b: Sequence[str] | None = None,
                   batch_size: int = 64, cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """``model.predict_task(task, texts_a, texts_b)``, computed once per (model, inputs)."""
    texts_a = [texts_a] if isinstance(texts_a, str) else list(texts_a)
    texts_b = None if texts_b is None else ([texts_b] if isinstance(texts_b, str) else list(texts_b))
    return cached_array(cache_path(model, task, texts_a, texts_b, cache_dir),
                        lambda: model.predict_task(task, texts_a, texts_b, batch_size=batch_size))


def clear_cache(cache_dir: str | os.PathLike | None = None) -> int:
    """Delete every cached array; returns how many files were removed."""
    directory = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "arrays"
    removed = 0
    for path in directory.glob("*.npy"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed
