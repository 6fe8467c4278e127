"""Checks of a checkpoint directory before anything in it is used: every file the loader
reads is a regular file inside the directory (no link leaving it, no FIFO or device that
never ends), of a bounded size, and every field of ``config.json``, ``COMPLETE`` and the
tokenizer files has the type and range it must have. Each check raises
:class:`core.errors.CheckpointError` saying what is wrong and what to do.

    checked_file(directory, name, max_bytes)  the path of a plain file name in ``directory``
    read_config(directory)                    config.json: format, version, config (via
                                              Config.from_dict: core/config/limits.py ranges),
                                              encoder_config, tasks, has_pooler, trained
    check_complete(directory)                 the COMPLETE marker and the sizes it lists
    check_weights(directory)                  model.safetensors: size against the machine's
                                              memory, a sane header
    check_tokenizer_files(directory)          tokenizer.json / vocab.txt / tokenizer_config.json
                                              / special_tokens_map.json / added_tokens.json
    check_checkpoint(directory)               all of the above (the meta dict)

``MultitaskBert.load`` calls them (core/model/checkpoint.py: ``load_checkpoint``,
``read_checkpoint_meta``, ``read_checkpoint_weights``, ``_checkpoint_tokenizer``). The
format's name, version and completeness marker are defined here, their one home.
"""
from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

from core.atomic import read_json_object
from core.errors import CheckpointError, MinbertError
from core.tasks import TASKS

CHECKPOINT_FORMAT = "minbert-checkpoint"
CHECKPOINT_VERSION = 2
COMPLETE_MARKER = "COMPLETE"

MAX_NAME_CHARS = 255                  # NAME_MAX of Linux file systems
MAX_CONFIG_BYTES = 1 << 20            # config.json: ~5 kB
MAX_MARKER_BYTES = 1 << 20            # COMPLETE: a few hundred bytes
MAX_MARKER_FILES = 64
MAX_FILE_BYTES = 1 << 40              # a size COMPLETE may list: 1 TiB
SAFETENSORS_MAX_HEADER = 100_000_000  # safetensors' own limit on its JSON header
# tokenizer files: MiniLM's tokenizer.json is 466 kB, vocab.txt 232 kB
TOKENIZER_LIMITS = {"tokenizer.json": 64 << 20, "vocab.txt": 16 << 20, "tokenizer_config.json": 1 << 20,
                    "special_tokens_map.json": 1 << 20, "added_tokens.json": 1 << 20}
MAX_VOCAB = 1_000_000
MAX_ADDED_TOKENS = 10_000
TOKENIZER_CLASSES = ("BertTokenizer", "BertTokenizerFast")
WEIGHT_DTYPES = ("float32", "float16", "bfloat16")
FIX = ("save the checkpoint again with MultitaskBert.save (or `python -m core.train ... --resume`), "
       "or pick another checkpoint")


def _plain_name(name, where: str) -> str:
    if (not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS or name in (".", "..")
            or any(c in name for c in "/\\\x00")):
        shown = repr(name)[:80]
        raise CheckpointError(f"{where} names {shown}, which is not a plain file name inside the checkpoint "
                              f"directory; {FIX}")
    return name


