"""The optimizer's parameter groups of a stage: exactly the parameters its objective
depends on, by learning rate and weight decay.

* :func:`trained_parameters` - the parameters a stage trains, found from the autograd
  graph of its objective (core/training/objective.py) on a probe batch of each stream;
* :func:`param_groups` - those parameters grouped for the optimizer: the encoder at
  ``lr`` (one rate per layer with ``layer_decay`` < 1), everything else at ``head_lr``;
  no weight decay on biases, LayerNorm and the learned task weights.
"""
from __future__ import annotations

import torch

from core.errors import MinbertError
from core.model.multitask import MultitaskBert
from core.training.objective import Objective
from core.training.state import Stage


def encoder_depth(name: str, n_layers: int) -> int:
    """Depth of an encoder parameter for layer-wise learning rates: 0 = embeddings,
    i + 1 = ``encoder.layer.i``, n_layers = the top layer and the pooler above it."""
    if name.startswith("embeddings."):
        return 0
    if name.startswith("encoder.layer."):
        return int(name.split(".")[2]) + 1
    return n_layers


def graph_leaves(output: torch.Tensor) -> set[int]:
    """``id`` of every leaf tensor (parameter) the autograd graph of ``output`` reaches:
    the parameters ``output.backward()`` would give a gradient."""
    leaves: set[int] = set()
    seen: set = set()
    stack = [output.grad_fn] if output.grad_fn is not None else []
    while stack:
        fn = stack.pop()
        if fn in seen:
            continue
        seen.add(fn)
        variable = getattr(fn, "variable", None)   # AccumulateGrad: the leaf it accumulates into
        if variable is not None:
            leaves.add(id(variable))
        stack.extend(nxt for nxt, _ in fn.next_functions if nxt is not None)
    return leaves


def trained_parameters(model: MultitaskBert, stage: Stage, objective: Objective,
                       device: torch.device) -> list[tuple[str, torch.nn.Parameter]]:
    """``(name, parameter)`` of every parameter the stage's objective depends on, in
    model order: the leaves of the autograd graph of the objective on a probe batch of
    each of the stage's streams (its first examples), through the same code path as a
    training step (task losses, regularizers, task weighting). Nothing is stepped or
    back-propagated; the random generators and the model's buffers (batch-norm
    statistics) are restored, so the run continues exactly as without the probe.
    A frozen encoder (``requires_grad`` off) is not in the graph, hence in no group."""
    named = list(model.named_parameters())
    if objective.uncertainty is not None:
        named += [(f"uncertainty.{n}", p) for n, p in objective.uncertainty.named_parameters()]
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    used: set[int] = set()
    devices = [device] if device.type == "cuda" else []
    objective.train_mode()
    with torch.random.fork_rng(devices=devices):
        for task, stream in stage.streams.items():
            idx = list(range(min(len(stream.features), stream.batch_size)))
            _, total = objective(task, idx, len(idx), {})
            used |= graph_leaves(total)
    with torch.no_grad():
        for n, b in model.named_buffers():
            b.copy_(buffers[n])
    params = [(n, p) for n, p in named if id(p) in used]
    if not params:
        raise MinbertError(f"stage {stage.name!r} trains nothing: its loss depends on no parameter "
                           f"(frozen encoder and no head with weights?)")
    return params


def param_groups(model: MultitaskBert, stage: Stage, objective: Objective, device: torch.device) -> list[dict]:
    """The optimizer's groups: exactly the parameters the stage's objective depends on
    (:func:`trained_parameters`), by learning rate (encoder: ``lr``, one rate per layer
    with ``layer_decay`` < 1; everything else, heads, report 002's shared projection and
    learned task weights included: ``head_lr``) and weight decay (none on biases,
    LayerNorm and the learned task weights)."""
    cfg, groups = stage.train, []
    no_decay = lambda n: n.endswith("bias") or "LayerNorm" in n or n.startswith("uncertainty.")
    n_layers = model.bert.config.num_hidden_layers
    encoder = {id(p) for p in model.bert.parameters()}
    by_lr: dict[float, list] = {}
    for name, p in trained_parameters(model, stage, objective, device):
        if id(p) in encoder:
            depth = encoder_depth(name.removeprefix("bert."), n_layers)
            lr = cfg.lr * cfg.layer_decay ** (n_layers - depth)
        else:
            lr = cfg.head_lr or cfg.lr
        by_lr.setdefault(lr, []).append((name, p))
    for lr, params in by_lr.items():
        decay = [p for n, p in params if not no_decay(n)]
        plain = [p for n, p in params if no_decay(n)]
        groups += [{"params": decay, "lr": lr, "weight_decay": cfg.weight_decay},
                   {"params": plain, "lr": lr, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]
