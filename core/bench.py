"""Side-by-side speed benchmark: ours vs a plain transformers / PyTorch baseline.

    python -m core.bench [--json] [--repeats 3] [--encode-limit N] [--train-examples 320]
                         [--checkpoint DIR] [--set key=value ...]

Everything runs in one process, on the same weights (the packaged all-MiniLM-L6-v2) and
the same inputs. The methods of a section are timed in turns (reference, ours, ours,
reference, ...) ``--repeats`` times, so a load spike on a shared machine hits them alike;
each figure is a median, and each ratio is the median of the per-repeat ratios.

encode    the STS dev sentences (both columns, file order), mean-pooled embeddings.
          reference: ``transformers.BertModel``, batches of 64 in file order, each padded
          to its longest sentence. ours: ``MultitaskBert.embed`` (length-sorted batches of
          the same size, SDPA attention, inference mode, input order restored), fp32 and
          int8 (``MultitaskBert.load(..., quantize="int8")``, CPU only).
train     the first ``--train-examples`` SST training sentences, one pass each, batch 32.
          reference: ``transformers.BertModel`` + mean pooling + dropout + linear head,
          random batches padded to their longest sentence, ``torch.optim.AdamW``.
          ours: ``Trainer.train_step`` of configs/quick.yaml restricted to SST (length-
          bucketed batches, fused AdamW), same lr / weight decay / grad clip / max_len /
          batch size / number of examples; in fp32, and in bf16 autocast where bf16 is
          native (CUDA, AVX-512 BF16 / AMX CPUs). train_ratio is the best of the two,
          train_ratio_fp32 / train_ratio_bf16 each one.
latency   one sentence per call through ``MultitaskBert`` (sentiment with ``--checkpoint``,
          an embedding otherwise): p50 / p95 in milliseconds, fp32 and int8.

Throughput is wall-clock; the "CPU-time x" column is the same ratio from this process's
CPU time, which other processes on a shared machine inflate much less. Peak memory is the process's peak resident set (CPU) or the peak CUDA allocation per
method (GPU). ``--json`` prints one JSON object; its keys include ``encode_ratio_best``,
``encode_ratio_fp32``, ``encode_ratio_int8``, ``train_ratio``, ``train_ratio_fp32``,
``train_ratio_bf16`` (ours / reference) and the raw figures.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
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

from core.errors import MinbertError

REPO = Path(__file__).resolve().parents[1]
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
    from core.quantize import backend_name
    info = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "int8_backend": backend_name()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _reference_encoder(device: torch.device):
    """``transformers.BertModel`` and tokenizer from the packaged weights directory."""
    import transformers
    from core.bert import packaged_model_dir
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
def bench_encode(texts: list[str], repeats: int, device: torch.device, batch_size: int = 64,
                 max_len: int = 128, int8: bool = True) -> dict:
    from core.model import MultitaskBert
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

    models = {"ours_fp32": MultitaskBert.load("pretrained", device=device)}
    if int8:
        models["ours_int8"] = MultitaskBert.load("pretrained", device="cpu", quantize="int8")
    encoders = {"reference": run_reference}
    for name, model in models.items():
        model.config.model.max_len = max_len
        encoders[name] = lambda texts, model=model: model.embed(texts, batch_size=batch_size)
    for encode in encoders.values():   # first-call costs (allocator, kernel choice) are not throughput
        encode(texts[:batch_size])
    res = interleaved({name: (lambda encode=encode: encode(texts)) for name, encode in encoders.items()},
                      repeats, device)
    ref = res["outputs"]["reference"]
    out = {"n_sentences": len(texts), "batch_size": batch_size, "repeats": repeats,
           "seconds": {k: [round(t, 3) for t in v] for k, v in res["times"].items()},
           "cpu_seconds": {k: [round(t, 3) for t in v] for k, v in res["cpu_times"].items()},
           "cpu_time_ratio": {k: round(v, 3) for k, v in res["cpu_speedup"].items() if k != "reference"},
           "sentences_per_s": {k: round(len(texts) / v, 1) for k, v in res["median"].items()},
           **_memory(res, device),
           "ratio_fp32": round(res["speedup"]["ours_fp32"], 3),
           "fp32_max_abs_diff": float(np.abs(res["outputs"]["ours_fp32"] - ref).max())}
    if int8:
        q = res["outputs"]["ours_int8"]
        cos = (q * ref).sum(1) / (np.linalg.norm(q, axis=1) * np.linalg.norm(ref, axis=1) + 1e-12)
        out.update(ratio_int8=round(res["speedup"]["ours_int8"], 3), int8_mean_cosine=float(cos.mean()),
                   int8_min_cosine=float(cos.min()))
    out["ratio_best"] = max(out["ratio_fp32"], out.get("ratio_int8", 0.0))
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


def bf16_is_fast(device: torch.device) -> bool:
    """bf16 matmuls run natively: a CUDA GPU with bf16, or a CPU with AVX-512 BF16 / AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bench_train(n_examples: int, repeats: int, device: torch.device, batch_size: int = 32,
                recipe: Path = DEFAULT_RECIPE, overrides: list[str] | None = None,
                data_dir: str | Path = REPO / "data", precisions: tuple[str, ...] = ("fp32", "bf16")) -> dict:
    from core.config import Config
    from core.train import Trainer

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
            trainer._start_stage(trainer.stages[0])
            trainers[name] = trainer
        data = trainer.train_data["sst"]
        texts, labels = list(data.texts_a), torch.as_tensor(data.labels)
        assert len(texts) == n_examples, (len(texts), n_examples)

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
                  int8: bool = True) -> dict:
    from core.model import MultitaskBert
    source = checkpoint or "pretrained"
    models = {"fp32": MultitaskBert.load(source, device=device)}
    if int8:
        models["int8"] = MultitaskBert.load(source, device="cpu", quantize="int8")
    op = "predict_sentiment" if "sst" in models["fp32"].heads else "embed"
    out: dict = {"model": str(source), "op": op, "n_calls": len(sentences)}
    for name, model in models.items():
        call = getattr(model, op)
        call(sentences[:1])   # warm-up
        ms = []
        for s in sentences:
            seconds, _ = _timed(lambda: call([s]), device if name == "fp32" else torch.device("cpu"))
            ms.append(seconds * 1000)
        out[f"{name}_p50_ms"] = round(float(np.percentile(ms, 50)), 2)
        out[f"{name}_p95_ms"] = round(float(np.percentile(ms, 95)), 2)
    return out