def checked_file(directory: str | os.PathLike, name: str, max_bytes: int, where: str | None = None,
                 required: bool = True) -> Path | None:
    """``directory / name`` when ``name`` is a plain file name and the entry is a regular
    file (a symbolic link only when it stays inside ``directory``) of at most ``max_bytes``;
    None when it is missing and not ``required``."""
    directory = Path(directory)
    _plain_name(name, where or str(directory))
    path = directory / name
    if not os.path.lexists(path):
        if required:
            raise CheckpointError(f"{directory} is incomplete: {name} is missing; {FIX}")
        return None
    if path.is_symlink():
        inside = os.path.realpath(path).startswith(os.path.realpath(directory) + os.sep)
        if not inside:
            raise CheckpointError(f"{path} is a link to {os.path.realpath(path)}, outside the checkpoint "
                                  f"directory: a checkpoint holds its own files; copy the file in instead")
    try:
        st = path.stat()
    except OSError as e:
        raise CheckpointError(f"{path} cannot be read ({e.strerror or e}); {FIX}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (a FIFO, socket or device)"
        raise CheckpointError(f"{path} is {kind}; a checkpoint's {name} is a file; {FIX}")
    if st.st_size > max_bytes:
        raise CheckpointError(f"{path} is {st.st_size:,} bytes; a checkpoint's {name} is at most "
                              f"{max_bytes:,}: this is not one; {FIX}")
    return path


# ------------------------------------------------------------------ config.json
def _int(value, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _check_meta_fields(meta: dict, path: Path) -> None:
    tasks = meta.get("tasks")
    if tasks is not None and (not isinstance(tasks, list) or len(tasks) > len(TASKS)
                              or not all(isinstance(t, str) and t in TASKS for t in tasks)
                              or len(set(tasks)) != len(tasks)):
        raise CheckpointError(f"{path}: tasks must be a list of distinct names from sst, qqp, sts, "
                              f"got {repr(tasks)[:80]}")
    if not isinstance(meta.get("has_pooler", True), bool):
        raise CheckpointError(f"{path}: has_pooler must be true or false, got {repr(meta['has_pooler'])[:40]}")
    trained = meta.get("trained", {})
    if not isinstance(trained, dict) or not all(_int(trained[k], 0, 10**12) for k in ("epoch", "step")
                                                if k in trained):
        raise CheckpointError(f"{path}: trained must be a mapping with whole-number epoch and step, "
                              f"got {repr(trained)[:80]}")
    if meta.get("weights_dtype", "float32") not in WEIGHT_DTYPES:
        raise CheckpointError(f"{path}: weights_dtype must be one of {', '.join(WEIGHT_DTYPES)}, "
                              f"got {repr(meta['weights_dtype'])[:40]}")
    if not isinstance(meta.get("exported_from", ""), str):
        raise CheckpointError(f"{path}: exported_from must be a name, got {repr(meta['exported_from'])[:40]}")


def _check_model_fields(meta: dict, path: Path) -> None:
    from core.model.bert import BertConfig
    from core.config.schema import Config
    for key in ("config", "encoder_config"):
        if not isinstance(meta.get(key), dict):
            raise CheckpointError(f"{path} is corrupt or from an incompatible version: {key} must be a "
                                  f"mapping, got {type(meta.get(key)).__name__}")
    try:
        Config.from_dict(meta["config"])
        BertConfig.from_dict(meta["encoder_config"])
    except (MinbertError, TypeError, ValueError, OverflowError) as e:   # OverflowError: float(10**400)
        raise CheckpointError(f"{path} is corrupt or from an incompatible version: {e}") from None


def read_config(directory: str | os.PathLike, model_fields: bool = True) -> dict:
    """``config.json`` of a checkpoint, every known field checked (``model_fields``: also
    ``config`` through ``Config.from_dict``, so core/config/limits.py's ranges, and
    ``encoder_config`` through ``BertConfig.from_dict``)."""
    directory = Path(directory)
    if not os.path.lexists(directory / "config.json"):
        raise CheckpointError(f"{directory} is not a checkpoint: config.json is missing")
    path = checked_file(directory, "config.json", MAX_CONFIG_BYTES)
    meta = read_json_object(path, CheckpointError, "a checkpoint", max_bytes=MAX_CONFIG_BYTES, max_depth=16)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a minBERT checkpoint config (format != {CHECKPOINT_FORMAT!r})")
    version = meta.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{path}: format_version must be an integer, got {repr(version)[:40]}")
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} has format_version {version if version < 10**6 else 'too large'}; "
                              f"this code reads up to {CHECKPOINT_VERSION}: update minBERT Studio")
    if version < 0:
        raise CheckpointError(f"{path}: format_version must be >= 0, got {version}")
    _check_meta_fields(meta, path)
    if model_fields:
        _check_model_fields(meta, path)
    return meta


# ------------------------------------------------------------------ COMPLETE
def check_complete(directory: str | os.PathLike) -> dict[str, int]:
    """The marker's ``files`` ({plain name: size}), each present with that size."""
    directory = Path(directory)
    fix = ("its writer was interrupted before it finished. Train it again (`python -m core.train "
           "... --resume` continues a run), re-export it, or pick another checkpoint")
    if not os.path.lexists(directory / COMPLETE_MARKER):
        raise CheckpointError(f"{directory} is incomplete: the {COMPLETE_MARKER} marker is missing, so {fix}")
    marker = checked_file(directory, COMPLETE_MARKER, MAX_MARKER_BYTES)
    raw = read_json_object(marker, CheckpointError, "a checkpoint", max_bytes=MAX_MARKER_BYTES, max_depth=4)
    files = raw.get("files", {})
    if not isinstance(files, dict) or len(files) > MAX_MARKER_FILES:
        raise CheckpointError(f"{marker} is corrupt (files must be a mapping of at most {MAX_MARKER_FILES} "
                              f"names to sizes); {fix}")
    for name, size in files.items():
        _plain_name(name, str(marker))
        if not _int(size, 0, MAX_FILE_BYTES):
            raise CheckpointError(f"{marker} is corrupt (the size of {name} is {repr(size)[:40]}, not a "
                                  f"whole number of bytes); {fix}")
        if not os.path.lexists(directory / name):
            raise CheckpointError(f"{directory} is incomplete: {name} is missing (listed in {COMPLETE_MARKER}); {fix}")
        p = checked_file(directory, name, MAX_FILE_BYTES, str(marker))
        if p.stat().st_size != size:
            raise CheckpointError(f"{p} is corrupt or cut short: {p.stat().st_size} bytes where {COMPLETE_MARKER} "
                                  f"lists {size}; {fix}")
    return dict(files)


