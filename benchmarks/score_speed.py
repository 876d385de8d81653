"""RewardScorer vs the plain padded scoring TRL's GRPOTrainer does with a reward model.

TRL scores a step's completions as right-padded batches of full texts (``prompt + completion``,
chat-templated for conversational data) through ``AutoModelForSequenceClassification``; with 2
prompts x 6 generations per step that is batches of 12 texts, each group's prompt encoded 6 times
and every row padded to the longest. The scorer runs each group as one block (prompt once) and
packs blocks without padding. Same model, dtype, texts and call pattern (12 texts per call, the
groups in order); completions per second, side by side, and the ceiling: padded tokens TRL-style /
tokens with each prompt once. The rewards of both sides are compared too.

Data: RM-Bench chat prompts with their 6 responses (3 chosen, 3 rejected), and hh-rlhf dialogues
(the conversation up to the last answer as the prompt, 6 answers: its own chosen and rejected and 4
final answers of other dialogues). Model: SmolLM2-135M-Instruct's shape and tokenizer with random
weights and fewer layers (``--layers``, default 4 of 30), which keeps a CPU run short; the layout
and the ratio do not depend on the depth.

    python benchmarks/score_speed.py                 # 16 prompts x 6 responses per data set
    python benchmarks/score_speed.py --layers 30     # the full depth (slow on CPU)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
#: The data: $REWARD_PLUGIN_TEST_DATA, else ../shared/data beside the checkout.
SHARED = Path(os.environ.get("REWARD_PLUGIN_TEST_DATA") or ROOT.parent / "shared" / "data")


def smollm2_tokenizer():
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from smollm2 import SHORT_NAME

    from reward_plugin.modeling import model_tokenizer

    return model_tokenizer(SHORT_NAME)


def smollm2_shaped(tokenizer, layers: int):
    """A random LlamaForSequenceClassification of SmolLM2-135M's shape with ``layers`` layers."""
    from transformers import AutoModelForSequenceClassification, LlamaConfig

    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=layers,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=8192,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa").eval()


def rm_bench_groups(n: int) -> list[tuple[list[dict], list[str]]]:
    rows = json.loads(gzip.decompress((SHARED / "rm-bench" / "chat_filtered.json.gz").read_bytes()))
    return [
        ([{"role": "user", "content": r["prompt"]}], list(r["chosen"]) + list(r["rejected"]))
        for r in rows[:n]
    ]


def hh_groups(n: int, tokenizer) -> list[tuple[list[dict], list[str]]]:
    """Multi-turn hh-rlhf dialogues (the longest of the first 400): prompt = all turns before the last answer."""
    import dataset_formats as df

    adapter = df.get_format("hh-rlhf")
    with gzip.open(SHARED / "hh-rlhf-harmless-base-test-part1.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for _, line in zip(range(400), f)]
    pairs = [adapter.to_pairs(r, adapter.make_options({}))[0] for r in rows]
    pairs = [p for p in pairs if isinstance(p.prompt, list) and len(p.prompt) >= 3]
    pairs.sort(key=lambda p: -sum(len(m["content"]) for m in p.prompt))
    pairs = pairs[:n]
    answers = [p.chosen[0]["content"] if isinstance(p.chosen, list) else p.chosen for p in pairs]
    groups = []
    for k, p in enumerate(pairs):
        own = [x[0]["content"] if isinstance(x, list) else x for x in (p.chosen, p.rejected)]
        others = [answers[(k + j) % len(answers)] for j in range(1, 5)]
        groups.append((p.prompt, own + others))
    return groups


def flatten(groups):
    prompts, completions = [], []
    for prompt, responses in groups:
        for r in responses:
            prompts.append(prompt)
            completions.append([{"role": "assistant", "content": r}])
    return prompts, completions


def trl_style(model, tokenizer, prompts, completions, batch: int) -> tuple[list[float], int]:
    """TRL GRPOTrainer's reward-model path: chat template, right padding, plain forward; (rewards, padded tokens)."""
    texts = [tokenizer.apply_chat_template(p + c, tokenize=False) for p, c in zip(prompts, completions)]
    rewards, padded = [], 0
    with torch.inference_mode():
        for start in range(0, len(texts), batch):
            inputs = tokenizer(
                texts[start : start + batch],
                return_tensors="pt",
                padding=True,
                padding_side="right",
                add_special_tokens=False,
            )
            padded += inputs["input_ids"].numel()
            rewards += model(**inputs).logits[:, 0].tolist()
    return rewards, padded


def needed_tokens(scorer, prompts, completions) -> int:
    """Tokens with each group's shared prefix counted once."""
    from reward_plugin.pairs.blocks import lay_out_block

    keys, ids = scorer.encoder.encode(prompts, completions)
    groups: dict[str, list[list[int]]] = {}
    for key, seq in zip(keys, ids):
        groups.setdefault(key, []).append(seq)
    return sum(len(lay_out_block(g).ids) for g in groups.values())


def timed_pair(first, second, repeats: int) -> tuple[float, object, float, object]:
    """Best wall time and output of two functions, run alternately (a busy machine slows both alike)."""
    best = [float("inf"), float("inf")]
    out: list[object] = [None, None]
    for _ in range(repeats):
        for k, fn in enumerate((first, second)):
            start = time.perf_counter()
            out[k] = fn()
            best[k] = min(best[k], time.perf_counter() - start)
    return best[0], out[0], best[1], out[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=12, help="texts per TRL batch and per scorer call")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from reward_plugin import RewardScorer

    tokenizer = smollm2_tokenizer()
    model = smollm2_shaped(tokenizer, args.layers)
    scorer = RewardScorer(model, tokenizer, normalize=False)
    print(
        f"model: SmolLM2-135M shape, {args.layers} layers, random weights, float32, CPU x{args.threads} threads"
    )
    rows = []
    for name, groups in (
        ("RM-Bench chat", rm_bench_groups(args.prompts)),
        ("hh-rlhf dialogues", hh_groups(args.prompts, tokenizer)),
    ):
        prompts, completions = flatten(groups)
        n = len(completions)

        def ours(prompts=prompts, completions=completions, n=n):
            out = []
            for s in range(0, n, args.batch):
                out += scorer(
                    prompts=prompts[s : s + args.batch], completions=completions[s : s + args.batch]
                )
            return out

        def trl(prompts=prompts, completions=completions):
            return trl_style(model, tokenizer, prompts, completions, args.batch)

        trl_time, (trl_rewards, padded), our_time, our_rewards = timed_pair(trl, ours, args.repeats)
        need = needed_tokens(scorer, prompts, completions)
        diff = max(abs(a - b) for a, b in zip(trl_rewards, our_rewards))
        speed = trl_time / our_time
        ceiling = padded / need
        rows.append(
            (
                name,
                len(groups),
                n,
                padded / n,
                need / n,
                n / trl_time,
                n / our_time,
                speed,
                ceiling,
                speed / ceiling,
                diff,
            )
        )
    print()
    print(
        "| data | prompts | completions | TRL tokens/completion | scorer tokens/completion | TRL completions/s | scorer completions/s | speed-up | ceiling (token ratio) | of ceiling | max reward diff |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.0f} | {r[4]:.0f} | {r[5]:.2f} | {r[6]:.2f} | {r[7]:.2f}x | {r[8]:.2f}x | {100 * r[9]:.0f}% | {r[10]:.1e} |"
        )


if __name__ == "__main__":
    main()
