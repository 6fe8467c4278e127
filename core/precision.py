"""Which number format runs fast here, and the bf16 inference path.

    bf16_is_fast(device)       # the one rule: bf16 matmuls are native on this device
    serving_mode(device)       # "bf16" where native, else "int8" (CPU) / "fp32" (old GPU)
    enable_bf16(model)         # the encoder runs under bf16 autocast from now on
    cpu_flags()                # the CPU's relevant ISA flags (lscpu / /proc/cpuinfo)

The rule is the one the bench uses for bf16 training: a CUDA GPU that supports bf16, or
a CPU that advertises AVX-512 BF16 or AMX-BF16. On other CPUs bf16 autocast is emulated
and slower than fp32, so int8 dynamic quantization (core/quantize.py) serves there.

bf16 inference is autocast, not bf16 weights: the encoder's matrix products (Linear,
attention) run in bf16 with fp32 accumulation, while the residual stream, LayerNorm,
softmax normalisation, pooling and the task heads stay fp32 (the encoder's outputs are
cast back to fp32 before pooling). Measured on this project's 2-core AVX-512 BF16 VM,
600 STS dev sentences with the packaged weights: autocast 1.9x faster than fp32 with min
cosine 0.99996 to the fp32 embeddings; bf16 weights throughout were as fast but less
exact (min cosine 0.99990, max abs deviation 0.019 vs 0.007); bf16 weights with fp32
activations (casting around each Linear) were slower than fp32. Weights stay fp32, so a
bf16-serving model's ``state_dict`` is the fp32 one.
"""
from __future__ import annotations

import functools
import logging
import shutil
import subprocess
from pathlib import Path

import torch

from core.bert import BertModel
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
    """core.bert.BertModel whose forward runs under bf16 autocast on the device of its
    inputs and returns fp32 tensors. Never built directly: :func:`enable_bf16` switches
    the class of an existing encoder (same parameters, same state_dict)."""
    bf16_autocast = True

    def forward(self, input_ids, *args, **kwargs):
        with torch.autocast(device_type=input_ids.device.type, dtype=torch.bfloat16):
            out = super().forward(input_ids, *args, **kwargs)
        return _to_fp32(out)


def enable_bf16(encoder: torch.nn.Module) -> torch.nn.Module:
    """Make ``encoder`` (a core.bert.BertModel) run under bf16 autocast, in place: its
    class becomes :class:`Bf16AutocastBertModel`, whose forward enters autocast and casts
    the outputs to fp32. Parameters, names and the state_dict are unchanged."""
    if is_bf16(encoder):
        return encoder
    if type(encoder) is not BertModel:
        raise MinbertError(f"bf16 inference wraps a core.bert.BertModel, not {type(encoder).__name__}")
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
