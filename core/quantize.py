"""Fast inference paths for a MultitaskBert: int8 dynamic quantization, bf16 autocast.

    model = MultitaskBert.load("checkpoints/quick", quantize="auto")   # bf16 or int8, by CPU
    model = MultitaskBert.load("checkpoints/quick", quantize="int8")   # or "bf16"
    # or, on a model already in memory:
    quantize_model(model, "auto")
    precision_name(model)        # "fp32" | "bf16" | "int8": what it serves with
    warm_up(model)               # first-call costs paid now (server start), not by a user

``"auto"`` follows the rule of :func:`core.precision.bf16_is_fast` (the bench's rule for
bf16 training): bf16 autocast where bf16 matmuls are native (AVX-512 BF16 / AMX CPUs,
CUDA GPUs with bf16), else int8 on a CPU, else fp32. bf16 is documented in
core/precision.py; the rest of this docstring is about int8.

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
import time
import warnings

import torch
from torch import nn

from core.errors import MinbertError
from core.precision import bf16_is_fast, cpu_flags, cpu_has_vnni, enable_bf16, serving_mode  # noqa: F401

# What quantize_model / MultitaskBert.load(quantize=...) accept besides None (fp32).
QUANTIZE_MODES = ("int8", "bf16", "auto")
PRECISIONS = ("fp32", "bf16", "int8")
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


def resolve_mode(mode: str | None, device: torch.device | str = "cpu") -> str:
    """The precision a ``quantize=`` argument means on ``device``: None -> "fp32",
    "auto" -> :func:`core.precision.serving_mode`, "bf16" / "int8" as they are."""
    if mode is None or mode == "fp32":
        return "fp32"
    if mode not in QUANTIZE_MODES:
        raise MinbertError(f"unknown quantize={mode!r}; choose one of {list(QUANTIZE_MODES)} or None")
    return serving_mode(device) if mode == "auto" else mode


def quantize_model(model, mode: str | None):
    """Prepare a ``MultitaskBert``'s encoder for fast inference, in place: ``"int8"``
    (dynamic quantization, CPU), ``"bf16"`` (autocast, CPU or CUDA) or ``"auto"`` (bf16
    where native, else int8 on CPU, else fp32); ``None`` leaves it as it is. Sets
    ``model.quantization`` to the path taken ("int8" / "bf16"; unchanged for fp32)."""
    if mode is None:
        return model
    resolved = resolve_mode(mode, model.device)
    current = getattr(model, "quantization", None)
    if resolved == "fp32" or current == resolved:
        return model
    if current is not None:
        raise MinbertError(f"this model already serves {current}; load it afresh for quantize={mode!r}")
    model.eval()
    if resolved == "bf16":
        enable_bf16(model.bert)
    else:
        quantize_linear_int8(model.bert, keep_fp32=KEEP_FP32)
    model.quantization = resolved
    return model


def is_quantized(model) -> bool:
    return getattr(model, "quantization", None) is not None


def precision_name(model) -> str:
    """What a model serves with: "fp32", "bf16" (autocast) or "int8" (dynamic)."""
    return getattr(model, "quantization", None) or "fp32"


def describe_precision(model_or_mode, device: torch.device | str | None = None) -> str:
    """A short label for the app's serving toggle, e.g. "bf16 (native: avx512_bf16)"."""
    name = model_or_mode if isinstance(model_or_mode, str) or model_or_mode is None else precision_name(model_or_mode)
    if device is None:
        device = "cpu" if isinstance(model_or_mode, str) or model_or_mode is None else model_or_mode.device
    device = torch.device(device)
    name = resolve_mode(name, device)
    if device.type == "cuda":
        return f"{name} (CUDA)"
    flags = cpu_flags()
    if name == "bf16":
        native = [f for f in flags if f in ("avx512_bf16", "amx_bf16")]
        return f"bf16 autocast ({'native: ' + ', '.join(native) if native else 'emulated: slower than fp32'})"
    if name == "int8":
        return f"int8 dynamic ({'8-bit activations, VNNI' if cpu_has_vnni() else '7-bit activations'})"
    return "fp32 (exact)"


# Sentences that warm_up sends through every task: one short, one long (first-call costs
# of the tokenizer, oneDNN kernel choice and allocator pools are paid for both sizes).
_WARM_UP = ("A short sentence.",
            "A considerably longer sentence, with a subordinate clause and several commas, "
            "so that the warm-up also runs a batch of a few dozen tokens through every layer.")


def warm_up(model, tasks=None) -> float:
    """Run one tiny prediction per task (and one embedding) so that the first user request
    after a server start costs what later ones cost. Returns the seconds it took."""
    from core.data import TASKS
    start = time.perf_counter()
    model.embed(list(_WARM_UP))
    for task in tasks or TASKS:
        if task == "sst" and "sst" not in model.heads:
            continue
        b = list(_WARM_UP[::-1]) if task != "sst" else None
        for n in (1, 2):   # one input (the Predict page) and a small batch
            model.predict_task(task, list(_WARM_UP[:n]), None if b is None else b[:n])
    return time.perf_counter() - start


