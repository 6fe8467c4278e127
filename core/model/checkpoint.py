"""Checkpoint IO: where a checkpoint is, what its files must hold, how a model is
written into one and read back out of one.

    resolve_checkpoint(path)        the directory a name means (the shipped-model alias
                                    "minbert-multitask" -> checkpoints/minbert-multitask:
                                    its one owner; loading, serving and the evaluation
                                    cache's fingerprints all resolve through it)
    save_checkpoint(model, dir)     publish atomically (weights, config.json, tokenizer,
                                    extra files, COMPLETE marker last)
    load_checkpoint(cls, path)      a checkpoint directory or "pretrained" -> model
    read_checkpoint_meta(dir)       config.json, checked (format, version, completeness)
    read_checkpoint_weights(dir)    the tensors, under their names in this code
    checkpoint_tasks(path)          the tasks a checkpoint serves, without its weights

The checkpoint key map (``LEGACY_HEAD_PARTS``, :func:`current_key`) names every tensor
whose name changed since checkpoints were first written; every read of stored weights
(checkpoints and resume state) goes through it, so old checkpoints load (the shipped
one stores ``heads.<task>.mlp.*``).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import torch

from core.atomic import check_free_space, link_or_copy, publish_dir, recover_swap, save_errors, staging_dir
from core.config.schema import Config
from core.errors import CheckpointError, MinbertError
from core.model import guard as checkpoint_guard
# The format, defined with its checks (core/model/guard.py): version 1, the first format
# (no completeness marker; still loads); 2: published atomically with a ``COMPLETE``
# marker written last, which loaders require.
from core.model.guard import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, COMPLETE_MARKER
from core.model.bert import BertConfig, BertModel, check_state_shapes, load_tokenizer, safetensors_shapes
from core.model.precision import quantize_model, resolve_mode
from core.paths import CHECKPOINTS_DIR
from core.tasks import TASKS, served_tasks

# The model shipped in the repository: ``MultitaskBert.load("minbert-multitask")`` finds it
# from any working directory (configs/best.yaml; README "Results").
SHIPPED = "minbert-multitask"
SHIPPED_DIR = CHECKPOINTS_DIR / SHIPPED
PRETRAINED = "pretrained"

# Files a checkpoint publication writes itself; any other entry of the directory
# (train_log.jsonl, resume/, job logs, caches) is carried over when it is replaced.
CHECKPOINT_OWNED = {"model.safetensors", "config.json", COMPLETE_MARKER, "metrics.json", "predictions",
                    "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                    "added_tokens.json"}

# The checkpoint key map: earlier names of a head's parts -> their names in this code, as
# ``heads.<task>.<earlier>.*`` -> ``heads.<task>.<now>.*``. TaskHead.mlp became
# TaskHead.ffn (format-1 checkpoints, the shipped one among them, store ``mlp``).
LEGACY_HEAD_PARTS = {"mlp": "ffn"}


def current_key(key: str) -> str:
    """A stored tensor's name in this code (:data:`LEGACY_HEAD_PARTS` applied), e.g.
    ``heads.sst.mlp.net.1.weight`` -> ``heads.sst.ffn.net.1.weight``."""
    parts = key.split(".")
    for i in range(len(parts) - 3):
        if parts[i] == "heads" and parts[i + 2] in LEGACY_HEAD_PARTS:
            parts[i + 2] = LEGACY_HEAD_PARTS[parts[i + 2]]
    return ".".join(parts)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The directory ``path`` names: the shipped-model alias ``"minbert-multitask"`` is
    checkpoints/minbert-multitask unless a directory of that name exists where we are;
    any other path is itself. ("pretrained" is no directory: callers test it first.)"""
    directory = Path(path)
    if str(path) == SHIPPED and not directory.is_dir():
        return SHIPPED_DIR
    return directory


