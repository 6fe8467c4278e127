"""Side-by-side speed benchmark: ours vs a plain transformers / PyTorch baseline, vs
sentence-transformers and ONNX Runtime, and the time of a checkpoint's dev evaluation.

    python -m core.bench [--json] [--quick] [--repeats 3] [--encode-limit N] [--train-examples 320]
                         [--checkpoint DIR] [--eval-limit N] [--only SECTION ...] [--no-compare]
                         [--set key=value ...]

Everything runs in one process, on the same weights (the packaged all-MiniLM-L6-v2) and
the same inputs. The methods of a section are timed in turns (reference, ours, ours,
reference, ...) ``--repeats`` times, so a load spike on a shared machine hits them alike;
each figure is a median, and each ratio is the median of the per-repeat ratios. The
CPU's model and its relevant ISA flags (avx512_bf16, amx_*, avx512_vnni, avx_vnni) head
the output (``cpu_flags`` in the JSON). ``--quick`` runs every section at toy sizes to
check the code; its figures mean nothing.

encode    the STS dev sentences (both columns, file order), mean-pooled embeddings.
          reference: ``transformers.BertModel``, batches of 64 in file order, each padded
          to its longest sentence. ours: ``MultitaskBert.embed`` (length-sorted token-budget
          batches, SDPA attention, inference mode, input order restored) in fp32, bf16
          autocast (where bf16 is native) and int8 (CPU). Beside them, what a user would
          deploy: sentence-transformers' ``encode()`` on the packaged model directory
          (length-sorted batches of 32, normalized output), and ONNX Runtime (CPU) on our
          encoder exported with ``torch.onnx.export`` (dynamic axes; fed our batches):
          fp32, int8 with ORT's default dynamic quantization, and an "equal-accuracy" int8
          (per-channel, FFN input projections kept fp32 like ours). Before anything is
          timed, sentence-transformers must match transformers (max abs diff <= 1e-4 on
          normalized embeddings) and the fp32 export must match our fp32 model at several
          sequence lengths (core.serving.onnx_export.verify_export); every method's output is
          then compared with the exact fp32 reference: max abs deviation, min / mean
          cosine. ``encode_ratio_vs_st`` = ours fp32 / sentence-transformers;
          ``encode_ratio_vs_ort_int8`` = our best path (the fastest with min cosine >= 0.99
          to fp32) / the faster of the two ORT int8 models.
train     the first ``--train-examples`` SST training sentences, one pass each, batch 32.
          reference: ``transformers.BertModel`` + mean pooling + dropout + linear head,
          random batches padded to their longest sentence, ``torch.optim.AdamW``.
          ours: ``Trainer.train_step`` of configs/quick.yaml restricted to SST (length-
          bucketed batches, fused AdamW), same lr / weight decay / grad clip / max_len /
          batch size / number of examples; in fp32, and in bf16 autocast where bf16 is
          native (CUDA, AVX-512 BF16 / AMX CPUs). train_ratio is the best of the two,
          train_ratio_fp32 / train_ratio_bf16 each one.
latency   one sentence per call through ``MultitaskBert`` (sentiment with ``--checkpoint``,
          an embedding otherwise): p50 / p95 in milliseconds, fp32, bf16 (native) and int8.
eval      ``core.evaluation.evaluator.evaluate_checkpoint`` on all three dev sets of ``--checkpoint``
          (default: a fresh quick-recipe model, i.e. new heads nobody has evaluated): exact
          fp32 with an empty cache (``eval_seconds``), the same again (a cache hit,
          ``eval_seconds_cached``), and ``precision="auto"`` with an empty cache
          (``eval_seconds_fast``), each with a per-phase profile.

Throughput is wall-clock; the "CPU-time x" column is the same ratio from this process's
CPU time, which other processes on a shared machine inflate much less. Peak memory is the
process's peak resident set (CPU) or the peak CUDA allocation per method (GPU). ONNX
Runtime keeps its default thread spinning, as deployed. ``--json`` prints one JSON
object; its keys include ``encode_ratio_best``, ``encode_ratio_fp32``,
``encode_ratio_int8``, ``encode_ratio_bf16``, ``encode_best_path``, ``encode_ratio_vs_st``,
``encode_ratio_vs_ort_int8``, ``train_ratio``, ``train_ratio_fp32``, ``train_ratio_bf16``,
``eval_seconds``, ``eval_seconds_cached``, ``eval_seconds_fast``, ``cpu_flags`` and the raw
figures.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from core.paths import REPO
from core.errors import MinbertError
from core.model.precision import bf16_is_fast, cpu_flags, cpu_model

DEFAULT_RECIPE = REPO / "configs" / "quick.yaml"


# ------------------------------------------------------------------- helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t, out


def _timed_cpu(fn: Callable[[], object], device: torch.device) -> tuple[float, float, object]:
    """(wall seconds, this process's CPU seconds, output). CPU time barely grows when
    other processes compete for the cores, so its ratios are a check on noisy walls."""
    c = time.process_time()
    seconds, out = _timed(fn, device)
    return seconds, time.process_time() - c, out


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA allocation since the last reset (GPU) or the process's peak RSS (CPU)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return float("nan")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10   # bytes on macOS, KiB on Linux


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def interleaved(methods: dict[str, Callable[[], object]], repeats: int, device: torch.device,
                reference: str = "reference") -> dict:
    """Time every method ``repeats`` times, in turns; return per-method seconds, their
    medians, the median of the per-repeat speed-ups over ``reference``, peak memory and
    the last output of each method."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    peaks: dict[str, float] = {}
    outputs: dict[str, object] = {}
    for r in range(repeats):
        order = list(methods) if r % 2 == 0 else list(methods)[::-1]   # no method always goes first
        for name in order:
            _reset_peak(device)
            seconds, cpu_seconds, outputs[name] = _timed_cpu(methods[name], device)
            times[name].append(seconds)
            cpu[name].append(cpu_seconds)
            peaks[name] = max(peaks.get(name, 0.0), peak_memory_mb(device))
    ratio = lambda t: {name: statistics.median(a / b for a, b in zip(t[reference], ts)) for name, ts in t.items()}
    return {"times": times, "cpu_times": cpu, "median": {n: statistics.median(ts) for n, ts in times.items()},
            "speedup": ratio(times), "cpu_speedup": ratio(cpu), "peak_mb": peaks, "outputs": outputs}


def machine_info(device: torch.device) -> dict:
    from core.model.precision import backend_name
    info = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "cpu": cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_flags": cpu_flags(),
            "bf16_native": bf16_is_fast(device), "int8_backend": backend_name()}
    try:
        import onnxruntime
        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        import sentence_transformers
        info["sentence_transformers"] = sentence_transformers.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _reference_encoder(device: torch.device):
    """``transformers.BertModel`` and tokenizer from the packaged weights directory."""
    import transformers
    from core.model.bert import packaged_model_dir
    path = str(packaged_model_dir())
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.BertModel.from_pretrained(path).to(device)
    return tokenizer, model


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


