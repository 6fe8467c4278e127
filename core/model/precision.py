"""Which number format runs fast here, and the fast inference paths (bf16, int8).

    bf16_is_fast(device)       # the one rule: bf16 matmuls are native on this device
    serving_mode(device)       # "bf16" where native, else "int8" (CPU) / "fp32" (old GPU)
    enable_bf16(model)         # the encoder runs under bf16 autocast from now on
    quantize_model(model, "auto")   # a MultitaskBert serves bf16 or int8, by that rule
    precision_name(model)      # "fp32" | "bf16" | "int8": what it serves with
    cpu_flags()                # the CPU's relevant ISA flags (lscpu / /proc/cpuinfo)

``MultitaskBert.load(path, quantize="auto" | "int8" | "bf16")`` calls
:func:`quantize_model`; ``python -m core.tools.quantize CHECKPOINT`` compares the dev metrics of
every path (core/tools/quantize.py).

The rule is the one the bench uses for bf16 training: a CUDA GPU that supports bf16, or
a CPU that advertises AVX-512 BF16 or AMX-BF16. On other CPUs bf16 autocast is emulated
and slower than fp32, so int8 dynamic quantization (below) serves there.

bf16 inference is autocast, not bf16 weights: the encoder's matrix products (Linear,
attention) run in bf16 with fp32 accumulation, while the residual stream, LayerNorm,
softmax normalisation, pooling and the task heads stay fp32 (the encoder's outputs are
cast back to fp32 before pooling). Measured on this project's 2-core AVX-512 BF16 VM,
600 STS dev sentences with the packaged weights: autocast 1.9x faster than fp32 with min
cosine 0.99996 to the fp32 embeddings; bf16 weights throughout were as fast but less
exact (min cosine 0.99990, max abs deviation 0.019 vs 0.007); bf16 weights with fp32
activations (casting around each Linear) were slower than fp32. Weights stay fp32, so a
bf16-serving model's ``state_dict`` is the fp32 one.

int8: Dynamic quantization stores every ``nn.Linear`` weight of the encoder as int8 (one
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
import logging
import shutil
import subprocess
import warnings
from pathlib import Path

import torch
from torch import nn

from core.model.bert import BertModel
from core.errors import MinbertError

log = logging.getLogger(__name__)

# ISA flags that decide the fast inference path: bf16 (AVX-512 BF16, AMX) and int8 dot
# products (VNNI, AMX-INT8).
RELEVANT_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "amx_int8", "avx512_vnni", "avx_vnni")


@functools.cache
def _all_cpu_flags() -> frozenset[str]:
    """Every flag the CPU advertises: ``lscpu``'s Flags line, else /proc/cpuinfo."""
    if shutil.which("lscpu"):
        try:
            out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                                 env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"}).stdout
            for line in out.splitlines():
                if line.startswith("Flags:"):
                    return frozenset(line.split(":", 1)[1].split())
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or the machine architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def cpu_flags(relevant_only: bool = True) -> list[str]:
    """The CPU's ISA flags (sorted); by default only :data:`RELEVANT_CPU_FLAGS`."""
    flags = _all_cpu_flags()
    return sorted(f for f in flags if not relevant_only or f in RELEVANT_CPU_FLAGS)


def cpu_has_bf16() -> bool:
    flags = _all_cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_has_vnni() -> bool:
    flags = _all_cpu_flags()
    return "avx512_vnni" in flags or "avx_vnni" in flags


def bf16_is_fast(device: torch.device | str) -> bool:
    """bf16 matmuls run natively: a CUDA GPU with bf16, or a CPU with AVX-512 BF16 / AMX."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_bf16()
    return False


def serving_mode(device: torch.device | str = "cpu") -> str:
    """The fastest inference path that keeps the dev metrics: "bf16" where bf16 is native,
    else "int8" on a CPU and "fp32" on a GPU without bf16 (dynamic int8 is CPU-only)."""
    device = torch.device(device)
    if bf16_is_fast(device):
        return "bf16"
    return "int8" if device.type == "cpu" else "fp32"


# ---------------------------------------------------------------- bf16 path
def _to_fp32(x):
    if isinstance(x, torch.Tensor):
        return x.float() if x.is_floating_point() else x
    if isinstance(x, tuple):
        values = [_to_fp32(v) for v in x]
        return type(x)(*values) if hasattr(x, "_fields") else tuple(values)
    return x


class Bf16AutocastBertModel(BertModel):
    """core.model.bert.BertModel whose forward runs under bf16 autocast on the device of its
    inputs and returns fp32 tensors. Never built directly: :func:`enable_bf16` switches
    the class of an existing encoder (same parameters, same state_dict)."""
    bf16_autocast = True

    def forward(self, input_ids, *args, **kwargs):
        with torch.autocast(device_type=input_ids.device.type, dtype=torch.bfloat16):
            out = super().forward(input_ids, *args, **kwargs)
        return _to_fp32(out)


def enable_bf16(encoder: torch.nn.Module) -> torch.nn.Module:
    """Make ``encoder`` (a core.model.bert.BertModel) run under bf16 autocast, in place: its
    class becomes :class:`Bf16AutocastBertModel`, whose forward enters autocast and casts
    the outputs to fp32. Parameters, names and the state_dict are unchanged."""
    if is_bf16(encoder):
        return encoder
    if type(encoder) is not BertModel:
        raise MinbertError(f"bf16 inference wraps a core.model.bert.BertModel, not {type(encoder).__name__}")
    device = next(encoder.parameters()).device
    if device.type not in ("cpu", "cuda"):
        raise MinbertError(f"bf16 inference runs on CPU or CUDA, not {device.type}")
    if not bf16_is_fast(device):
        log.warning("bf16 is not native on %s: autocast emulates it and will be slower than fp32 "
                    "(use quantize='auto', which picks int8 on such CPUs)", device)
    encoder.__class__ = Bf16AutocastBertModel
    return encoder


def is_bf16(encoder: torch.nn.Module) -> bool:
    return bool(getattr(type(encoder), "bf16_autocast", False))


# ---------------------------------------------------------------- int8 path
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
    "auto" -> :func:`core.model.precision.serving_mode`, "bf16" / "int8" as they are."""
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