def load_for_serving(path: str = "pretrained", device: str | torch.device = "cpu",
                     quantize: str | None = "auto", warm: bool = True):
    """``MultitaskBert.load(path, quantize=...)`` then :func:`warm_up`: what a server calls
    at start for its default model. On CUDA the model is loaded in fp32 and then switched
    to bf16 (``"auto"``/``"bf16"``), which ``MultitaskBert.load`` itself refuses today."""
    from core.model import MultitaskBert
    device = torch.device(device)
    if device.type == "cpu":
        model = MultitaskBert.load(path, device=device, quantize=quantize)
    else:
        if resolve_mode(quantize, device) == "int8":
            raise MinbertError("int8 dynamic quantization runs on CPU only: use quantize='auto' or 'bf16' on a GPU")
        model = quantize_model(MultitaskBert.load(path, device=device), quantize)
    if warm:
        model.warm_up_seconds = round(warm_up(model), 3)
    return model


# ------------------------------------------------------------------------ CLI
def default_modes() -> tuple[str, ...]:
    """fp32, bf16 where it is native on this CPU, and int8."""
    return ("fp32", "bf16", "int8") if bf16_is_fast("cpu") else ("fp32", "int8")


def compare_dev_metrics(checkpoint: str, data_dir: str = "data", limit: int | None = None,
                        batch_size: int = 64, modes: tuple[str, ...] | None = None) -> dict:
    """Dev metrics of a checkpoint in fp32 and each fast path (CPU), the gaps to fp32 in
    points (x100 for metrics in [0, 1]), each path's wall time, and the cosine of its STS
    dev sentence embeddings to the fp32 ones (min / mean). No cache: every path computes."""
    import numpy as np

    from core.data import load_task
    from core.evaluate import evaluate_model
    from core.model import MultitaskBert
    modes = tuple(modes or default_modes())
    if "fp32" not in modes:
        modes = ("fp32", *modes)
    bad = [m for m in modes if m not in PRECISIONS]
    if bad:
        raise MinbertError(f"unknown precision {bad[0]!r}; choose from {list(PRECISIONS)}")
    sts = load_task("sts", "dev", data_dir, limit=limit)
    sentences = list(sts.texts_a) + list(sts.texts_b)
    out: dict = {"checkpoint": str(checkpoint), "backend": backend_name(), "cpu_flags": cpu_flags(),
                 "modes": list(modes)}
    embeddings = {}
    for mode in modes:
        model = MultitaskBert.load(checkpoint, quantize=None if mode == "fp32" else mode)
        t = time.perf_counter()
        metrics, _ = evaluate_model(model, data_dir=data_dir, limit=limit, batch_size=batch_size)
        out[mode] = metrics
        out[f"{mode}_seconds"] = round(time.perf_counter() - t, 1)
        embeddings[mode] = model.embed(sentences, batch_size=batch_size)
        del model
    ref = embeddings["fp32"]
    out["gap_points"], out["max_abs_gap_points"], out["cosine_to_fp32"] = {}, {}, {}
    for mode in modes[1:]:
        gaps = {k: round(100 * (out[mode][k] - v), 2) for k, v in out["fp32"].items()
                if not k.endswith("_n") and isinstance(v, float)}
        out["gap_points"][mode] = gaps
        out["max_abs_gap_points"][mode] = max((abs(v) for v in gaps.values()), default=0.0)
        e = embeddings[mode]
        cos = (e * ref).sum(1) / (np.linalg.norm(e, axis=1) * np.linalg.norm(ref, axis=1) + 1e-12)
        out["cosine_to_fp32"][mode] = {"min": round(float(cos.min()), 5), "mean": round(float(cos.mean()), 5),
                                       "n_sentences": len(sentences)}
    return out


def main(argv=None) -> int:
    """python -m core.quantize CHECKPOINT [--modes fp32 bf16 int8] [--limit N] [--json]."""
    import argparse
    import json
    import sys
    p = argparse.ArgumentParser(prog="python -m core.quantize",
                                description="Dev metrics of a checkpoint in fp32 and in the fast CPU paths "
                                            "(bf16 where native, int8), the gaps, and embedding cosines.")
    p.add_argument("checkpoint", help="checkpoint directory, or 'pretrained' (zero-shot Quora / STS)")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--limit", type=int, help="first N dev examples of each task")
    p.add_argument("--modes", nargs="+", choices=list(PRECISIONS), help="default: fp32, bf16 if native, int8")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        r = compare_dev_metrics(args.checkpoint, args.data_dir, args.limit, modes=args.modes)
    except MinbertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    modes = r["modes"]
    print(f"{r['checkpoint']}: int8 backend {r['backend']}; CPU flags {' '.join(r['cpu_flags']) or '-'}")
    print(f"{'metric':<16}" + "".join(f"{m:>10}" for m in modes)
          + "".join(f"{m + ' gap':>12}" for m in modes[1:]))
    for k in r["gap_points"].get(modes[1], {}) if len(modes) > 1 else []:
        print(f"{k:<16}" + "".join(f"{r[m][k]:>10.4f}" for m in modes)
              + "".join(f"{r['gap_points'][m][k]:>12.2f}" for m in modes[1:]))
    for m in modes[1:]:
        c = r["cosine_to_fp32"][m]
        print(f"{m}: max |gap| {r['max_abs_gap_points'][m]:.2f} points; embedding cosine to fp32 "
              f"min {c['min']:.5f}, mean {c['mean']:.5f} ({c['n_sentences']} STS dev sentences)")
    print("evaluation time: " + ", ".join(f"{m} {r[f'{m}_seconds']} s" for m in modes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
