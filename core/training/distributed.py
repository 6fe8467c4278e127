"""Data-parallel training over several processes (GPUs, nodes, or CPU processes).

    # one GPU, or the CPU: a plain run
    python -m core.train --config configs/quick.yaml --out checkpoints/quick
    # 4 GPUs on one machine (NCCL), one process per GPU
    torchrun --standalone --nproc_per_node 4 -m core.train --config configs/quick.yaml --out checkpoints/q4
    # 2 nodes x 8 GPUs: run on every node, with its --node_rank
    torchrun --nnodes 2 --node_rank R --master_addr HOST --master_port 29500 --nproc_per_node 8 \\
        -m core.train --config configs/quick.yaml --out /shared/checkpoints/q16
    # CPU processes (gloo), e.g. to check a recipe: --device cpu
    torchrun --standalone --nproc_per_node 2 -m core.train --config ... --device cpu

How it works. torchrun starts one process per device and sets RANK / WORLD_SIZE /
LOCAL_RANK; :func:`init_distributed` joins the process group (NCCL on CUDA, gloo on
CPU). Every rank builds the *same global* batch indices from the same seed, whatever
the task schedule, and keeps its slice ``idx[rank::world_size]`` (:meth:`DistContext.shard`,
called in one place in the trainer). Each rank's per-example-mean loss is scaled by
:meth:`DistContext.loss_scale` so that, after :meth:`DistContext.all_reduce_gradients`
averages the gradients, every rank holds exactly the gradient of the mean loss over the
global batch, also when a batch does not split evenly. Identical gradients and identical
optimizer steps keep the ranks' weights identical; up to float rounding they are those
of a single process training on the same global batches (dropout masks differ, as they
are drawn per rank). Rank 0 alone logs, evaluates, writes checkpoints and the resume
state; it broadcasts the dev metrics so that every rank takes the same decisions.

Why an explicit all-reduce instead of wrapping the model in
``torch.nn.parallel.DistributedDataParallel``: a training step here is several
forward/backward passes (one per task, plus SMART's extra passes), some steps use only
one task's head, and frozen-encoder steps call the heads on cached vectors without the
encoder. DDP expects one forward and one backward per step over a fixed set of used
parameters; an all-reduce of the gradients once per step, bucketed, is correct for all
of these and costs one collective per ~25 MB of gradients.

The output directory must be on a file system that every node sees when ``--resume``
is used (every rank reads the resume state; only rank 0 writes it).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
import torch.distributed as dist
from torch import nn

BUCKET_BYTES = 25 * 2**20


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a data-parallel run (rank 0 of 1 when alone)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------- batches
    def shard(self, idx: Sequence[int]) -> list[int]:
        """This rank's share of a global batch: every ``world_size``-th index."""
        return list(idx[self.rank::self.world_size])

    def loss_scale(self, n_local: int, n_global: int) -> float:
        """Factor for this rank's mean loss over ``n_local`` of ``n_global`` examples so
        that averaging the gradients over ranks gives the gradient of the global mean:
        sum_r (n_r / N) * grad(mean_r) = grad(mean over the global batch)."""
        if not self.enabled or n_global == 0:
            return 1.0
        return n_local * self.world_size / n_global

    def device_for(self, device: torch.device) -> torch.device:
        """On CUDA, each process uses the GPU of its local rank."""
        if device.type == "cuda" and self.enabled:
            return torch.device("cuda", self.local_rank)
        return device

    # --------------------------------------------------------- collectives
    @torch.no_grad()
    def all_reduce_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """Average the gradients of ``params`` over ranks, in place.

        A parameter whose gradient is None on every rank (a head not used in this step,
        a frozen encoder) stays None, so the optimizer skips it as in a single process;
        where only some ranks have one (an empty slice), the others contribute zeros."""
        if not self.enabled:
            return
        params = [p for p in params if p.requires_grad]
        if not params:
            return
        device = params[0].device
        has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=device)
        dist.all_reduce(has_grad, op=dist.ReduceOp.MAX)
        active = [p for p, flag in zip(params, has_grad.tolist()) if flag]
        for p in active:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        for bucket in _buckets(active, BUCKET_BYTES):
            grads = [p.grad for p in bucket]
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat.div_(self.world_size)
            offset = 0
            for g in grads:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()

    @torch.no_grad()
    def broadcast_parameters(self, module: nn.Module) -> None:
        """Make every rank start from rank 0's parameters and buffers."""
        if not self.enabled:
            return
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (any picklable value)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def global_mean(self, values: dict[str, float], weights: dict[str, float], device: torch.device) \
            -> dict[str, float]:
        """sum over ranks of ``weights[k] * values[k]`` for every key (for logging: with
        weights n_local / n_global this is the loss over the global batch)."""
        if not self.enabled or not values:
            return dict(values)
        keys = sorted(values)
        t = torch.tensor([values[k] * weights[k] for k in keys], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return dict(zip(keys, t.tolist()))

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in one process)."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def sum_int(self, n: int) -> int:
        """``n`` summed over ranks (``n`` alone)."""
        if not self.enabled:
            return n
        t = torch.tensor([n], dtype=torch.int64,
                         device=self.device_for(torch.device("cuda" if self.backend == "nccl" else "cpu")))
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return int(t)

    def gather_rows(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Every rank's rows of ``x`` (sizes may differ, even 0), concatenated in rank
        order on every rank, and where this rank's rows start. Differentiable: the
        gradient of each rank's loss reaches the rank that computed the rows, so in-batch
        losses (MNRL, SimCSE) see the whole global batch as candidates, as one process
        would. Every rank must call it, the same number of times. ``(x, 0)`` alone."""
        if not self.enabled:
            return x, 0
        n = torch.tensor([x.shape[0]], device=x.device)
        sizes = [torch.zeros_like(n) for _ in range(self.world_size)]
        dist.all_gather(sizes, n)
        sizes = [int(t) for t in sizes]
        m = max(sizes)
        padded = torch.cat([x, x.new_zeros(m - x.shape[0], *x.shape[1:])]) if m > x.shape[0] else x
        full = _GatherRows.apply(padded, self.rank, self.world_size)
        keep = torch.cat([torch.arange(r * m, r * m + s, device=x.device) for r, s in enumerate(sizes)])
        return full[keep], sum(sizes[:self.rank])

    def params_in_sync(self, module: nn.Module) -> bool:
        """True when every rank holds bit-identical parameters (a sha256 per rank)."""
        if not self.enabled:
            return True
        h = hashlib.sha256()
        for p in module.parameters():
            h.update(p.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        digests = [None] * self.world_size
        dist.all_gather_object(digests, h.hexdigest())
        return len(set(digests)) == 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


class _GatherRows(torch.autograd.Function):
    """all_gather of equal-sized blocks; backward sums every rank's gradient for the
    whole gathered tensor and keeps this rank's block (works on gloo and NCCL)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(world_size)]
        dist.all_gather(parts, x)
        ctx.rank, ctx.rows = rank, x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows], None, None


def _buckets(params: list[nn.Parameter], max_bytes: int) -> list[list[nn.Parameter]]:
    """Consecutive groups of parameters of one dtype, each at most ~``max_bytes``."""
    out: list[list[nn.Parameter]] = []
    size = 0
    for p in params:
        nbytes = p.numel() * p.element_size()
        if not out or size + nbytes > max_bytes or out[-1][0].dtype != p.dtype:
            out.append([])
            size = 0
        out[-1].append(p)
        size += nbytes
    return out


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): NCCL when the
    run uses CUDA, gloo on CPU. A single process gets ``DistContext()``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
            dist.init_process_group(backend, device_id=torch.device("cuda", local_rank))
        else:
            dist.init_process_group(backend)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, backend=backend)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