# ----------------------------------------------------------------------- run
def run_bench(repeats: int = 3, encode_limit: int | None = None, train_examples: int = 320,
              train_batch_size: int = 32, latency_n: int = 50, checkpoint: str | None = None,
              device: str = "auto", sections: tuple[str, ...] = ("encode", "train", "latency"),
              overrides: list[str] | None = None, data_dir: str | Path = REPO / "data") -> dict:
    from core.data import load_task
    from core.train import resolve_device
    dev = resolve_device(device)
    int8 = dev.type == "cpu"
    t0 = time.time()
    result: dict = {"machine": machine_info(dev)}
    if "encode" in sections:
        sts = load_task("sts", "dev", data_dir)
        texts = list(sts.texts_a) + list(sts.texts_b)
        texts = texts[:encode_limit] if encode_limit else texts
        result["encode"] = bench_encode(texts, repeats, dev, int8=int8)
        result["encode_ratio_fp32"] = result["encode"]["ratio_fp32"]
        result["encode_ratio_int8"] = result["encode"].get("ratio_int8")
        result["encode_ratio_best"] = result["encode"]["ratio_best"]
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
    result["peak_rss_mb"] = round(peak_memory_mb(torch.device("cpu")), 1)
    result["wall_time_s"] = round(time.time() - t0, 1)
    return result


def _mem(section: dict, method: str) -> str:
    """The peak-memory cell: per method on CUDA, the process's peak RSS so far on CPU."""
    if "peak_mb" in section:
        return f"{section['peak_mb'][method]:.0f}"
    return f"(rss {section['peak_rss_mb']:.0f})"