# ------------------------------------------------------------------- save
def save_checkpoint(model, directory: str | os.PathLike, extra: dict | None = None,
                    dtype: torch.dtype | None = None, extra_files: dict[str, str | bytes] | None = None,
                    populate: Callable[[Path], None] | None = None) -> Path:
    """Publish ``model`` as a checkpoint atomically: ``model.safetensors``, ``config.json``, the
    tokenizer files, ``extra_files`` (name -> content, e.g. ``metrics.json``) and
    whatever ``populate(staging_dir)`` writes (e.g. ``predictions/``) are built in a
    temporary directory beside ``directory``, the completeness marker ``COMPLETE``
    is written last, everything is fsynced, and the directory is swapped in by one
    rename (core/atomic.py). Files of an existing ``directory`` that are not part of
    a checkpoint (``train_log.jsonl``, ``resume/``, logs) are carried over.
    ``dtype=torch.float16`` stores the floating-point weights in half precision (half
    the size; :func:`load_checkpoint` casts them back to the model's float32). See
    core/model/checkpoint.py."""
    if getattr(model, "quantization", None):
        raise MinbertError(f"this model is {model.quantization}-quantized for inference and cannot be "
                           f"saved as a checkpoint; save the fp32 model (load it without quantize=)")
    directory = Path(directory)
    with save_errors(directory, "the checkpoint"):   # an OS error names its cause (core/atomic.py)
        return _publish(model, directory, extra, dtype, extra_files, populate)