# ------------------------------------------------------------------ weights
def check_weights(directory: str | os.PathLike, name: str = "model.safetensors") -> Path:
    """The weights file: regular, inside, no larger than the memory this process may use
    (it is read whole), with a header length that fits the file and safetensors' limit."""
    from core.config.limits import machine_memory
    directory = Path(directory)
    memory = machine_memory()
    path = checked_file(directory, name, MAX_FILE_BYTES)
    size = path.stat().st_size
    if size > memory:
        raise CheckpointError(f"{path} is {size / 2**30:,.1f} GiB, more than the {memory / 2**30:,.1f} GiB of "
                              f"memory here: load it on a bigger machine (or set MINBERT_MEMORY_GB if that "
                              f"figure is wrong)")
    with path.open("rb") as f:
        head = f.read(8)
    header = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
    if not 2 <= header <= min(SAFETENSORS_MAX_HEADER, size - 8):
        raise CheckpointError(f"{path} is corrupt (not a readable safetensors file: its header length "
                              f"{header:,} does not fit the file of {size:,} bytes); {FIX}")
    return path


# ------------------------------------------------------------------ tokenizer
def _check_tokenizer_config(directory: Path) -> None:
    path = checked_file(directory, "tokenizer_config.json", TOKENIZER_LIMITS["tokenizer_config.json"],
                        required=False)
    if path is None:
        return
    cfg = read_json_object(path, CheckpointError, "a checkpoint's tokenizer", max_bytes=1 << 20, max_depth=8)
    if "auto_map" in cfg or "fast_tokenizer_files" in cfg:
        key = "auto_map" if "auto_map" in cfg else "fast_tokenizer_files"
        raise CheckpointError(f"{path}: {key} is not accepted (a checkpoint's tokenizer is its own "
                              f"tokenizer.json / vocab.txt, never code or other files); remove the key")
    cls = cfg.get("tokenizer_class", "BertTokenizer")
    if cls not in TOKENIZER_CLASSES:
        raise CheckpointError(f"{path}: tokenizer_class must be one of {', '.join(TOKENIZER_CLASSES)}, "
                              f"got {repr(cls)[:60]}")
    for key, value in cfg.items():
        if key.endswith(("_file", "_files")) and value is not None:
            for name in value if isinstance(value, list) else [value]:
                checked_file(directory, _plain_name(name, f"{path}: {key}"), max(TOKENIZER_LIMITS.values()),
                             f"{path}: {key}")
    if len(cfg.get("added_tokens_decoder") or {}) > MAX_ADDED_TOKENS:
        raise CheckpointError(f"{path}: more than {MAX_ADDED_TOKENS:,} added tokens; {FIX}")


def _check_tokenizer_json(path: Path) -> None:
    tok = read_json_object(path, CheckpointError, "a checkpoint's tokenizer",
                           max_bytes=TOKENIZER_LIMITS["tokenizer.json"], max_depth=16)
    vocab = (tok.get("model") or {}).get("vocab") if isinstance(tok.get("model"), dict) else None
    if vocab is not None and (not isinstance(vocab, (dict, list)) or len(vocab) > MAX_VOCAB):
        raise CheckpointError(f"{path}: the vocabulary must be a mapping of at most {MAX_VOCAB:,} tokens; {FIX}")
    if len(tok.get("added_tokens") or []) > MAX_ADDED_TOKENS:
        raise CheckpointError(f"{path}: more than {MAX_ADDED_TOKENS:,} added tokens; {FIX}")


def _check_vocab_txt(path: Path) -> None:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path} is not UTF-8 text ({e}); {FIX}") from None
    if text.count("\n") > MAX_VOCAB:
        raise CheckpointError(f"{path} has more than {MAX_VOCAB:,} tokens; {FIX}")


def check_tokenizer_files(directory: str | os.PathLike) -> None:
    """Every tokenizer file the loader may read (those present): plain files inside the
    directory, within their size caps, tokenizer_config.json without code or file
    references that leave the directory, vocabularies of bounded size."""
    directory = Path(directory)
    present = {name: checked_file(directory, name, cap, required=False) for name, cap in TOKENIZER_LIMITS.items()}
    if present["tokenizer.json"] is None and present["vocab.txt"] is None:
        raise CheckpointError(f"{directory} has no tokenizer files (vocab.txt or tokenizer.json): copy them from "
                              f"the encoder it was trained from, or save the checkpoint again with MultitaskBert.save")
    for name in ("special_tokens_map.json", "added_tokens.json"):
        if present[name] is not None:
            read_json_object(present[name], CheckpointError, "a checkpoint's tokenizer", max_bytes=1 << 20,
                             max_depth=8)
    if os.path.lexists(directory / "chat_templates"):
        raise CheckpointError(f"{directory}/chat_templates is not part of a BERT checkpoint: remove it")
    _check_tokenizer_config(directory)
    if present["tokenizer.json"] is not None:
        _check_tokenizer_json(present["tokenizer.json"])
    if present["vocab.txt"] is not None:
        _check_vocab_txt(present["vocab.txt"])


def check_checkpoint(directory: str | os.PathLike) -> dict:
    """Every check of this module, in the order the loader reads: config.json (and for
    format_version >= 2 the marker), tokenizer files, weights. Returns config.json."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {directory}")
    meta = read_config(directory)
    if meta.get("format_version", 0) >= 2:
        check_complete(directory)
    check_tokenizer_files(directory)
    check_weights(directory)
    return meta
