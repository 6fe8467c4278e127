"""int8 dynamic quantization of the encoder's Linear layers, for CPU serving.

    model = MultitaskBert.load("checkpoints/quick", quantize="int8")
    # or, on a model already in memory (CPU):
    quantize_model(model, "int8")

Dynamic quantization stores every ``nn.Linear`` weight of the encoder as int8 (one
scale per output channel) and quantizes the activations on the fly, batch by batch.
The matrix products then run on int8 kernels (fbgemm / x86 backend), which is where
almost all of a small BERT's inference time goes. Embeddings, LayerNorm, attention and
the task heads stay in fp32, and so do the feed-forward input projections (see
``KEEP_FP32``: the accuracy they cost was not worth their speed). The result is
inference-only: a quantized model cannot be trained or saved as a checkpoint.

Activation range: torch's dynamic Linear quantizes activations to 7 bits
(``reduce_range=True``) so that AVX2's int16 pairwise products cannot saturate. CPUs
with VNNI (``avx512_vnni`` / ``avx_vnni``) accumulate in int32 and need no such margin,
so there the full 8 bits are used (:class:`FullRangeDynamicLinear`). Measured on the STS
dev sentences with the packaged weights: 7-bit activations give a mean cosine of 0.987
to the fp32 embeddings (zero-shot Pearson 0.8312 vs 0.8377), 8-bit 0.993 (0.8361).

Backend: ``torch.ao.quantization.quantize_dynamic``. torch 2.13 marks the whole
``torch.ao.quantization`` namespace deprecated in favour of torchao, but torchao 0.18's
``Int8DynamicActivationInt8WeightConfig`` is slower than fp32 on CPU without
``torch.compile`` (measured on this project's 2-core machine: 4.6 s vs 3.6 s fp32 vs
1.0 s torch int8 for the same FFN block), so torch's kernels are used while they exist,
and torchao (if installed) only when they are gone.
"""
from __future__ import annotations

import functools
import warnings
from pathlib import Path

import torch
from torch import nn

from core.errors import MinbertError

QUANTIZE_MODES = ("int8",)
# Encoder layers left in fp32 by quantize_model: the feed-forward input projections.
# Quantizing every Linear layer cost up to 1.03 points of Quora F1 on checkpoints/quick
# (mean |p_int8 - p_fp32| 0.0137 on Quora dev); keeping these six in fp32 brings every
# dev metric within 0.75 points (0.0092), keeping the FFN output projections instead
# 0.33 points on Quora but as slow. Per-layer subsets helped little: the error is spread.
KEEP_FP32 = ("intermediate.dense",)


def backend_name() -> str:
    """Which implementation ``quantize_linear_int8`` uses in this environment."""
    if _torch_quantize_dynamic() is not None:
        bits = 8 if cpu_has_vnni() else 7
        return (f"torch.ao.quantization.quantize_dynamic ({torch.backends.quantized.engine}, "
                f"per-channel int8 weights, {bits}-bit activations, {'/'.join(KEEP_FP32)} kept fp32)")
    if _torchao_quantize() is not None:
        return "torchao.quantization.Int8DynamicActivationInt8WeightConfig"
    return "unavailable"


def _torch_quantize_dynamic():
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError:
        return None
    return quantize_dynamic


def _torchao_quantize():
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError:
        return None
    return lambda module, select: quantize_(module, Int8DynamicActivationInt8WeightConfig(), filter_fn=select)


@functools.cache
def cpu_has_vnni() -> bool:
    """True when the CPU advertises VNNI int8 dot products (Linux /proc/cpuinfo)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


@functools.cache
def _full_range_linear_class():
    """torch's dynamic int8 Linear with 8-bit activations instead of 7 (VNNI CPUs)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    class FullRangeDynamicLinear(DynamicQuantizedLinear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params,
                                                   reduce_range=False)
            return y.to(x.dtype)

    return FullRangeDynamicLinear


