"""Publish a trained checkpoint, e.g. as the shipped model, with half-precision weights.

    python -m core.export checkpoints/best-run checkpoints/minbert-multitask [--dtype float16]

Writes DST with the weights in ``--dtype`` (float16 halves the size: MiniLM's 22.7M
parameters take 45 MB), the same config.json (plus ``exported_from`` and
``weights_dtype``), the tokenizer files, and copies of the run's ``metrics.json`` and
``train_log.jsonl``. Then re-evaluates DST on the dev sets, so that DST's
``predictions/`` and its ``metrics.json`` ``dev`` figures are those of the weights it
holds (``training_dev`` keeps the figures measured during training, in float32).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from core.errors import MinbertError

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
STANDARD_META = ("format", "format_version", "config", "encoder_config", "tasks", "has_pooler")


def export(src: str | Path, dst: str | Path, dtype: str = "float16", data_dir: str | Path = "data",
           eval_limit: int | None = None) -> dict:
    """Write the checkpoint at ``src`` to ``dst`` with ``dtype`` weights; returns the dev
    metrics of the exported weights."""
    from core.evaluate import evaluate_model, write_predictions
    from core.model import MultitaskBert, read_checkpoint_meta
    src, dst = Path(src), Path(dst)
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
        metrics, frames = evaluate_model(MultitaskBert.load(probe), data_dir=data_dir, limit=eval_limit)
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="a trained checkpoint directory")
    p.add_argument("dst", help="where to write the exported checkpoint (replaced if it exists)")
    p.add_argument("--dtype", default="float16", choices=list(DTYPES))
    p.add_argument("--data-dir", default="data")
    args = p.parse_args(argv)
    try:
        metrics = export(args.src, args.dst, args.dtype, args.data_dir)
    except MinbertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
