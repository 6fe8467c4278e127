"""Publish a trained checkpoint, or take its encoder out of the studio.

    python -m core.tools.export checkpoints/best-run checkpoints/minbert-multitask [--dtype float16]
    python -m core.tools.export RUN OUT --format hf                      # transformers.AutoModel
    python -m core.tools.export RUN OUT --format sentence-transformers   # SentenceTransformer(OUT)

``--format minbert`` (the default; how the shipped model was made) writes DST with the
weights in ``--dtype`` (float16 halves the size: MiniLM's 22.7M parameters take 45 MB),
the same config.json (plus ``exported_from`` and ``weights_dtype``), the tokenizer files,
and copies of the run's ``metrics.json`` and ``train_log.jsonl``. Then re-evaluates DST on
the dev sets, so that DST's ``predictions/`` and its ``metrics.json`` ``dev`` figures are
those of the weights it holds (``training_dev`` keeps the figures measured during
training, in float32).

``--format hf`` writes the run's encoder as a ``transformers`` BERT directory
(``BertModel.save_pretrained``: config.json, model.safetensors, the tokenizer with
``model_max_length`` = the run's ``model.max_len``); pooling its token states the run's
way (``model.pooling``, recorded in ``minbert_export.json``) gives the run's sentence
embeddings. ``--format sentence-transformers`` adds that pooling as a
sentence-transformers ``Pooling`` module (``SentenceTransformer.save``), so
``SentenceTransformer(OUT).encode(texts)`` is the run's ``MultitaskBert.embed(texts)``.
Both load offline, in float32; the task heads stay in the studio (``--format minbert``).
Before OUT is published, the export loads it with the target library and checks that it
embeds probe sentences as the run does (cosine >= 0.9999 each), else it fails.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from core.errors import MinbertError

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
STANDARD_META = ("format", "format_version", "config", "encoder_config", "tasks", "has_pooler")
FORMATS = ("minbert", "hf", "sentence-transformers")
# our pooling -> sentence-transformers' Pooling modes (a tuple concatenates in its order)
ST_POOLING = {"mean": "mean", "cls": "cls", "max": "max", "mean_max": ("mean", "max")}
EXPORT_INFO = "minbert_export.json"      # what an hf / sentence-transformers export holds
MIN_COSINE = 0.9999
# probe sentences of the export check: short and long (cut at max_len), padded in one batch
PROBES = ("The worst film I have seen this year.",
          "A gorgeous, witty, seductive movie.",
          "How do I learn to cook rice?",
          "ok",
          " ".join(["A sprawling, uneven but often moving story of two brothers and the town they left."] * 12))


def export(src: str | Path, dst: str | Path, dtype: str = "float16", data_dir: str | Path = "data",
           eval_limit: int | None = None) -> dict:
    """Write the checkpoint at ``src`` to ``dst`` with ``dtype`` weights; returns the dev
    metrics of the exported weights (on the full dev sets; ``eval_limit``: on a marked
    stratified sample of each, for tests)."""
    from core.data.datasets import load_subset
    from core.evaluation.evaluator import evaluate_model, write_predictions
    from core.model.checkpoint import read_checkpoint_meta, resolve_checkpoint
    from core.model.multitask import MultitaskBert
    src, dst = resolve_checkpoint(src), Path(dst)
    if dtype not in DTYPES:
        raise MinbertError(f"unknown --dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if src.resolve() == dst.resolve():
        raise MinbertError("the source and the destination are the same directory: choose another destination")
    meta = read_checkpoint_meta(src)
    model = MultitaskBert.load(src)
    extra = {k: v for k, v in meta.items() if k not in STANDARD_META}
    extra.update(exported_from=src.name, weights_dtype=dtype)
    dst.parent.mkdir(parents=True, exist_ok=True)
    # evaluate the exported weights first (a probe copy), then publish everything at once:
    # DST is replaced by one atomic swap and never missing or half-written
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        probe = Path(tmp) / "probe"
        model.save(probe, extra=extra, dtype=DTYPES[dtype])
        exported = MultitaskBert.load(probe)
        # eval_limit: a stratified sample of each dev file, its figures marked as a subset
        datasets = {t: load_subset(t, "dev", data_dir, eval_limit) for t in exported.served_tasks()}
        metrics, frames = evaluate_model(exported, datasets=datasets)
    summary = json.loads((src / "metrics.json").read_text()) if (src / "metrics.json").is_file() else {}
    summary["training_dev"] = summary.get("dev")
    summary["dev"] = metrics
    summary["weights_dtype"] = dtype
    files: dict[str, str | bytes] = {"metrics.json": json.dumps(summary, indent=2)}
    if (src / "train_log.jsonl").is_file():
        files["train_log.jsonl"] = (src / "train_log.jsonl").read_bytes()
    model.save(dst, extra=extra, dtype=DTYPES[dtype], extra_files=files,
               populate=lambda d: write_predictions(frames, d / "predictions", "dev"))
    return metrics


# ------------------------------------------------ hf / sentence-transformers
def source_model(src: str | Path):
    """The run's model in float32: a checkpoint directory, or a name
    ``MultitaskBert.load`` knows ("minbert-multitask", "pretrained")."""
    from core.model.multitask import MultitaskBert
    path = Path(src)
    if path.is_dir() and (path / "config.json").is_file() and not (path / "model.safetensors").is_file():
        raise MinbertError(f"{src} keeps results only (no model.safetensors; the study deletes run weights "
                           f"unless --keep-weights): it has no encoder to export; pick a run with weights")
    return MultitaskBert.load(src).eval()


def _check_destination(src: str | Path, dst: Path) -> None:
    if Path(src).exists() and Path(src).resolve() == dst.resolve():
        raise MinbertError("the source and the destination are the same directory: choose another destination")
    if dst.exists() and not dst.is_dir():
        raise MinbertError(f"{dst} is a file: pass a directory to export into")
    if dst.is_dir() and any(dst.iterdir()) and not (dst / EXPORT_INFO).is_file():
        raise MinbertError(f"{dst} already holds other files: export into a new or empty directory "
                           f"(an earlier export there, with its {EXPORT_INFO}, is replaced)")


def write_hf(model, directory: Path) -> None:
    """The encoder as a ``transformers`` BertModel directory (``save_pretrained``), the
    tokenizer cutting inputs at the run's ``max_len`` as training and ``embed`` did."""
    import transformers
    enc = model.bert
    config = transformers.BertConfig(**enc.config.to_dict(), architectures=["BertModel"])
    hf = transformers.BertModel(config, add_pooling_layer=enc.pooler is not None)
    missing, unexpected = hf.load_state_dict(enc.state_dict(), strict=False)
    missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:
        raise MinbertError(f"the encoder's tensors do not map onto transformers' BertModel "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    hf.save_pretrained(str(directory))
    model.tokenizer.model_max_length = model.config.model.max_len
    model.tokenizer.save_pretrained(str(directory))


def write_sentence_transformers(model, hf_dir: Path, directory: Path) -> None:
    """A sentence-transformers model (``SentenceTransformer.save``): the encoder of
    ``hf_dir``, ``max_seq_length`` = the run's ``max_len``, and its pooling."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    mode = model.config.model.pooling
    if mode not in ST_POOLING:
        raise MinbertError(f"pooling {mode!r} has no sentence-transformers Pooling mode; export --format hf")
    encoder = Transformer(str(hf_dir), max_seq_length=model.config.model.max_len)
    pooling = Pooling(model.bert.config.hidden_size, pooling_mode=ST_POOLING[mode])
    SentenceTransformer(modules=[encoder, pooling], device="cpu").save(str(directory))


def hf_embed(directory: str | Path, texts, pooling: str = "mean", batch_size: int = 32) -> np.ndarray:
    """Sentence embeddings of an ``--format hf`` export through ``transformers`` alone:
    ``AutoModel`` token states pooled the run's way (padding left out)."""
    from transformers import AutoModel, AutoTokenizer

    from core.model.heads import Pooling
    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    model = AutoModel.from_pretrained(str(directory), local_files_only=True).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True, return_tensors="pt")
            out.append(Pooling(pooling)(model(**batch).last_hidden_state, batch["attention_mask"]))
    return torch.cat(out).numpy()


