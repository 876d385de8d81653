"""Peak memory of reward training by model size and ``max_length``: one table, for docs/memory.md.

Every cell is its own subprocess (so its peak RSS is its own) that builds a random-weight Llama of
the given size, trains ``--steps`` optimizer steps of ``--pairs`` pairs through
``RewardTrainer`` (the default packed layout, AdamW, gradient checkpointing on, fp32 or
``--bf16``) and reports the process's peak resident memory, the memory of the weights alone, and
the weights' parameter count. The pairs are random token ids as long as ``max_length`` allows:
a prompt of half the length shared by both sides, then two different responses, so each
sequence has exactly ``max_length`` tokens (the worst case a length cap allows).

    python benchmarks/memory.py                          # the table in docs/memory.md
    python benchmarks/memory.py --sizes 14m --lengths 256 --steps 1

Memory on a GPU differs (no Python process overhead, CUDA context, kernels' workspaces), but grows
with the same two terms: weights and optimizer state (~16 bytes per parameter in fp32 with AdamW)
and activations (linear in ``max_length`` x pairs per step with gradient checkpointing).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

#: Llama shapes: (hidden, layers, heads, kv heads, MLP); 135m is SmolLM2-135M's shape (with this
#: script's 8,000-token vocabulary it has 110.8M parameters, SmolLM2's 49,152 tokens make 134.5M).
SIZES = {
    "14m": (384, 6, 6, 2, 1280),
    "60m": (512, 16, 8, 4, 1536),
    "135m": (576, 30, 9, 3, 1536),
}
VOCAB = 8000


def cell(size: str, length: int, pairs: int, steps: int, bf16: bool) -> dict:
    """Train one cell in this process and return its measurements."""
    import datasets
    import torch
    from transformers import AutoModelForSequenceClassification, LlamaConfig

    from reward_plugin import RewardConfig, RewardTrainer

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    hidden, layers, heads, kv, mlp = SIZES[size]
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv, intermediate_size=mlp, max_position_embeddings=max(2048, length),
        num_labels=1, pad_token_id=0, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model = AutoModelForSequenceClassification.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    weights_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    g = torch.Generator().manual_seed(1)
    prompt, tail = length // 2, length - length // 2
    rows = []
    for _ in range(pairs * steps):
        shared = torch.randint(3, VOCAB, (prompt,), generator=g).tolist()
        chosen = shared + torch.randint(3, VOCAB, (tail,), generator=g).tolist()
        rejected = shared + torch.randint(3, VOCAB, (tail,), generator=g).tolist()
        rows.append(
            {"input_ids_chosen": chosen, "attention_mask_chosen": [1] * length,
             "input_ids_rejected": rejected, "attention_mask_rejected": [1] * length}
        )  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        args = RewardConfig(
            output_dir=out, per_device_train_batch_size=pairs, max_steps=steps, learning_rate=1e-5,
            gradient_checkpointing=True, bf16=bf16, use_cpu=not torch.cuda.is_available(), report_to="none",
            save_strategy="no", logging_steps=steps, max_length=length, dataloader_num_workers=0,
            save_reward_stats=False, save_final_model=False,
        )  # fmt: skip
        trainer = RewardTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows))
        trainer.train()
        layout = trainer.pair_batching
    return {
        "size": size,
        "params_m": params / 1e6,
        "max_length": length,
        "pairs": pairs,
        "layout": layout,
        "weights_mb": weights_rss,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--lengths", nargs="*", type=int, default=[256, 512, 1024])
    parser.add_argument("--pairs", type=int, default=4, help="pairs per optimizer step")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--cell", nargs=2, metavar=("SIZE", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        print(json.dumps(cell(args.cell[0], int(args.cell[1]), args.pairs, args.steps, args.bf16)))
        return
    results = []
    for size in args.sizes:
        for length in args.lengths:
            command = [sys.executable, __file__, "--cell", size, str(length), "--pairs", str(args.pairs)]
            command += ["--steps", str(args.steps)] + (["--bf16"] if args.bf16 else [])
            env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                print(f"{size} {length}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    precision = "bf16 autocast" if args.bf16 else "fp32"
    print(f"\n{args.pairs} pairs per step, {args.steps} steps, {precision}, gradient checkpointing, AdamW\n")
    print("| model: Llama shape (parameters) | max_length | layout | weights (MB) | peak RSS (MB) |")
    print("| --- | ---: | --- | ---: | ---: |")
    for r in results:
        hidden, layers = SIZES[r["size"]][:2]
        print(
            f"| hidden {hidden}, {layers} layers ({r['params_m']:.1f}M) | {r['max_length']} | {r['layout']} | "
            f"{r['weights_mb']:.0f} | {r['peak_rss_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
