"""Training speed on RM-Bench: one forward per group against TRL and our pair layout on the expanded pairs.

RM-Bench has 3 chosen and 3 rejected responses per prompt, 9 preference pairs. TRL's
``RewardTrainer`` (1.16) trains the 9 expanded pairs as 18 padded sequences; reward_plugin's
``packed`` pair layout trains them as 9 prefix-shared blocks; a group (``convert --groups``) is
one block ``[prompt | 6 responses]`` per prompt with the all-pairs Bradley-Terry loss over the
same 9 pairs (equal per-pair losses: tests/test_groups_training.py). Every configuration trains one
epoch in its own subprocess from the same token ids (converted once, ``max_length`` 1024, so no
side drops or cuts anything), initial weights, seed, learning rate, bf16 and gradient
checkpointing; a batch holds ``--groups-per-batch`` prompts' worth of pairs on every side (G groups
or 9G pairs), so all take the same number of optimizer steps. Reported: pairs/s (pairs trained /
wall time of ``train()``), tokens processed (every input position, padding included), peak RSS.

Usage::

    python benchmarks/group_speed.py --prompts 16 --repeats 1

Model: the random-weight ~14M Llama of ``benchmarks/train_speed.py`` (hidden 384, 6 layers) with a
byte-level BPE tokenizer (8,000 tokens) trained on the RM-Bench texts.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "rm-bench" / "chat_filtered.json.gz"
sys.path.insert(0, str(ROOT / "benchmarks"))

#: name -> (library, dataset, pair_batching)
CONFIGS = {
    "TRL 1.16, expanded pairs": ("trl", "pairs", None),
    "ours packed, expanded pairs": ("ours", "pairs", "packed"),
    "ours groups (bradley_terry)": ("ours", "groups", "packed"),
}


def prepare(workdir: Path, prompts: int, max_length: int) -> None:
    """Tokenizer, initial model, the grouped table and its expanded pairs under ``workdir``."""
    import datasets
    import torch
    from train_speed import build_bpe_tokenizer
    from transformers import AutoModelForSequenceClassification, LlamaConfig

    from dataset_formats.conversion import encode_rows
    from dataset_formats.groups import expand_groups

    with gzip.open(DATA, "rt", encoding="utf-8") as fh:
        everything = json.load(fh)
    texts = [r["prompt"] for r in everything] + [t for r in everything for t in r["chosen"] + r["rejected"]]
    tokenizer = build_bpe_tokenizer(workdir / "model", texts, vocab_size=8000)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=384, intermediate_size=1280, num_hidden_layers=6,
        num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=2048, num_labels=1,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(workdir / "model")
    rows = everything[:prompts]
    groups, _ = encode_rows(rows, format="rm-bench", tokenizer=tokenizer, max_length=max_length, groups=True)
    pairs = expand_groups(groups)
    datasets.Dataset(groups).save_to_disk(str(workdir / "groups"))
    columns = {"chosen_ids": pairs["input_ids_chosen"], "rejected_ids": pairs["input_ids_rejected"]}
    datasets.Dataset.from_dict({k: v.to_pylist() for k, v in columns.items()}).save_to_disk(
        str(workdir / "pairs")
    )
    group_tokens = sum(len(g["prompt_ids"]) + sum(map(len, g["response_ids"])) for g in groups.to_pylist())
    pair_tokens = sum(len(x) for side in columns.values() for x in side.to_pylist())
    info = {
        "params": sum(p.numel() for p in model.parameters()),
        "prompts": groups.num_rows,
        "pairs": pairs.num_rows,
        "group_tokens": group_tokens,
        "pair_tokens": pair_tokens,
    }
    (workdir / "info.json").write_text(json.dumps(info))


class Counting:
    """Wraps a collator; counts pairs trained and input positions processed."""

    def __init__(self, collator):
        self.collator = collator
        self.pairs = self.processed = 0

    def __call__(self, examples):
        batch = self.collator(examples)
        if "pair_better" in batch:
            self.pairs += len(batch["pair_better"])
        elif "chosen_index" in batch:
            self.pairs += len(batch["chosen_index"])
        else:  # TRL: chosen rows, then rejected rows
            self.pairs += batch["input_ids"].shape[0] // 2
        ids = next(batch[k] for k in ("packed_input_ids", "group_input_ids", "input_ids") if k in batch)
        self.processed += ids.numel()
        return batch


def worker(workdir: Path, name: str, library: str, data: str, mode: str | None, args) -> dict:
    import datasets
    import torch
    from train_speed import speed_trainer, warm_up
    from transformers import TrainerCallback

    torch.set_num_threads(args.threads)
    dataset = datasets.load_from_disk(str(workdir / data))
    batch = args.groups_per_batch * (9 if data == "pairs" else 1)
    ours = {"pair_batching": mode, "save_final_model": False, "save_reward_stats": False}
    trainer = speed_trainer(workdir, name, library, dataset, batch=batch, max_length=args.max_length, **ours)
    warm_up(trainer)
    counter = Counting(trainer.data_collator)
    trainer.data_collator = counter
    times = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            times["start"] = time.perf_counter()

        def on_train_end(self, *a, **k):
            times["end"] = time.perf_counter()

    trainer.add_callback(Clock())
    trainer.train()
    seconds = times["end"] - times["start"]
    return {
        "name": name,
        "pairs": counter.pairs,
        "seconds": seconds,
        "pairs_per_s": counter.pairs / seconds,
        "processed": counter.processed,
        "steps": trainer.state.global_step,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=16, help="RM-Bench prompts (9 pairs each)")
    parser.add_argument(
        "--groups-per-batch", type=int, default=2, help="prompts per batch (9x as many pairs)"
    )
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="interleaved runs per configuration (median)")
    parser.add_argument("--only", nargs="*", help="configuration names to run (default: all)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        workdir, name, library, data, mode = json.loads(args.worker)
        print(json.dumps(worker(Path(workdir), name, library, data, mode, args)))
        return
    workdir = Path(tempfile.mkdtemp(prefix="group_speed_"))
    prepare(workdir, args.prompts, args.max_length)
    info = json.loads((workdir / "info.json").read_text())
    names = [n for n in CONFIGS if not args.only or n in args.only]
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for repeat in range(args.repeats):  # interleaved: a slow spell of the shared machine hits all alike
        for name in names:
            command = [sys.executable, __file__, "--worker", json.dumps([str(workdir), name, *CONFIGS[name]])]
            command += [
                "--groups-per-batch",
                str(args.groups_per_batch),
                "--max-length",
                str(args.max_length),
            ]
            command += ["--threads", str(args.threads)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.stderr.write(done.stderr[-3000:])
                raise SystemExit(f"{name} failed (exit {done.returncode})")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            runs[name].append(result)
            print(
                f"  {name:30s} run {repeat + 1}: {result['pairs_per_s']:7.2f} pairs/s",
                file=sys.stderr,
                flush=True,
            )
    results = []
    for name in names:
        ordered = sorted(runs[name], key=lambda r: r["pairs_per_s"])
        median = dict(ordered[len(ordered) // 2])
        median["runs_pairs_per_s"] = [r["pairs_per_s"] for r in runs[name]]
        results.append(median)
    base = {r["name"]: r["pairs_per_s"] for r in results}
    print(
        f"{info['params'] / 1e6:.1f}M Llama, {info['prompts']} RM-Bench prompts = {info['pairs']} pairs, "
        f"max_length {args.max_length}, {args.groups_per_batch} prompts per batch, bf16, gradient checkpointing; "
        f"tokens: {info['pair_tokens']:,} in the expanded pairs, {info['group_tokens']:,} in the groups "
        f"({info['pair_tokens'] / info['group_tokens']:.2f}x); median of {args.repeats} interleaved run(s)\n"
    )
    print(
        "| configuration | pairs/s (runs) | vs TRL | vs ours packed | tokens processed | pairs | steps | peak RSS (MB) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    trl_speed = base.get("TRL 1.16, expanded pairs")
    packed_speed = base.get("ours packed, expanded pairs")
    for r in results:
        runs_text = ", ".join(f"{x:.2f}" for x in r["runs_pairs_per_s"])
        vs_trl = f"{r['pairs_per_s'] / trl_speed:.2f}x" if trl_speed else "-"
        vs_packed = f"{r['pairs_per_s'] / packed_speed:.2f}x" if packed_speed else "-"
        print(
            f"| {r['name']} | {r['pairs_per_s']:.2f} ({runs_text}) | {vs_trl} | {vs_packed} | {r['processed']:,} | "
            f"{r['pairs']} | {r['steps']} | {r['peak_rss_mb']:.0f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"info": info, "results": results, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
