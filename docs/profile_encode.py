"""Where the encode time goes: torch.profiler self-CPU shares of the top operators while
embedding the 1,726 STS dev sentences, for exact fp32 and the bf16 serving path.

    python docs/profile_encode.py [--top 8]

Prints the CPU model and flags first (shares depend on the CPU). Shares, not times: they
hold under other load on the machine; the times are core.tools.bench's.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from core.data.datasets import load_task  # noqa: E402
from core.model.multitask import MultitaskBert  # noqa: E402
from core.model.precision import cpu_flags, cpu_model  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args(argv)
    data = load_task("sts", "dev", REPO / "data")
    texts = list(data.texts_a) + list(data.texts_b)
    print(cpu_model(), " ".join(cpu_flags()), f"threads {torch.get_num_threads()}")
    for mode in (None, "bf16"):
        model = MultitaskBert.load("pretrained", quantize=mode)
        model.embed(texts[:200])   # warm-up: kernel choice, allocator
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model.embed(texts)
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:args.top]
        print(f"{mode or 'fp32':5s}", " | ".join(f"{e.key.replace('aten::', '')} {100 * e.self_cpu_time_total / total:.1f}%"
                                                 for e in top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