def _memory(res: dict, device: torch.device) -> dict:
    """Per-method peak CUDA memory on a GPU; on CPU only the process's peak RSS so far
    (both methods live in one process, so a per-method CPU peak is not measurable)."""
    if device.type == "cuda":
        return {"peak_mb": {k: round(v, 1) for k, v in res["peak_mb"].items()}}
    return {"peak_rss_mb": round(peak_memory_mb(device), 1)}


# -------------------------------------------------------------------- encode
def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def _normalized(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _deviation(out: np.ndarray, ref: np.ndarray) -> dict:
    """Max abs deviation and min / mean cosine of ``out`` to the exact fp32 ``ref``."""
    cos = _cosines(out, ref)
    return {"max_abs_diff": float(np.abs(out - ref).max()), "min_cosine": float(cos.min()),
            "mean_cosine": float(cos.mean())}


def _pair_ratio(times: dict[str, list[float]], slow: str, fast: str) -> float:
    """Median over repeats of time(slow) / time(fast): how many times faster ``fast`` is."""
    return statistics.median(a / b for a, b in zip(times[slow], times[fast]))


def _sentence_transformer(device: torch.device, max_len: int):
    """sentence-transformers' own pipeline on the packaged model directory (no network):
    BertModel, mean pooling, normalization; ``encode`` sorts by length, batches of 32."""
    from sentence_transformers import SentenceTransformer
    from core.model.bert import packaged_model_dir
    st = SentenceTransformer(str(packaged_model_dir()), device=str(device), local_files_only=True)
    st.max_seq_length = max_len
    return st


# Accuracy a fast path must keep to count as "best" (issue 15): cosine to exact fp32.
BEST_MIN_COSINE = 0.99


def bench_encode(texts: list[str], repeats: int, device: torch.device, batch_size: int = 64,
                 max_len: int = 128, int8: bool = True, bf16: bool | None = None, st: bool = True,
                 onnx: bool | None = None, st_batch_size: int = 32) -> dict:
    """Throughput of every encoder on ``texts``; each output compared with the exact fp32
    reference (transformers). Exported / quantized models are checked before timing."""
    bf16 = bf16_is_fast(device) if bf16 is None else bf16
    onnx = device.type == "cpu" if onnx is None else onnx
    run_reference = _reference_embed(device, batch_size, max_len)
    models = _our_models(device, max_len, int8, bf16)
    encoders = {"reference": run_reference}
    for name, model in models.items():
        encoders[name] = lambda texts, model=model: model.embed(texts, batch_size=batch_size)
    checks: dict = {}
    if st:
        encoders["st_encode"] = _st_encoder(device, max_len, st_batch_size, run_reference(texts[:batch_size]),
                                            texts[:batch_size])
    tmp = None
    if onnx:
        tmp = _add_onnx_encoders(encoders, checks, models, device, max_len, batch_size)
    for encode in encoders.values():   # first-call costs (allocator, kernel choice) are not throughput
        encode(texts[:batch_size])
    res = interleaved({name: (lambda encode=encode: encode(texts)) for name, encode in encoders.items()},
                      repeats, device)
    if tmp is not None:
        tmp.cleanup()
    out = {"n_sentences": len(texts), "batch_size": batch_size, "st_batch_size": st_batch_size,
           "max_len": max_len, "repeats": repeats, "checks": checks}
    out.update(_encode_figures(res, device, len(texts), [k for k in encoders if k.startswith("ours_")], int8))
    return out


def _reference_embed(device: torch.device, batch_size: int, max_len: int):
    """The exact fp32 reference: transformers' BertModel, mean-pooled, batch by batch."""
    tokenizer, reference = _reference_encoder(device)
    reference.eval()

    @torch.inference_mode()
    def run_reference(texts: list[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=max_len,
                              return_tensors="pt").to(device)
            hidden = reference(**batch).last_hidden_state
            out.append(_mean_pool(hidden, batch["attention_mask"]).float().cpu().numpy())
        return np.concatenate(out)
    return run_reference


def _our_models(device: torch.device, max_len: int, int8: bool, bf16: bool) -> dict:
    """Our encoder in each inference path this run measures (fp32, int8 on CPU, bf16)."""
    from core.model.multitask import MultitaskBert
    from core.model.precision import quantize_model
    models = {"ours_fp32": MultitaskBert.load("pretrained", device=device)}
    if int8:
        models["ours_int8"] = MultitaskBert.load("pretrained", device="cpu", quantize="int8")
    if bf16:
        models["ours_bf16"] = quantize_model(MultitaskBert.load("pretrained", device=device), "bf16")
    for model in models.values():
        model.config.model.max_len = max_len
    return models


def _st_encoder(device: torch.device, max_len: int, st_batch_size: int, probe_ref: np.ndarray, probe: list[str]):
    """sentence-transformers' ``encode`` on the packaged model, checked to be the same model
    as the reference before it is timed (its pipeline ends in a Normalize module: unit vectors)."""
    st_model = _sentence_transformer(device, max_len)

    def encode(texts):
        return st_model.encode(texts, batch_size=st_batch_size, convert_to_numpy=True, show_progress_bar=False)
    dev = _deviation(_normalized(encode(probe)), _normalized(probe_ref))
    if dev["max_abs_diff"] > 1e-4:
        raise MinbertError(f"sentence-transformers on the packaged model disagrees with transformers "
                           f"(max abs diff {dev['max_abs_diff']:.2e}): not the same model, not timing it")
    return encode


def _add_onnx_encoders(encoders: dict, checks: dict, models: dict, device: torch.device, max_len: int,
                       batch_size: int):
    """ONNX Runtime fp32 and two int8 variants of our encoder, each verified before timing;
    returns the temporary folder of the exported files (None when ONNX is not available)."""
    from core.model.multitask import MultitaskBert
    from core.model.precision import KEEP_FP32
    from core.serving.onnx_export import (export_encoder, onnx_available, ort_embed, ort_session,
                                          quantize_onnx_int8, verify_export)
    why = onnx_available()
    if why:
        checks["onnx_skipped"] = why
        return None
    tmp = tempfile.TemporaryDirectory(prefix="minbert-bench-onnx-")
    fp32_model = models["ours_fp32"] if device.type == "cpu" else MultitaskBert.load("pretrained")
    fp32_model.config.model.max_len = max_len
    t = time.perf_counter()
    path = export_encoder(fp32_model, Path(tmp.name) / "encoder.onnx")
    checks["onnx_export_s"] = round(time.perf_counter() - t, 1)
    variants = {"ort_fp32": (path, None),
                "ort_int8": (Path(tmp.name) / "int8.onnx", {}),
                "ort_int8_equal": (Path(tmp.name) / "int8_equal.onnx", {"keep_fp32": KEEP_FP32, "per_channel": True})}
    for name, (p, qargs) in variants.items():
        if qargs is not None:
            checks[f"{name}_quantization"] = quantize_onnx_int8(path, p, **qargs)
        session = ort_session(p)
        # before timing: exact fp32 must match at every length; int8 is recorded
        checks[f"{name}_verify"] = verify_export(session, fp32_model, atol=1e-4 if qargs is None else None)
        encoders[name] = lambda texts, session=session: ort_embed(session, fp32_model, texts, batch_size)
    return tmp


def _encode_figures(res: dict, device: torch.device, n: int, ours: list[str], int8: bool) -> dict:
    """Times, ratios and deviations from the reference of one interleaved encode run; the
    best path is the fastest of ours within BEST_MIN_COSINE of exact fp32."""
    ref, times = res["outputs"]["reference"], res["times"]
    out = {"seconds": {k: [round(t, 3) for t in v] for k, v in times.items()},
           "cpu_seconds": {k: [round(t, 3) for t in v] for k, v in res["cpu_times"].items()},
           "cpu_time_ratio": {k: round(v, 3) for k, v in res["cpu_speedup"].items() if k != "reference"},
           "sentences_per_s": {k: round(n / v, 1) for k, v in res["median"].items()},
           **_memory(res, device),
           "ratio_fp32": round(res["speedup"]["ours_fp32"], 3),
           "fp32_max_abs_diff": float(np.abs(res["outputs"]["ours_fp32"] - ref).max())}
    deviation = {}
    for name, value in res["outputs"].items():
        if name == "reference":
            continue
        deviation[name] = (_deviation(_normalized(value), _normalized(ref)) if name == "st_encode"
                           else _deviation(value, ref))
        out[f"ratio_{name.removeprefix('ours_')}"] = round(res["speedup"][name], 3)
    out["deviation"] = deviation
    if int8:
        out.update(int8_mean_cosine=deviation["ours_int8"]["mean_cosine"],
                   int8_min_cosine=deviation["ours_int8"]["min_cosine"])
    out["ratio_best"] = max(out[f"ratio_{k.removeprefix('ours_')}"] for k in ours)
    qualified = [k for k in ours if deviation[k]["min_cosine"] >= BEST_MIN_COSINE]
    best = min(qualified, key=lambda k: res["median"][k])
    out["best_path"] = best
    out["best_path_rule"] = f"fastest of ours with min cosine >= {BEST_MIN_COSINE} to exact fp32"
    if "st_encode" in times:
        out["ratio_vs_st"] = round(_pair_ratio(times, "st_encode", "ours_fp32"), 3)
        out["ratio_best_vs_st"] = round(_pair_ratio(times, "st_encode", best), 3)
    if "ort_int8" in times:
        ort_int8 = min(("ort_int8", "ort_int8_equal"), key=lambda k: res["median"][k])
        out["ort_int8_fastest"] = ort_int8
        out["ratio_vs_ort_int8"] = round(_pair_ratio(times, ort_int8, best), 3)
        out["ratio_vs_ort_int8_default"] = round(_pair_ratio(times, "ort_int8", best), 3)
        out["ratio_vs_ort_int8_equal"] = round(_pair_ratio(times, "ort_int8_equal", best), 3)
        out["ratio_vs_ort_fp32"] = round(_pair_ratio(times, "ort_fp32", "ours_fp32"), 3)
    return out


# --------------------------------------------------------------------- train
class _ReferenceClassifier(torch.nn.Module):
    """What a plain fine-tuning script builds: HF encoder, mean pooling, dropout, linear."""

    def __init__(self, encoder, n_classes: int, dropout: float):
        super().__init__()
        self.encoder = encoder
        self.dropout = torch.nn.Dropout(dropout)
        self.classifier = torch.nn.Linear(encoder.config.hidden_size, n_classes)

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        return self.classifier(self.dropout(_mean_pool(hidden, attention_mask)))


# Our trainer's optimizer in the bench: torch's AdamW with the fused kernel (same lr,
# betas, eps and weight decay as the reference's default foreach AdamW).
OURS_TRAIN_OVERRIDES = ["train.optimizer=torch_adamw"]


def _reference_training(cfg, texts: list[str], labels: torch.Tensor, device: torch.device, batch_size: int):
    """The plain PyTorch baseline of a training step: transformers' BertModel and a linear
    classifier, torch.optim.AdamW, the recipe's learning rates, weight decay and clipping;
    returns one step on given indices and one shuffled pass over the examples."""
    train, n_examples = cfg.train, len(texts)
    tokenizer, encoder = _reference_encoder(device)
    torch.manual_seed(train.seed)
    reference = _ReferenceClassifier(encoder, 5, cfg.model.sst.dropout).to(device).train()
    optimizer = torch.optim.AdamW(
        [{"params": reference.encoder.parameters(), "lr": train.lr},
         {"params": reference.classifier.parameters(), "lr": train.head_lr or train.lr}],
        lr=train.lr, weight_decay=train.weight_decay)
    rng = random.Random(train.seed)

    def reference_step(idx: list[int]) -> None:
        batch = tokenizer([texts[j] for j in idx], padding=True, truncation=True,
                          max_length=cfg.model.max_len, return_tensors="pt").to(device)
        loss = F.cross_entropy(reference(**batch), labels[idx].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if train.grad_clip:
            torch.nn.utils.clip_grad_norm_(reference.parameters(), train.grad_clip)
        optimizer.step()

    def reference_pass() -> int:
        order = list(range(n_examples))
        rng.shuffle(order)
        for i in range(0, n_examples, batch_size):
            reference_step(order[i:i + batch_size])
        return n_examples
    return reference_step, reference_pass


def bench_train(n_examples: int, repeats: int, device: torch.device, batch_size: int = 32,
                recipe: Path = DEFAULT_RECIPE, overrides: list[str] | None = None,
                data_dir: str | Path = REPO / "data", precisions: tuple[str, ...] = ("fp32", "bf16")) -> dict:
    from core.config.schema import Config
    from core.training.trainer import Trainer

    base = ["train.tasks=[sst]", f"data.limit={n_examples}", "data.eval_limit=8", f"data.dir={data_dir}",
            f"train.batch_size={batch_size}", f"train.device={device.type}", "stages=[]"]
    configs = {f"ours_{p}": Config.from_yaml(recipe, base + OURS_TRAIN_OVERRIDES + [f"train.precision={p}"]
                                             + list(overrides or [])) for p in precisions}
    cfg = next(iter(configs.values()))
    train = cfg.train
    steps = -(-n_examples // batch_size)   # one pass over the examples per repeat
    with tempfile.TemporaryDirectory(prefix="minbert-bench-") as tmp:
        trainers = {}
        for name, c in configs.items():
            trainer = Trainer(c, Path(tmp) / name, progress=False, overwrite=True)
            trainer.setup()
            trainer.start_stage(trainer.stages[0])
            trainers[name] = trainer
        data = trainer.train_data["sst"]
        texts, labels = list(data.texts_a), torch.as_tensor(data.labels)
        assert len(texts) == n_examples, (len(texts), n_examples)

        reference_step, reference_pass = _reference_training(cfg, texts, labels, device, batch_size)

        def ours_pass(trainer: Trainer) -> int:
            return sum(trainer.train_step()["examples"] for _ in range(steps))

        # warm-up, two steps of each (allocator, first-call kernel choice, optimizer
        # state); then the timed passes of ours start at a pass boundary again
        for _ in range(2):
            reference_step(list(range(min(batch_size, n_examples))))
        for trainer in trainers.values():
            trainer.train_step()
            trainer.train_step()
            for stream in trainer.streams.values():
                stream.restart(stream.passes)

        methods = {"reference": reference_pass,
                   **{name: (lambda t=t: ours_pass(t)) for name, t in trainers.items()}}
        res = interleaved(methods, repeats, device)
        assert all(res["outputs"][name] == n_examples for name in trainers), res["outputs"]
    ratios = {f"ratio_{name.split('_', 1)[1]}": round(res["speedup"][name], 3) for name in trainers}
    return {"n_examples": n_examples, "batch_size": batch_size, "repeats": repeats,
            "steps_per_repeat": steps, "max_len": cfg.model.max_len,
            "optimizer": f"{train.optimizer} (fused)" if train.optimizer == "torch_adamw" else train.optimizer,
            "reference_optimizer": "torch.optim.AdamW (default foreach)",
            "seconds": {k: [round(t, 3) for t in v] for k, v in res["times"].items()},
            "cpu_seconds": {k: [round(t, 3) for t in v] for k, v in res["cpu_times"].items()},
            "cpu_time_ratio": {k: round(v, 3) for k, v in res["cpu_speedup"].items() if k != "reference"},
            "examples_per_s": {k: round(n_examples / v, 2) for k, v in res["median"].items()},
            **_memory(res, device), **ratios, "ratio_best": max(ratios.values())}


# ------------------------------------------------------------------- latency
def bench_latency(sentences: list[str], device: torch.device, checkpoint: str | None = None,
                  int8: bool = True, bf16: bool | None = None) -> dict:
    from core.model.multitask import MultitaskBert
    from core.model.precision import quantize_model
    bf16 = bf16_is_fast(device) if bf16 is None else bf16
    source = checkpoint or "pretrained"
    models = {"fp32": MultitaskBert.load(source, device=device)}
    if bf16:
        models["bf16"] = quantize_model(MultitaskBert.load(source, device=device), "bf16")
    if int8:
        models["int8"] = MultitaskBert.load(source, device="cpu", quantize="int8")
    op = "predict_sentiment" if "sst" in models["fp32"].heads else "embed"
    out: dict = {"model": str(source), "op": op, "n_calls": len(sentences)}
    for name, model in models.items():
        call = getattr(model, op)
        call(sentences[:1])   # warm-up
        ms = []
        for s in sentences:
            seconds, _ = _timed(lambda: call([s]), model.device)
            ms.append(seconds * 1000)
        out[f"{name}_p50_ms"] = round(float(np.percentile(ms, 50)), 2)
        out[f"{name}_p95_ms"] = round(float(np.percentile(ms, 95)), 2)
    return out


# ---------------------------------------------------------------------- eval
def _fresh_checkpoint(directory: Path, recipe: Path = DEFAULT_RECIPE) -> Path:
    """A checkpoint no cache has seen: the recipe's model with newly initialized heads."""
    from core.config.schema import Config
    from core.model.multitask import MultitaskBert
    torch.manual_seed(0)
    model = MultitaskBert.from_config(Config.from_yaml(recipe, []))
    return model.save(directory)


def bench_eval(data_dir: str | Path, checkpoint: str | None = None, limit: int | None = None,
               device: torch.device = torch.device("cpu"), batch_size: int = 64, fast: bool = True) -> dict:
    """Wall seconds of ``evaluate_checkpoint`` on all three dev sets: a checkpoint never
    evaluated before (empty cache), then the same again (cache hit), then the fast path
    (``precision="auto"``, empty cache). ``checkpoint`` defaults to a fresh quick-recipe
    model (random heads: its metrics mean nothing, its time is that of any checkpoint)."""
    from core.evaluation.evaluator import evaluate_checkpoint
    from core.model.precision import resolve_mode
    out: dict = {"limit": limit, "batch_size": batch_size}
    with tempfile.TemporaryDirectory(prefix="minbert-bench-eval-") as tmp:
        path = Path(checkpoint) if checkpoint else _fresh_checkpoint(Path(tmp) / "fresh")
        out["checkpoint"] = str(checkpoint) if checkpoint else "fresh quick-recipe model (new heads)"
        runs = [("fp32", "fp32", "cache-a"), ("fp32_cached", "fp32", "cache-a")]
        if fast and resolve_mode("auto", device) != "fp32":
            runs.append(("auto", "auto", "cache-b"))
        for name, precision, cache in runs:
            t = time.perf_counter()
            metrics, _, info = evaluate_checkpoint(path, data_dir=data_dir, limit=limit, batch_size=batch_size,
                                                   precision=precision, device=str(device),
                                                   cache_dir=Path(tmp) / cache)
            out[f"{name}_seconds"] = round(time.perf_counter() - t, 2)
            out[f"{name}_profile"] = info["profile"]
            out[f"{name}_precision"] = info["precision"]
            out[f"{name}_metrics"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}
        out["n"] = {t: out["fp32_metrics"].get(f"{t}_n") for t in ("sst", "qqp", "sts")}
        if "auto_metrics" in out:
            out["auto_gap_points"] = {k: round(100 * (out["auto_metrics"][k] - v), 2)
                                      for k, v in out["fp32_metrics"].items() if not k.endswith("_n")}
    return out


# ----------------------------------------------------------------------- run
SECTIONS = ("encode", "train", "latency", "eval")
# --quick: every section at toy sizes, to check the code (figures mean nothing)
QUICK = {"repeats": 1, "encode_limit": 24, "train_examples": 8, "train_batch_size": 4, "latency_n": 2,
         "eval_limit": 12}


def run_bench(repeats: int = 3, encode_limit: int | None = None, train_examples: int = 320,
              train_batch_size: int = 32, latency_n: int = 50, checkpoint: str | None = None,
              device: str = "auto", sections: tuple[str, ...] = SECTIONS,
              overrides: list[str] | None = None, data_dir: str | Path = REPO / "data",
              eval_limit: int | None = None, compare: bool = True) -> dict:
    """``compare``: the encode section also times sentence-transformers and ONNX Runtime."""
    from core.data.datasets import load_task
    from core.training.trainer import resolve_device
    dev = resolve_device(device)
    int8 = dev.type == "cpu"
    t0 = time.time()
    result: dict = {"machine": machine_info(dev), "cpu_flags": cpu_flags()}
    if "encode" in sections:
        sts = load_task("sts", "dev", data_dir)
        texts = list(sts.texts_a) + list(sts.texts_b)
        texts = texts[:encode_limit] if encode_limit else texts
        e = result["encode"] = bench_encode(texts, repeats, dev, int8=int8, st=compare, onnx=compare and int8)
        result["encode_ratio_fp32"] = e["ratio_fp32"]
        result["encode_ratio_int8"] = e.get("ratio_int8")
        result["encode_ratio_bf16"] = e.get("ratio_bf16")
        result["encode_ratio_best"] = e["ratio_best"]
        result["encode_best_path"] = e["best_path"]
        result["encode_ratio_vs_st"] = e.get("ratio_vs_st")
        result["encode_ratio_vs_ort_int8"] = e.get("ratio_vs_ort_int8")
    if "train" in sections:
        precisions = ("fp32", "bf16") if bf16_is_fast(dev) else ("fp32",)
        result["train"] = bench_train(train_examples, repeats, dev, train_batch_size,
                                      overrides=overrides, data_dir=data_dir, precisions=precisions)
        result["train_ratio_fp32"] = result["train"]["ratio_fp32"]
        result["train_ratio_bf16"] = result["train"].get("ratio_bf16")
        result["train_ratio"] = result["train"]["ratio_best"]
    if "latency" in sections:
        sst = load_task("sst", "dev", data_dir, limit=latency_n)
        result["latency"] = bench_latency(list(sst.texts_a), dev, checkpoint, int8=int8)
    if "eval" in sections:
        ev = result["eval"] = bench_eval(data_dir, checkpoint, eval_limit, dev)
        result["eval_seconds"] = ev["fp32_seconds"]
        result["eval_seconds_cached"] = ev["fp32_cached_seconds"]
        result["eval_seconds_fast"] = ev.get("auto_seconds")
    result["peak_rss_mb"] = round(peak_memory_mb(torch.device("cpu")), 1)
    result["wall_time_s"] = round(time.time() - t0, 1)
    return result


def _mem(section: dict, method: str) -> str:
    """The peak-memory cell: per method on CUDA, the process's peak RSS so far on CPU."""
    if "peak_mb" in section:
        return f"{section['peak_mb'][method]:.0f}"
    return f"(rss {section['peak_rss_mb']:.0f})"


ENCODE_LABELS = {"reference": "transformers.BertModel (file order)",
                 "st_encode": "sentence-transformers encode()",
                 "ort_fp32": "ONNX Runtime fp32 (our export)",
                 "ort_int8": "ONNX Runtime int8 (default dynamic)",
                 "ort_int8_equal": "ONNX Runtime int8 (equal accuracy)",
                 "ours_fp32": "ours fp32 (length-sorted)",
                 "ours_bf16": "ours bf16 autocast",
                 "ours_int8": "ours int8 dynamic"}


def format_table(r: dict) -> str:
    m = r["machine"]
    lines = [f"minBERT bench: {m['device']}, {m['threads']} threads ({m['cpu_count']} CPUs, "
             f"{m['cpu_capability']}), torch {m['torch']}" + (f", {m['gpu']}" if "gpu" in m else ""),
             f"CPU: {m.get('cpu', '?')}; flags: {' '.join(r.get('cpu_flags') or m.get('cpu_flags') or []) or 'none'}"
             f" (bf16 native: {'yes' if m.get('bf16_native') else 'no'})", ""]
    if "encode" in r:
        lines += _encode_lines(r["encode"]) + [""]
    if "train" in r:
        lines += _train_lines(r["train"]) + [""]
    if "latency" in r:
        la = r["latency"]
        parts = [f"{p} p50 {la[f'{p}_p50_ms']} ms, p95 {la[f'{p}_p95_ms']} ms"
                 for p in ("fp32", "bf16", "int8") if f"{p}_p50_ms" in la]
        lines += [f"latency: one sentence per call, {la['op']} of {la['model']}, {la['n_calls']} calls",
                  "  " + "; ".join(parts), ""]
    if "eval" in r:
        ev = r["eval"]
        n = ", ".join(f"{t} {v}" for t, v in ev["n"].items() if v)
        lines += [f"eval: evaluate_checkpoint on the dev sets ({n}) of {ev['checkpoint']}",
                  f"  new checkpoint, exact fp32: {ev['fp32_seconds']} s   profile {ev['fp32_profile']}",
                  f"  same checkpoint again (cache): {ev['fp32_cached_seconds']} s"]
        if "auto_seconds" in ev:
            gaps = ev["auto_gap_points"]
            worst = max((abs(v) for v in gaps.values()), default=0.0)
            lines.append(f"  new checkpoint, precision auto ({ev['auto_precision']}): {ev['auto_seconds']} s, "
                         f"largest dev-metric gap to fp32 {worst:.2f} points   profile {ev['auto_profile']}")
        lines.append("")
    lines.append(f"process peak RSS {r['peak_rss_mb']} MB, bench wall time {r['wall_time_s']} s")
    return "\n".join(lines)


def _encode_lines(e: dict) -> list[str]:
    """The encode section of :func:`format_table`."""
    row = "{:<38} {:>12} {:>9} {:>11} {:>10} {:>10} {:>11}"
    lines: list[str] = []
    lines += [f"encode: {e['n_sentences']} STS dev sentences, batch {e['batch_size']} "
              f"(sentence-transformers {e.get('st_batch_size', 32)}), max_len {e.get('max_len', 128)}, "
              f"median of {e['repeats']}",
              row.format("method", "sentences/s", "vs ref", "CPU-time x", "peak MB", "max |dev|", "min cosine")]
    dev = e.get("deviation", {})
    for k, label in ENCODE_LABELS.items():
        if k not in e["sentences_per_s"]:
            continue
        ratio = 1.0 if k == "reference" else e[f"ratio_{k.removeprefix('ours_')}"]
        d = dev.get(k)
        lines.append(row.format(label, e["sentences_per_s"][k], f"{ratio:.2f}x",
                                f"{e['cpu_time_ratio'].get(k, 1.0):.2f}x", _mem(e, k),
                                f"{d['max_abs_diff']:.1e}" if d else "(exact)",
                                f"{d['min_cosine']:.4f}" if d else "1.0000"))
    lines.append("  deviations are from the exact fp32 reference (sentence-transformers: of unit vectors)")
    if "ratio_vs_st" in e:
        lines.append(f"  ours fp32 / sentence-transformers encode: {e['ratio_vs_st']:.2f}x")
    if "ratio_vs_ort_int8" in e:
        lines.append(f"  best path ({e['best_path']}: {e['best_path_rule']}) / ONNX Runtime int8 "
                     f"({e['ort_int8_fastest']}, the faster one): {e['ratio_vs_ort_int8']:.2f}x; "
                     f"vs default {e['ratio_vs_ort_int8_default']:.2f}x, vs equal-accuracy "
                     f"{e['ratio_vs_ort_int8_equal']:.2f}x; ours fp32 / ORT fp32 {e['ratio_vs_ort_fp32']:.2f}x")
    if "ort_fp32_verify" in e.get("checks", {}):
        v = e["checks"]["ort_fp32_verify"]
        lines.append(f"  ONNX export checked before timing at lengths {list(v['lengths'])}: "
                     f"max |ORT - ours fp32| {v['max_abs_diff']:.1e}, min cosine {v['min_cosine']:.6f}")
    if "onnx_skipped" in e.get("checks", {}):
        lines.append(f"  ONNX Runtime skipped: {e['checks']['onnx_skipped']}")
    return lines


def _train_lines(t: dict) -> list[str]:
    """The train section of :func:`format_table`."""
    lines: list[str] = []
    row5 = "{:<34} {:>14} {:>10} {:>12} {:>12}"
    lines += [f"train: {t['n_examples']} SST examples x {t['repeats']} passes, batch {t['batch_size']}, "
              f"max_len {t['max_len']}; reference {t['reference_optimizer']}, ours {t['optimizer']}",
              row5.format("method", "examples/s", "vs ref", "CPU-time x", "peak MB")]
    lines.append(row5.format("plain loop (random batches)", t["examples_per_s"]["reference"], "1.00x",
                             "1.00x", _mem(t, "reference")))
    for precision in ("fp32", "bf16"):
        if f"ours_{precision}" in t["examples_per_s"]:
            lines.append(row5.format(f"ours train_step {precision} (buckets)",
                                     t["examples_per_s"][f"ours_{precision}"],
                                     f"{t[f'ratio_{precision}']:.2f}x",
                                     f"{t['cpu_time_ratio'][f'ours_{precision}']:.2f}x",
                                     _mem(t, f"ours_{precision}")))
    return lines


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions per method (median)")
    p.add_argument("--encode-limit", type=int, help="encode only the first N STS dev sentences")
    p.add_argument("--train-examples", type=int, default=320, help="SST examples per training pass")
    p.add_argument("--train-batch-size", type=int, default=32)
    p.add_argument("--latency-n", type=int, default=50, help="one-sentence calls for the latency figures")
    p.add_argument("--checkpoint", help="checkpoint for the latency section (default: pretrained) and the "
                                        "eval section (default: a fresh quick-recipe model)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--only", nargs="+", choices=list(SECTIONS), help="run only these sections")
    p.add_argument("--eval-limit", type=int, help="first N examples of each dev set in the eval section")
    p.add_argument("--no-compare", action="store_true",
                   help="skip sentence-transformers and ONNX Runtime in the encode section")
    p.add_argument("--quick", action="store_true",
                   help="every section at toy sizes (checks the code; the figures mean nothing): "
                        + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a field of our trainer's recipe (configs/quick.yaml), e.g. train.precision=bf16")
    p.add_argument("--data-dir", default=str(REPO / "data"))
    return p


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) in (None, make_parser().get_default(key)):
                setattr(args, key, value)
    if args.repeats < 1 or args.train_examples < 1 or args.latency_n < 1:
        print("error: --repeats, --train-examples and --latency-n must be >= 1", file=sys.stderr)
        return 2
    try:
        result = run_bench(repeats=args.repeats, encode_limit=args.encode_limit,
                           train_examples=args.train_examples, train_batch_size=args.train_batch_size,
                           latency_n=args.latency_n, checkpoint=args.checkpoint, device=args.device,
                           sections=tuple(args.only or SECTIONS), overrides=args.set, data_dir=args.data_dir,
                           eval_limit=args.eval_limit, compare=not args.no_compare)
    except MinbertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
