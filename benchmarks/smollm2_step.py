"""One training step (forward + backward) of 8 hh-rlhf pairs on SmolLM2-135M-Instruct, per pair layout.

Inner-loop probe next to ``train_speed.py --models smollm2`` (which times whole runs): the same 8
pairs (the first rows of ``../shared/data/``, ``max_length`` 512) go through the standard padded
layout, the packed layout with segment attention and the packed layout with the dense mask, in
bf16 autocast with gradient checkpointing, ``--repeats`` rounds interleaved. Round 0 meets every
tensor shape for the first time; later rounds repeat the same batch, so they show the cost
without first-shape overheads. Prints one line per step: seconds, loss, tokens fed to the model.

    python benchmarks/smollm2_step.py --repeats 2
    python benchmarks/smollm2_step.py --sizes 1 2 4 8 16   # cost model: fixed s + ms per position

With ``--sizes``, batches of that many pairs (rows 8 on, a new batch per size) go through the
standard and the packed (segments) layouts once each, and a least-squares line through the
(positions, seconds) points of each layout prints its fixed cost per step and its cost per
input position.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import torch

DATA = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "data"
    / "hh-rlhf-harmless-base-test-part1.jsonl.gz"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="*", help="pairs per batch for the cost-model sweep")
    args = parser.parse_args()

    from dataset_formats import encode_rows
    from reward_plugin.modeling import load_reward_model, model_tokenizer
    from reward_plugin.pairs import (
        PrefixSharedPairCollator,
        RewardDataCollatorWithPadding,
        attention_cost_tokens,
        packed_rewards,
    )
    from reward_plugin.scoring import ScoreReader

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model = load_reward_model("smollm2-135m-instruct")
    tok = model_tokenizer("smollm2-135m-instruct")
    print(f"load {time.perf_counter() - started:.1f} s", flush=True)
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        wanted = max(args.pairs, 8 + max(args.sizes or [0]))
        rows = [json.loads(line) for _, line in zip(range(wanted), f)]
    examples = encode_rows(rows, format="hh-rlhf", tokenizer=tok, max_length=512)[0].to_pylist()
    model.gradient_checkpointing_enable()
    model.train()
    reader = ScoreReader(model)
    standard = RewardDataCollatorWithPadding(pad_token_id=tok.pad_token_id)
    packed = PrefixSharedPairCollator(
        pad_token_id=tok.pad_token_id, pack=True, attention_cost_tokens=attention_cost_tokens(model)
    )

    def step(kind: str, batch: list | None = None) -> tuple[float, float, int]:
        batch = examples[: args.pairs] if batch is None else batch
        n = len(batch)
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            if kind == "standard":
                b = standard(batch)
                ids = torch.cat([b["input_ids_chosen"], b["input_ids_rejected"]])
                mask = torch.cat([b["attention_mask_chosen"], b["attention_mask_rejected"]])
                rewards = reader.rewards(model, input_ids=ids, attention_mask=mask)
                chosen, rejected, tokens = rewards[:n], rewards[n:], ids.numel()
            else:
                b = packed(batch)
                chosen, rejected = packed_rewards(reader, model, b, segments=kind == "packed, segments")
                tokens = b["packed_input_ids"].numel()
        loss = -torch.nn.functional.logsigmoid(chosen.float() - rejected.float()).mean()
        loss.backward()
        model.zero_grad()
        return time.perf_counter() - started, loss.item(), tokens

    if args.sizes:
        sweep(step, examples, args.sizes)
        return
    for round_ in range(args.repeats):
        for kind in ("standard", "packed, segments", "packed, mask"):
            seconds, loss, tokens = step(kind)
            print(
                f"round {round_}  {kind:17s} {seconds:6.1f} s  loss {loss:.4f}  tokens {tokens}", flush=True
            )


def sweep(step, examples: list, sizes: list[int]) -> None:
    """One step per layout and batch size; a line ``seconds = fixed + per_position * positions``."""
    import numpy as np

    step("packed, segments", examples[:2])  # first-use costs off the fit
    points: dict[str, list[tuple[int, float]]] = {"standard": [], "packed, segments": []}
    for size in sizes:
        for kind, found in points.items():
            seconds, _, tokens = step(kind, examples[8 : 8 + size])
            found.append((tokens, seconds))
            print(f"{size:3d} pairs  {kind:17s} {tokens:6d} positions {seconds:6.2f} s", flush=True)
    for kind, found in points.items():
        tokens, seconds = np.array(found, dtype=float).T
        slope, fixed = np.polyfit(tokens, seconds, 1)
        print(f"{kind:17s} fixed {fixed:.2f} s + {1000 * slope:.2f} ms per position")


if __name__ == "__main__":
    main()
