"""Segment attention on CPU: float32 (the default) vs bf16 matmul + softmax, same shapes vs new ones.

One layer's attention (forward + backward) over 8 packed hh-rlhf-sized pairs with SmolLM2's head
layout (9 query / 3 key-value heads of 64), bf16 inputs as under autocast. ``same shapes`` repeats
one batch (what a one-batch benchmark sees); ``new shapes`` draws new prefix and response lengths
for every batch (what training sees) and reports the process's resident memory at the end. Each
precision runs in a fresh subprocess so that memory kept by one does not count against the other.

    python benchmarks/segment_attention.py --batches 200
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time


def spans_for(rng: random.Random) -> tuple[list[tuple[int, ...]], int]:
    spans, cursor = [], 0
    for _ in range(8):
        prefix, chosen, rejected = rng.randint(60, 300), rng.randint(10, 80), rng.randint(10, 80)
        spans.append((0, cursor, prefix, chosen, rejected))
        cursor += prefix + chosen + rejected
    return spans, cursor


def one_call(spans, length: int, attend) -> float:
    import torch

    q = torch.randn(1, 9, length, 64, dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(1, 3, length, 64, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(1, 3, length, 64, dtype=torch.bfloat16, requires_grad=True)
    started = time.perf_counter()
    attend(q, k, v, spans).float().sum().backward()
    return time.perf_counter() - started


def worker(precision: str, batches: int) -> dict:
    import functools

    import torch

    from reward_plugin.pairs.attention import attend_segments, segment_attention

    torch.set_num_threads(2)
    # segment_attention upcasts bf16 inputs on CPU; attend_segments attends in the inputs' dtype.
    if precision == "float32":
        attend = segment_attention
    else:
        attend = functools.partial(attend_segments, scaling=None, dropout=0.0, sliding_window=None)
    rng = random.Random(0)
    spans, length = spans_for(rng)
    same = min(one_call(spans, length, attend) for _ in range(6))
    started = time.perf_counter()
    for _ in range(batches):
        one_call(*spans_for(rng), attend)
    new = time.perf_counter() - started
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * 4096 / 2**20
    return {"precision": precision, "same_ms": 1000 * same, "new_s": new, "rss_mb": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.batches)))
        return
    print("| attention precision | same shapes, ms per call | new shapes every batch | RSS after |")
    print("| --- | ---: | ---: | ---: |")
    for precision in ("float32", "bf16"):
        out = subprocess.run(
            [sys.executable, __file__, "--worker", precision, "--batches", str(args.batches)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"| {precision} | {r['same_ms']:.1f} | {r['new_s']:.1f} s for {args.batches} batches "
            f"| {r['rss_mb']:.0f} MB |"
        )


if __name__ == "__main__":
    main()
