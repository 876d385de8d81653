"""Tokens per forward on CPU: the same scoring work at several ``token_budget`` values.

16 requests of the server benchmark (4 RM-Bench chat prompts x 4 repeats, 6 responses each, about
35,000 tokens) scored one request per call (what ``--max-batch 1`` does) and as one merged call (what
dynamic batching does: requests of one prompt share its forward) with each budget. Model:
SmolLM2-135M's shape and tokenizer, random weights, ``--layers`` layers, float32. Alternating repeats;
the table gives the best time of each and its ratio to the one-request-per-call time.

    python benchmarks/token_budget.py
    python benchmarks/token_budget.py --layers 4 --budgets 2048 4096 16384
"""

from __future__ import annotations

import argparse
import time

from score_speed import flatten, rm_bench_groups, smollm2_shaped, smollm2_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--budgets", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    args = parser.parse_args()
    from reward_plugin import RewardScorer

    tokenizer = smollm2_tokenizer()
    scorer = RewardScorer(smollm2_shaped(tokenizer, args.layers), tokenizer)
    encoded = [scorer.encoder.encode(*flatten([group])) for group in rm_bench_groups(4)]
    requests = [encoded[i % len(encoded)] for i in range(16)]
    tokens = sum(len(s) for _, ids in requests for s in ids)

    def one_per_call() -> None:
        scorer.token_budget = max(args.budgets)
        for keys, ids in requests:
            scorer.score_ids(ids, keys)

    def merged(budget: int) -> None:
        # as the server merges /score requests: their items and prompt keys end to end
        scorer.token_budget = budget
        keys = [k for request_keys, _ in requests for k in request_keys]
        scorer.score_ids([s for _, seqs in requests for s in seqs], keys)

    arms = [("one request per call", one_per_call)]
    arms += [(f"merged, budget {b}", lambda b=b: merged(b)) for b in args.budgets]
    one_per_call()  # warm-up
    best = {name: float("inf") for name, _ in arms}
    for _ in range(args.repeats):
        for name, run in arms:
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    print(
        f"\n{len(requests)} requests, {tokens} tokens, {args.layers} layers, float32, CPU, best of {args.repeats}\n"
    )
    print("| scoring | seconds | vs one request per call |")
    print("| --- | ---: | ---: |")
    base = best[arms[0][0]]
    for name, _ in arms:
        print(f"| {name} | {best[name]:.2f} | {best[name] / base:.2f}x |")


if __name__ == "__main__":
    main()