def st_embed(directory: str | Path, texts) -> np.ndarray:
    """Sentence embeddings of an ``--format sentence-transformers`` export."""
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(str(directory), device="cpu", local_files_only=True)
    return model.encode(list(texts), convert_to_numpy=True, batch_size=32)


def agreement(ours: np.ndarray, theirs: np.ndarray, library: str) -> dict:
    """Cosine of each probe's two embeddings; a MinbertError below :data:`MIN_COSINE`."""
    from core.evaluation.evaluator import cosine_scores
    if ours.shape != theirs.shape:
        raise MinbertError(f"{library} embeds to shape {theirs.shape}, the run to {ours.shape}")
    cos = cosine_scores(ours, theirs)
    check = {"library": library, "sentences": len(cos), "min_cosine": round(float(cos.min()), 7),
             "max_abs_diff": float(np.abs(ours - theirs).max())}
    if cos.min() < MIN_COSINE:
        raise MinbertError(f"the export does not embed as the run does ({library}: cosine {cos.min():.6f} "
                           f"< {MIN_COSINE}); nothing was written")
    return check


def export_encoder(src: str | Path, dst: str | Path, fmt: str = "hf") -> dict:
    """Write the encoder of ``src`` to ``dst`` as ``fmt`` ("hf" or "sentence-transformers"),
    checked against the run's own embeddings before ``dst`` is published (one atomic swap);
    returns what ``dst/minbert_export.json`` records."""
    import transformers

    from core.atomic import publish_dir, staging_dir
    if fmt not in FORMATS[1:]:
        raise MinbertError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    dst = Path(dst)
    _check_destination(src, dst)
    model = source_model(src)
    staging = staging_dir(dst)
    try:
        with tempfile.TemporaryDirectory(dir=dst.parent, prefix=f".{dst.name}.hf-") as tmp:
            write_hf(model, staging if fmt == "hf" else Path(tmp))
            if fmt != "hf":
                write_sentence_transformers(model, Path(tmp), staging)
        ours = model.embed(list(PROBES))
        pooling = model.config.model.pooling
        theirs = hf_embed(staging, PROBES, pooling) if fmt == "hf" else st_embed(staging, PROBES)
        library = "transformers" if fmt == "hf" else "sentence-transformers"
        info = {"format": fmt, "exported_from": str(src), "pooling": pooling,
                "max_len": model.config.model.max_len, "embedding_dim": int(ours.shape[1]), "normalized": False,
                "task_heads": "not included (python -m core.tools.export RUN OUT keeps them)",
                "transformers": transformers.__version__,
                "check": agreement(ours, theirs, library)}
        (staging / EXPORT_INFO).write_text(json.dumps(info, indent=2))
        publish_dir(staging, dst)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return info


def main(argv=None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")   # everything is local: never ask the hub
    p = argparse.ArgumentParser(prog="python -m core.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="a trained checkpoint directory (or minbert-multitask, pretrained)")
    p.add_argument("dst", help="where to write the export (an earlier export there is replaced)")
    p.add_argument("--format", default="minbert", choices=list(FORMATS),
                   help="minbert: a studio checkpoint with its task heads (default); hf: a transformers "
                        "BertModel directory; sentence-transformers: a SentenceTransformer directory")
    p.add_argument("--dtype", default=None, choices=list(DTYPES),
                   help="weights of a minbert export (default float16); hf and sentence-transformers "
                        "exports are float32")
    p.add_argument("--data-dir", default="data")
    args = p.parse_args(argv)
    try:
        if args.format == "minbert":
            result = export(args.src, args.dst, args.dtype or "float16", args.data_dir)
        elif args.dtype not in (None, "float32"):
            raise MinbertError(f"--dtype {args.dtype} is for --format minbert; {args.format} exports are "
                               f"float32 (what transformers and sentence-transformers load)")
        else:
            result = export_encoder(args.src, args.dst, args.format)
    except MinbertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