def format_table(r: dict) -> str:
    m = r["machine"]
    lines = [f"minBERT bench: {m['device']}, {m['threads']} threads ({m['cpu_count']} CPUs, "
             f"{m['cpu_capability']}), torch {m['torch']}" + (f", {m['gpu']}" if "gpu" in m else ""),
             ""]
    row = "{:<34} {:>14} {:>10} {:>12} {:>12}"
    if "encode" in r:
        e = r["encode"]
        lines += [f"encode: {e['n_sentences']} STS dev sentences, batch {e['batch_size']}, "
                  f"median of {e['repeats']}",
                  row.format("method", "sentences/s", "vs ref", "CPU-time x", "peak MB")]
        names = {"reference": "transformers.BertModel (file order)", "ours_fp32": "ours fp32 (length-sorted)",
                 "ours_int8": "ours int8 dynamic"}
        for k, label in names.items():
            if k in e["sentences_per_s"]:
                ratio = 1.0 if k == "reference" else e[f"ratio_{k.split('_')[1]}"]
                cpu_ratio = e["cpu_time_ratio"].get(k, 1.0)
                lines.append(row.format(label, e["sentences_per_s"][k], f"{ratio:.2f}x", f"{cpu_ratio:.2f}x",
                                        _mem(e, k)))
        lines.append(f"  fp32 max |ours - reference| = {e['fp32_max_abs_diff']:.2e}"
                     + (f"; int8 cosine to reference: mean {e['int8_mean_cosine']:.4f}, "
                        f"min {e['int8_min_cosine']:.4f}" if "int8_mean_cosine" in e else ""))
        lines.append("")
    if "train" in r:
        t = r["train"]
        lines += [f"train: {t['n_examples']} SST examples x {t['repeats']} passes, batch {t['batch_size']}, "
                  f"max_len {t['max_len']}; reference {t['reference_optimizer']}, ours {t['optimizer']}",
                  row.format("method", "examples/s", "vs ref", "CPU-time x", "peak MB")]
        lines.append(row.format("plain loop (random batches)", t["examples_per_s"]["reference"], "1.00x",
                                "1.00x", _mem(t, "reference")))
        for precision in ("fp32", "bf16"):
            if f"ours_{precision}" in t["examples_per_s"]:
                lines.append(row.format(f"ours train_step {precision} (buckets)",
                                        t["examples_per_s"][f"ours_{precision}"],
                                        f"{t[f'ratio_{precision}']:.2f}x",
                                        f"{t['cpu_time_ratio'][f'ours_{precision}']:.2f}x",
                                        _mem(t, f"ours_{precision}")))
        lines.append("")
    if "latency" in r:
        la = r["latency"]
        lines += [f"latency: one sentence per call, {la['op']} of {la['model']}, {la['n_calls']} calls",
                  f"  fp32 p50 {la['fp32_p50_ms']} ms, p95 {la['fp32_p95_ms']} ms"
                  + (f"; int8 p50 {la['int8_p50_ms']} ms, p95 {la['int8_p95_ms']} ms" if "int8_p50_ms" in la
                     else ""), ""]
    lines.append(f"process peak RSS {r['peak_rss_mb']} MB, bench wall time {r['wall_time_s']} s")
    return "\n".join(lines)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions per method (median)")
    p.add_argument("--encode-limit", type=int, help="encode only the first N STS dev sentences")
    p.add_argument("--train-examples", type=int, default=320, help="SST examples per training pass")
    p.add_argument("--train-batch-size", type=int, default=32)
    p.add_argument("--latency-n", type=int, default=50, help="one-sentence calls for the latency figures")
    p.add_argument("--checkpoint", help="checkpoint for the latency section (default: pretrained)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--only", nargs="+", choices=["encode", "train", "latency"], help="run only these sections")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a field of our trainer's recipe (configs/quick.yaml), e.g. train.precision=bf16")
    p.add_argument("--data-dir", default=str(REPO / "data"))
    return p


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.repeats < 1 or args.train_examples < 1 or args.latency_n < 1:
        print("error: --repeats, --train-examples and --latency-n must be >= 1", file=sys.stderr)
        return 2
    try:
        result = run_bench(repeats=args.repeats, encode_limit=args.encode_limit,
                           train_examples=args.train_examples, train_batch_size=args.train_batch_size,
                           latency_n=args.latency_n, checkpoint=args.checkpoint, device=args.device,
                           sections=tuple(args.only or ("encode", "train", "latency")),
                           overrides=args.set, data_dir=args.data_dir)
    except MinbertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