def _publish(model, directory: Path, extra: dict | None, dtype: torch.dtype | None,
             extra_files: dict[str, str | bytes] | None, populate: Callable[[Path], None] | None) -> Path:
    from safetensors.torch import save_file
    recover_swap(directory)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"{directory} is a file; pass a directory to save the checkpoint into")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    check_free_space(directory, sum(v.numel() * v.element_size() for v in state.values()) + 2 ** 20)
    staging = staging_dir(directory)
    try:
        save_file(state, str(staging / "model.safetensors"), metadata={"format": CHECKPOINT_FORMAT})
        meta = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION,
                "config": model.config.to_dict(), "encoder_config": model.bert.config.to_dict(),
                "tasks": list(model.heads.keys()), "has_pooler": model.bert.pooler is not None,
                **(extra or {})}
        (staging / "config.json").write_text(json.dumps(meta, indent=2))
        model.tokenizer.save_pretrained(str(staging))
        manifest = {p.name: p.stat().st_size for p in sorted(staging.iterdir()) if p.is_file()}
        for name, content in (extra_files or {}).items():
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        if populate is not None:
            populate(staging)
        if directory.is_dir():   # the run's other files stay with the checkpoint
            for entry in directory.iterdir():
                if not (staging / entry.name).exists() and _carried_over(entry.name):
                    link_or_copy(entry, staging / entry.name)
        # written last: a directory without it was not finished (see read_checkpoint_meta)
        (staging / COMPLETE_MARKER).write_text(json.dumps(
            {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "files": manifest}, indent=2))
        publish_dir(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def _carried_over(name: str) -> bool:
    """Whether a directory entry survives a checkpoint publication (see ``CHECKPOINT_OWNED``);
    temporary entries of interrupted writers never do."""
    if name in CHECKPOINT_OWNED:
        return False
    return not (name.startswith(".") and (".staging-" in name or name.endswith((".previous", ".tmp"))))


# ------------------------------------------------------------------- load
def load_checkpoint(cls, path: str | os.PathLike = PRETRAINED, device: str | torch.device = "cpu",
                    quantize: str | None = None):
    """``cls`` (MultitaskBert) from a checkpoint directory, the shipped-model alias, or
    "pretrained" (see :meth:`MultitaskBert.load`)."""
    if quantize is not None and resolve_mode(quantize, device) == "int8" and torch.device(device).type != "cpu":
        raise MinbertError(f"quantize={quantize!r} is for CPU inference; use device='cpu' or quantize=None")
    if str(path) == PRETRAINED:
        config = Config(name="pretrained")
        model = cls(config, BertModel.from_pretrained(config.model.encoder),
                    load_tokenizer(config.model.encoder), tasks=[])
        return quantize_model(model.to(device).eval(), quantize)
    directory = resolve_checkpoint(path)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {directory}")
    meta = read_checkpoint_meta(directory)
    config, bert_config, tasks = _described_model(directory, meta)
    tokenizer = _checkpoint_tokenizer(directory, config)
    skeleton = _checked_skeleton(cls, directory, meta, config, bert_config, tasks, tokenizer)
    state = read_checkpoint_weights(directory)
    model = skeleton.to_empty(device="cpu")   # allocated now, at the sizes just checked
    model.tokenizer = tokenizer
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    model.checkpoint_dir = directory
    return quantize_model(model.to(device).eval(), quantize)


def _described_model(directory: Path, meta: dict) -> tuple[Config, BertConfig, list[str] | None]:
    """(config, encoder config, tasks) of a checkpoint's config.json, or CheckpointError."""
    try:
        config = Config.from_dict(meta["config"])
        bert_config = BertConfig.from_dict(meta["encoder_config"])
        tasks = meta.get("tasks")
        if tasks is not None and (not isinstance(tasks, list) or not set(tasks) <= set(TASKS)):
            raise CheckpointError(f"tasks must be a list of sst/qqp/sts, got {tasks!r}")
    except (MinbertError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{directory / 'config.json'} is corrupt or from an incompatible version: {e}") from None
    return config, bert_config, tasks


def _checked_skeleton(cls, directory: Path, meta: dict, config: Config, bert_config: BertConfig,
                      tasks: list[str] | None, tokenizer):
    """The model on the "meta" device (allocating nothing), its tensor sizes checked
    against the safetensors header: a config.json that does not match the weights
    fails here, before any weight is read."""
    config_path = directory / "config.json"
    if not (directory / "model.safetensors").is_file():
        raise CheckpointError(f"{directory} is incomplete: model.safetensors is missing")
    weights_path = checkpoint_guard.check_weights(directory)
    found = {current_key(k): v for k, v in safetensors_shapes(weights_path).items()}
    try:
        with torch.device("meta"):
            skeleton = cls(config, BertModel(bert_config, add_pooler=meta.get("has_pooler", True)),
                           tokenizer, tasks=tasks)
    except (MinbertError, ValueError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{config_path} describes a model that cannot be built: {e}") from None
    check_state_shapes({k: tuple(v.shape) for k, v in skeleton.state_dict().items()}, found,
                       weights_path, config_path, error=CheckpointError)
    return skeleton


def checkpoint_tasks(path) -> list[str]:
    """The tasks a checkpoint serves (:meth:`MultitaskBert.served_tasks`), read from its
    config.json without loading the weights ("pretrained": the zero-shot tasks)."""
    if str(path) == PRETRAINED:
        return served_tasks([])
    directory = resolve_checkpoint(path)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {path}")
    return served_tasks(read_checkpoint_meta(directory).get("tasks") or [])


def read_checkpoint_meta(directory: Path) -> dict:
    """``config.json`` of a checkpoint directory, checked: format, version, and for
    format_version >= 2 the ``COMPLETE`` marker and the sizes it lists. Checkpoints of
    format_version 1 (written before the marker existed) load as before."""
    directory = Path(directory)
    recover_swap(directory)
    meta = checkpoint_guard.read_config(directory)   # every field typed and ranged (core/model/guard.py)
    if meta.get("format_version", 0) >= 2:
        checkpoint_guard.check_complete(directory)
    return meta


def read_checkpoint_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``directory/model.safetensors`` (a checkpoint or resume state),
    under their names in this code (the key map, :func:`current_key`)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    path = Path(directory) / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{directory} is incomplete: model.safetensors is missing")
    path = checkpoint_guard.check_weights(directory)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} is corrupt (not a readable safetensors file: {e})") from None
    return {current_key(k): v for k, v in state.items()}


def _checkpoint_tokenizer(directory: Path, config: Config):
    """The checkpoint's own tokenizer files; never a fallback to another tokenizer (a
    different vocabulary would silently give wrong predictions) nor a download."""
    checkpoint_guard.check_tokenizer_files(directory)
    if (directory / "tokenizer.json").is_file() or (directory / "vocab.txt").is_file():
        try:
            return load_tokenizer(directory)
        except MinbertError as e:
            raise CheckpointError(f"{directory}: tokenizer files are corrupt ({e})") from None
    raise CheckpointError(
        f"{directory} has no tokenizer files (vocab.txt or tokenizer.json): copy them from the "
        f"encoder it was trained from ({config.model.encoder!r}; for 'minilm' see "
        f"core.model.bert.packaged_model_dir()), or save the checkpoint again with MultitaskBert.save")