def quantize_linear_int8(module: nn.Module, full_range: bool | None = None,
                         keep_fp32: tuple[str, ...] = ()) -> nn.Module:
    """Replace every ``nn.Linear`` inside ``module`` (in place) by its dynamically
    quantized int8 version with per-channel weight scales; returns the module.
    ``full_range``: 8-bit activations (default: when the CPU has VNNI), else 7-bit.
    ``keep_fp32``: Linear layers whose qualified name ends with one of these stay fp32."""
    if any(p.device.type != "cpu" for p in module.parameters()):
        raise MinbertError("int8 dynamic quantization runs on CPU only; load the model with "
                           "device='cpu' (or drop quantize='int8' on a GPU, where fp32/bf16 is fast)")
    kept = lambda name: any(name.endswith(k) for k in keep_fp32)
    quantize_dynamic = _torch_quantize_dynamic()
    if quantize_dynamic is not None:
        from torch.ao.quantization import per_channel_dynamic_qconfig
        full_range = cpu_has_vnni() if full_range is None else full_range
        with warnings.catch_warnings():  # the namespace's deprecation notice, see the module doc
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            mapping = {nn.Linear: _full_range_linear_class()} if full_range else None
            names = {name: per_channel_dynamic_qconfig for name, m in module.named_modules()
                     if isinstance(m, nn.Linear) and not kept(name)}
            return quantize_dynamic(module, names, dtype=torch.qint8, mapping=mapping, inplace=True)
    torchao = _torchao_quantize()
    if torchao is not None:
        torchao(module, lambda m, name: isinstance(m, nn.Linear) and not kept(name))
        return module
    raise MinbertError("int8 quantization needs torch.ao.quantization (torch <= 2.13) or torchao: "
                       "`pip install torchao`, or load the model without quantize='int8'")


def quantize_model(model, mode: str | None):
    """Quantize a ``MultitaskBert``'s encoder for CPU inference (``mode`` "int8"), in
    place; ``None`` leaves it as it is. Sets ``model.quantization`` to the mode."""
    if mode is None:
        return model
    if mode not in QUANTIZE_MODES:
        raise MinbertError(f"unknown quantize={mode!r}; choose one of {list(QUANTIZE_MODES)} or None")
    if getattr(model, "quantization", None) == mode:
        return model
    model.eval()
    quantize_linear_int8(model.bert, keep_fp32=KEEP_FP32)
    model.quantization = mode
    return model


def is_quantized(model) -> bool:
    return getattr(model, "quantization", None) is not None


# ------------------------------------------------------------------------ CLI
def compare_dev_metrics(checkpoint: str, data_dir: str = "data", limit: int | None = None,
                        batch_size: int = 64) -> dict:
    """Dev metrics of a checkpoint in fp32 and int8, and the int8 - fp32 gaps in points
    (x100 for metrics in [0, 1]), with the wall time of each evaluation."""
    import time

    from core.evaluate import evaluate_model
    from core.model import MultitaskBert
    out: dict = {"checkpoint": str(checkpoint), "backend": backend_name()}
    for mode in ("fp32", "int8"):
        model = MultitaskBert.load(checkpoint, quantize=None if mode == "fp32" else mode)
        t = time.perf_counter()
        metrics, _ = evaluate_model(model, data_dir=data_dir, limit=limit, batch_size=batch_size)
        out[mode] = metrics
        out[f"{mode}_seconds"] = round(time.perf_counter() - t, 1)
    out["gap_points"] = {k: round(100 * (out["int8"][k] - v), 2) for k, v in out["fp32"].items()
                         if not k.endswith("_n") and isinstance(v, float)}
    out["max_abs_gap_points"] = max((abs(v) for v in out["gap_points"].values()), default=0.0)
    return out


def main(argv=None) -> int:
    """python -m core.quantize CHECKPOINT [--limit N] [--json]: fp32 vs int8 dev metrics."""
    import argparse
    import json
    import sys
    p = argparse.ArgumentParser(prog="python -m core.quantize",
                                description="Dev metrics of a checkpoint in fp32 and int8 (CPU), and the gaps.")
    p.add_argument("checkpoint")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--limit", type=int, help="first N dev examples of each task")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        r = compare_dev_metrics(args.checkpoint, args.data_dir, args.limit)
    except MinbertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"{r['checkpoint']}: int8 backend {r['backend']}")
    print(f"{'metric':<16}{'fp32':>10}{'int8':>10}{'gap (points)':>15}")
    for k, gap in r["gap_points"].items():
        print(f"{k:<16}{r['fp32'][k]:>10.4f}{r['int8'][k]:>10.4f}{gap:>15.2f}")
    print(f"evaluation time: fp32 {r['fp32_seconds']} s, int8 {r['int8_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
