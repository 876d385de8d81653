"""Dispatched operators per training step (forward + backward), per pair-attention system and pairs per batch.

On a GPU every dispatched operator is (about) one kernel launch, so this count, which needs no GPU,
shows whether a system's launches grow with the pairs per batch. Systems:

- ``trl``: TRL 1.16's padded step (its ``DataCollatorForPreference``: chosen and rejected rows,
  padded; one forward; ``-logsigmoid(chosen - rejected)``);
- ``segments``: our packed layout with the per-pair segment loop;
- ``varlen``: our packed layout with the variable-length backend (the portable reference kernel
  here; it is one registered operator in the forward and one in the backward, as the CUDA
  kernels are).

Every operator that reaches the dispatcher is counted (a ``TorchDispatchMode``), collation
excluded; the batches are random pairs (a shared prompt of 8-40 tokens, tails of 1-24) on two
random-weight models: a 4-layer Llama and SmolLM2-135M's shape (30 layers, hidden 576, 9 heads / 3
KV heads, intermediate 1536, vocab 49152).

    python benchmarks/launch_count.py [--json FILE] [--models llama smollm2] [--pairs 4 8 16 32] [--systems ...]
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SYSTEMS = ("trl", "segments", "varlen")
MODELS = {
    "llama": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 1000,
    },
    "smollm2": {  # SmolLM2-135M's shape
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
        "rope_theta": 100000.0,
    },
}


class OpCounter(TorchDispatchMode):
    """Counts every operator that reaches the dispatcher."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def random_pairs(n: int, vocab: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)

    def ids(k: int) -> list[int]:
        return torch.randint(3, vocab, (k,), generator=g).tolist()

    pairs = []
    for _ in range(n):
        prompt = ids(int(torch.randint(8, 41, (1,), generator=g)))
        pairs.append(
            {
                "chosen_ids": prompt + ids(int(torch.randint(1, 25, (1,), generator=g))),
                "rejected_ids": prompt + ids(int(torch.randint(1, 25, (1,), generator=g))),
            }
        )
    return pairs


def build_model(name: str):
    from transformers import AutoModelForSequenceClassification, LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(**MODELS[name], num_labels=1, pad_token_id=0)
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa")
    return model.train()


def count_step(system: str, model, pairs: list[dict]) -> tuple[int, Counter]:
    """Operators of one forward + backward of ``pairs`` under ``system``."""
    from trl.trainer.reward_trainer import DataCollatorForPreference

    from reward_plugin.loss import pairwise_loss
    from reward_plugin.pairs import PrefixSharedPairCollator, packed_rewards
    from reward_plugin.scoring import ScoreReader

    model.zero_grad(set_to_none=True)
    if system == "trl":
        batch = DataCollatorForPreference(pad_token_id=0)(pairs)
        with OpCounter() as counter:
            logits = model(**batch, use_cache=False).logits
            chosen, rejected = torch.chunk(logits.squeeze(-1), chunks=2)
            loss = -torch.nn.functional.logsigmoid(chosen - rejected).mean()
            loss.backward()
        return sum(counter.ops.values()), counter.ops
    batch = PrefixSharedPairCollator(pad_token_id=0, pack=True, attention_cost_tokens=math.inf)(pairs)
    reader = ScoreReader(model)
    with OpCounter() as counter:
        chosen, rejected = packed_rewards(reader, model, batch, attention=system)
        pairwise_loss(chosen, rejected).backward()
    return sum(counter.ops.values()), counter.ops


def markdown(rows: list[dict]) -> str:
    """The rows as a table: one line per model and pairs per batch, the systems side by side."""
    lines = [
        "| model | pairs/batch | TRL 1.16 padded | segments | varlen | varlen / TRL |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in dict.fromkeys(r["model"] for r in rows):
        for n in sorted({r["pairs_per_batch"] for r in rows if r["model"] == name}):
            got = {
                r["system"]: r["ops_per_step"]
                for r in rows
                if r["model"] == name and r["pairs_per_batch"] == n
            }
            ratio = f"{got['varlen'] / got['trl']:.2f}x" if "varlen" in got and "trl" in got else ""
            cells = " | ".join(str(got.get(system, "")) for system in SYSTEMS)
            lines.append(f"| {name} | {n} | {cells} | {ratio} |")
        varlen = [r["ops_per_step"] for r in rows if r["model"] == name and r["system"] == "varlen"]
        if varlen:
            lines.append(
                f"| {name} | varlen max / min over the pairs per batch | | | {max(varlen) / min(varlen):.3f} | |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the rows as JSON to this file")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--pairs", nargs="+", type=int, default=[4, 8, 16, 32])
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for name in args.models:
        model = build_model(name)
        vocab = MODELS[name]["vocab_size"]
        count_step("varlen", model, random_pairs(2, vocab, seed=99))  # first-use registration off the count
        for pairs_per_batch in args.pairs:
            pairs = random_pairs(pairs_per_batch, vocab, seed=pairs_per_batch)
            for system in args.systems:
                ops, _ = count_step(system, model, pairs)
                rows.append(
                    {"model": name, "system": system, "pairs_per_batch": pairs_per_batch, "ops_per_step": ops}
                )
                print(f"{name} {system:8s} {pairs_per_batch:3d} pairs: {ops} ops", flush=True)
        del model

    print()
    print(markdown(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
