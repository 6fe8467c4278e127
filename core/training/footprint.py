"""How much memory training a recipe needs, against what this machine has: the
estimate behind the job system's "too big for this machine" refusal and the trainer's
start-up check. Separate from :mod:`core.config.limits` (which every config build calls and which
must not import the model): this module builds a skeleton of the model on torch's "meta"
device, so it imports torch and core.model.multitask, lazily.
"""
from __future__ import annotations

from core.errors import ConfigError
from core.config import limits


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


def _encoder_config(config):
    from core.model.bert import read_bert_config, resolve_model_dir
    from core.errors import MinbertError
    try:
        return read_bert_config(resolve_model_dir(config.model.encoder))
    except MinbertError as e:
        raise ConfigError(f"model.encoder {config.model.encoder!r}: {e}") from None


def count_parameters(config, bert_config=None) -> tuple[int, int]:
    """(encoder parameters, head parameters) of the model a recipe builds, counted on a
    skeleton on torch's "meta" device (nothing allocated; the declared ranges keep the
    skeleton small)."""
    import torch

    from core.model.bert import BertModel
    from core.model.multitask import MultitaskBert
    bert_config = bert_config or _encoder_config(config)
    if bert_config.num_hidden_layers > 96:
        raise ConfigError(f"model.encoder has {bert_config.num_hidden_layers} layers; the limit is 96")
    with torch.device("meta"):
        model = MultitaskBert(config, BertModel(bert_config), None)
    encoder = sum(p.numel() for p in model.bert.parameters())
    return encoder, sum(p.numel() for p in model.parameters()) - encoder


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
    bert_config = bert_config or _encoder_config(config)
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
