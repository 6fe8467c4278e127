"""Dev metrics of a checkpoint in fp32 and in each fast inference path.

    python -m core.tools.quantize CHECKPOINT [--modes fp32 bf16 int8] [--limit N] [--json]

The paths themselves (bf16 autocast, int8 dynamic quantization, the rule that picks one)
live in core/model/precision.py; loading and warming a model for serving in core/serving/predict.py.
This module owns only the comparison and its command line.
"""
from __future__ import annotations

import time

from core.errors import MinbertError, run_cli
from core.model.precision import PRECISIONS, backend_name, bf16_is_fast, cpu_flags


# ------------------------------------------------------------------------ CLI
def default_modes() -> tuple[str, ...]:
    """fp32, bf16 where it is native on this CPU, and int8."""
    return ("fp32", "bf16", "int8") if bf16_is_fast("cpu") else ("fp32", "int8")


def compare_dev_metrics(checkpoint: str, data_dir: str = "data", limit: int | None = None,
                        batch_size: int = 64, modes: tuple[str, ...] | None = None) -> dict:
    """Dev metrics of a checkpoint in fp32 and each fast path (CPU), the gaps to fp32 in
    points (x100 for metrics in [0, 1]), each path's wall time, and the cosine of its STS
    dev sentence embeddings to the fp32 ones (min / mean). No cache: every path computes."""
    from core.data.datasets import load_task
    from core.evaluation.evaluator import cosine_scores, evaluate_model
    from core.model.multitask import MultitaskBert
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
        cos = cosine_scores(e, ref)
        out["cosine_to_fp32"][mode] = {"min": round(float(cos.min()), 5), "mean": round(float(cos.mean()), 5),
                                       "n_sentences": len(sentences)}
    return out


def main(argv=None) -> int:
    """python -m core.tools.quantize CHECKPOINT [--modes fp32 bf16 int8] [--limit N] [--json]."""
    import argparse
    p = argparse.ArgumentParser(prog="python -m core.tools.quantize",
                                description="Dev metrics of a checkpoint in fp32 and in the fast CPU paths "
                                            "(bf16 where native, int8), the gaps, and embedding cosines.")
    p.add_argument("checkpoint", help="checkpoint directory, or 'pretrained' (zero-shot Quora / STS)")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--limit", type=int, help="first N dev examples of each task")
    p.add_argument("--modes", nargs="+", choices=list(PRECISIONS), help="default: fp32, bf16 if native, int8")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    return run_cli(lambda: compare_dev_metrics(args.checkpoint, args.data_dir, args.limit, modes=args.modes),
                   args.json, show)


def show(r: dict) -> None:
    """The comparison as a table, for people."""
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


if __name__ == "__main__":
    raise SystemExit(main())
