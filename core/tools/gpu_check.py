"""GPU readiness check: one command that exercises the CUDA paths on a GPU machine.

    python -m core.gpu_check [--out DIR] [--budget-s 570]

Runs, each under its own time limit so that the whole stays under 10 minutes:

1. ``pytest -m cuda tests/test_cuda.py``: the encoder on CUDA against the CPU (≤ 1e-4),
   a bf16-autocast training run with the fused AdamW, and a 2-GPU NCCL job through
   ``core.jobs.manager`` (skipped with one GPU);
2. ``python -m core.bench --device cuda --json``: ours against the plain transformers /
   PyTorch baseline on the GPU (encoding, training steps, latency).

Writes ``gpu_check.json`` (machine, GPU names, torch and CUDA versions, git commit, each
step's outcome, wall time and output, the bench figures) and ``gpu_check.md`` (a table
for README) into ``--out`` (default ``checkpoints/gpu_check/``, which git ignores), and exits
non-zero when a step failed. Without a CUDA GPU it stops at once with the reason.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from core.paths import REPO



def _run(argv: list[str], timeout_s: float) -> dict:
    t0 = time.time()
    try:
        out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=max(1.0, timeout_s),
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                 [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])})
        rc, stdout, stderr = out.returncode, out.stdout, out.stderr
    except subprocess.TimeoutExpired as e:
        rc = 124
        stdout = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        stderr = f"timed out after {timeout_s:.0f} s"
    return {"argv": argv, "returncode": rc, "wall_s": round(time.time() - t0, 1),
            "stdout": stdout[-20000:], "stderr": stderr[-5000:]}


def machine() -> dict:
    import torch
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "host": platform.node(), "cpus": os.cpu_count(),
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if torch.cuda.is_available() else []}
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                        timeout=10).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        info["commit"] = None
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        info["nvidia_smi"] = smi.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        info["nvidia_smi"] = None
    return info


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"GPU check on {', '.join(m['gpus']) or 'no GPU'} (torch {m['torch']}, CUDA {m['cuda']}, "
             f"commit {(m.get('commit') or '?')[:7]}), {report['wall_s']:.0f} s in all:", "",
             "| step | result | wall time |", "|---|---|---|"]
    for name, step in report["steps"].items():
        tail = (step["stdout"].strip().splitlines() or [""])[-1][:120]
        result = "ok" if step["returncode"] == 0 else f"FAILED (exit {step['returncode']})"
        lines.append(f"| {name} | {result}: {tail} | {step['wall_s']:.0f} s |")
    bench = report.get("bench")
    if isinstance(bench, dict):
        keys = [k for k in bench if isinstance(bench[k], (int, float))]
        if keys:
            lines += ["", "bench: " + ", ".join(f"{k} = {bench[k]:.3g}" for k in keys)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / "checkpoints" / "gpu_check"),
                   help="directory for gpu_check.json and gpu_check.md")
    p.add_argument("--budget-s", type=float, default=570.0, help="wall-time budget of all steps together")
    p.add_argument("--bench-repeats", type=int, default=3)
    args = p.parse_args(argv)
    import torch
    if not torch.cuda.is_available():
        print("error: no CUDA GPU is visible (torch.cuda.is_available() is False): run this on a GPU machine "
              "with a CUDA build of torch", file=sys.stderr)
        return 2
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"machine": machine(), "steps": {}}
    left = lambda share: max(30.0, min(share, args.budget_s - (time.time() - t0)))  # noqa: E731
    report["steps"]["pytest -m cuda"] = _run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda", "-rs",
         "tests/test_cuda.py"], left(args.budget_s * 0.55))
    bench = _run([sys.executable, "-m", "core.bench", "--device", "cuda", "--json", "--repeats",
                  str(args.bench_repeats)], left(args.budget_s))
    report["steps"]["core.bench --device cuda"] = bench
    try:
        report["bench"] = json.loads(bench["stdout"][bench["stdout"].index("{"):]) if bench["returncode"] == 0 else None
    except ValueError:
        report["bench"] = None
    report["wall_s"] = round(time.time() - t0, 1)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    (out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    print(f"written: {out / 'gpu_check.json'}, {out / 'gpu_check.md'}")
    return 0 if all(s["returncode"] == 0 for s in report["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
