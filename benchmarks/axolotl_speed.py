"""Axolotl 0.19's own reward-model training against Axolotl with reward_plugin: pairs/s side by side.

Both runs are ``axolotl train cfg.yml --launcher python`` in Axolotl's virtual environment, on the
same model (SmolLM2-135M-Instruct saved as a plain folder, see ``benchmarks/smollm2.py``), the
same rows (hh-rlhf pairs as Axolotl ``bradley_terry`` rows, the first ones whose rendered chosen
and rejected fit ``sequence_len``), ``sequence_len``, batch, steps, precision and gradient
checkpointing. Axolotl's own run is its Bradley-Terry chat-template dataset type with packing off
and every pair padded to ``sequence_len`` (``pad_to_sequence_len: true``, as its example configs
and its reward-model default do). The other run is the same YAML plus the plugin lines printed at
the end. A small probe plugin (``benchmarks/axolotl_clock.py``), listed on both sides, times the
loop after the warm-up step and counts the batches, pairs, input positions and real tokens that
reach the model. Both sides train in fp32: the plugin turns a CPU run's ``bf16`` into fp32
(``reward_plugin.hosts.axolotl_fit``), so ``bf16: true`` would compare different precisions::

    nice -n 5 python benchmarks/axolotl_speed.py            # SmolLM2, 1 warm-up + 2 timed steps

``--model tiny`` runs the same on a random 2-layer Llama with SmolLM2's tokenizer (a smoke test of
the script and the probe, a few minutes; its pairs/s say nothing about SmolLM2).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
DATA = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test-part1.jsonl.gz"
ASSISTANT = "\n\nAssistant:"
#: The system message of every row (SmolLM2's default one; see :func:`bt_rows` for why there is one).
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
#: The one line that moves an Axolotl reward-model config (`reward_model: true`) onto reward_plugin.
PLUGIN_LINES = {"plugins": ["reward_plugin.hosts.axolotl.RewardPlugin"]}


def axolotl_command() -> Path:
    python = os.environ.get("REWARD_PLUGIN_AXOLOTL_PYTHON")
    command = Path(python).parent / "axolotl" if python else ROOT / ".venv-axolotl" / "bin" / "axolotl"
    if not command.is_file():
        raise SystemExit(
            "Axolotl is not installed: run .ci/install-axolotl.sh or set REWARD_PLUGIN_AXOLOTL_PYTHON"
        )
    return command


def render(tokenizer, row: dict, side: str) -> list[int]:
    """The token ids of one side of a row: ``[system, user: input, assistant: side]`` in the chat template."""
    messages = [
        {"role": "system", "content": row["system"]},
        {"role": "user", "content": row["input"]},
        {"role": "assistant", "content": row[side]},
    ]
    return tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]


def bt_rows(tokenizer, count: int, sequence_len: int) -> list[dict]:
    """hh-rlhf rows as Axolotl ``bradley_terry`` rows (``system``, ``input``, ``chosen``, ``rejected``) that fit.

    The dialogue before the last assistant turn is the ``input`` (one user message), the last
    responses are ``chosen``/``rejected``; a row is kept when both rendered conversations (the
    tokenizer's chat template, as Axolotl renders them) have at most ``sequence_len`` tokens. Every
    row has the same non-empty ``system`` message, SmolLM2's default one, so each conversation is
    what SmolLM2 sees without a system message of its own. (An empty ``system`` would now give both
    runs the same tokens too: Axolotl 0.19 and the plugin's ``axolotl-bt`` reader both render it as
    an empty system turn, tests/test_axolotl_bt_fidelity.py; the reader used to leave it out.)
    """
    rows = []
    with gzip.open(DATA, "rt", encoding="utf-8") as fh:
        for line in fh:
            raw = json.loads(line)
            cut = raw["chosen"].rfind(ASSISTANT)
            prompt = raw["chosen"][:cut]
            if not raw["rejected"].startswith(prompt + ASSISTANT):
                continue
            row = {
                "system": SYSTEM,
                "input": prompt.strip().removeprefix("Human:").strip(),
                "chosen": raw["chosen"][cut + len(ASSISTANT) :].strip(),
                "rejected": raw["rejected"][cut + len(ASSISTANT) :].strip(),
            }
            if not (row["input"] and row["chosen"] and row["rejected"]):
                continue
            if max(len(render(tokenizer, row, side)) for side in ("chosen", "rejected")) <= sequence_len:
                rows.append(row)
            if len(rows) == count:
                return rows
    raise SystemExit(f"only {len(rows)} hh-rlhf rows fit sequence_len {sequence_len}")


def expected_tokens(tokenizer, rows: list[dict]) -> dict[str, int]:
    """Real tokens of all rows, counted here from the rendered ids: both sides in full (Axolotl's
    own run), and with the prompt tokens the two sides share counted once (the plugin's layout)."""
    full = shared = 0
    for row in rows:
        chosen, rejected = render(tokenizer, row, "chosen"), render(tokenizer, row, "rejected")
        common = next(
            (i for i, (c, r) in enumerate(zip(chosen, rejected)) if c != r), min(len(chosen), len(rejected))
        )
        full += len(chosen) + len(rejected)
        shared += len(chosen) + len(rejected) - common
    return {"full": full, "shared": shared}


def base_config(model_dir: Path, data: Path, workdir: Path, args) -> dict:
    """Axolotl's own reward-model run: Bradley-Terry chat-template rows, padded to ``sequence_len``."""
    return {
        "base_model": str(model_dir),
        "reward_model": True,
        "chat_template": "tokenizer_default",
        "datasets": [{"path": str(data), "type": "bradley_terry.chat_template"}],
        "val_set_size": 0,
        "dataset_prepared_path": str(workdir / "prepared"),
        "sequence_len": args.sequence_len,
        "sample_packing": False,
        "pad_to_sequence_len": True,
        "micro_batch_size": args.batch,
        "gradient_accumulation_steps": 1,
        "num_epochs": 1,
        "max_steps": args.warmup_steps + args.steps,
        "learning_rate": 1.0e-5,
        "optimizer": "adamw_torch",
        "lr_scheduler": "constant",
        "gradient_checkpointing": True,
        "bf16": False,  # fp32: the plugin trains a CPU run asking for bf16 in fp32 (axolotl_fit)
        "fp16": False,
        "logging_steps": 1,
        "seed": 0,
        "output_dir": str(workdir / "out"),
    }


def save_tiny_folder(directory: Path) -> None:
    """A random 2-layer Llama reward model (seeded) with SmolLM2's tokenizer and chat template."""
    import torch
    from smollm2 import GGUF_FILE, gguf_folder
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, LlamaConfig

    tokenizer = AutoTokenizer.from_pretrained(gguf_folder(), gguf_file=GGUF_FILE)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config, dtype=torch.float32).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def run(name: str, config: dict, workdir: Path, args) -> dict:
    """One ``axolotl train`` run; the probe's numbers plus the command's wall time."""
    tag = "plugin" if "reward_plugin" in name else "own"
    path, clock = workdir / f"{tag}.yml", workdir / f"{tag}.clock.json"
    clock.unlink(missing_ok=True)
    config = {**config, "output_dir": str(workdir / f"out-{tag}")}
    config["plugins"] = [*config.get("plugins", []), "axolotl_clock.ClockPlugin"]
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    env = {
        **os.environ,
        "AXOLOTL_DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "WANDB_DISABLED": "true",
        "TOKENIZERS_PARALLELISM": "false",
        "AXOLOTL_CLOCK_JSON": str(clock),
        "AXOLOTL_CLOCK_WARMUP": str(args.warmup_steps),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
    }
    log = workdir / f"{tag}.log"
    started = time.perf_counter()
    try:
        with log.open("w", encoding="utf-8") as out:
            done = subprocess.run(
                [str(axolotl_command()), "train", str(path), "--launcher", "python"],
                cwd=workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=args.timeout,
                check=False,
            )
    except subprocess.TimeoutExpired:
        raise SystemExit(
            f"{name}: axolotl train ran past --timeout {args.timeout} s; log in {log} (a loaded machine?)"
        ) from None
    wall = time.perf_counter() - started
    if done.returncode != 0 or not clock.is_file():
        sys.stderr.write(log.read_text(encoding="utf-8")[-4000:])
        raise SystemExit(f"{name}: axolotl train failed (exit {done.returncode}); log in {log}")
    result = json.loads(clock.read_text())
    expected = args.steps * args.batch
    if result["batches"] != args.steps or result["pairs"] != expected or not result["positions"]:
        raise SystemExit(
            f"{name}: the probe counted {result['batches']} batches, {result['pairs']} pairs and "
            f"{result['positions']} input positions in {args.steps} timed steps (expected {args.steps} "
            f"batches of {args.batch} pairs); details in {clock}"
        )
    result.update(name=name, wall_seconds=wall, pairs_per_s=result["pairs"] / result["loop_seconds"])
    return result


def token_check(name: str, result: dict, expected: dict[str, int]) -> str:
    """One line comparing the real tokens the probe saw in all steps (warm-up included: together one
    pass over the rows) with the count made here from the rendered rows."""
    seen = sum(call["real_tokens"] for call in result["per_call"])
    want = expected["shared" if "reward_plugin" in name else "full"]
    what = "shared prompts once" if "reward_plugin" in name else "chosen + rejected in full"
    verdict = "equal" if seen == want else "DIFFERENT"
    return f"{name}: {seen} real tokens in all steps, {want} rendered ({what}): {verdict}"


def print_table(results: dict[str, list[dict]], rows: int, expected: dict[str, int], args) -> None:
    """The markdown table of the median run of each side, and the config change."""
    model = "SmolLM2-135M-Instruct" if args.model == "smollm2" else "tiny random 2-layer Llama (smoke test)"
    print(
        f"{model}, {rows} hh-rlhf pairs as bradley_terry rows, sequence_len {args.sequence_len}, "
        f"micro_batch_size {args.batch}, {args.warmup_steps} warm-up + {args.steps} timed steps, fp32, "
        f"gradient checkpointing; median of {args.repeats} interleaved run(s) per side\n"
    )
    print(
        "| run | pairs/s (loop) | speed-up | input positions per pair | real tokens per pair "
        "| peak RSS (MB) | warm-up step s | `axolotl train` wall s |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    medians = {}
    for name, runs in results.items():
        ordered = sorted(runs, key=lambda r: r["pairs_per_s"])
        medians[name] = ordered[len(ordered) // 2]
    base_speed = next(iter(medians.values()))["pairs_per_s"]
    for name, r in medians.items():
        rss = max(x["peak_rss_mb"] for x in results[name])
        print(
            f"| {name} | {r['pairs_per_s']:.3f} | {r['pairs_per_s'] / base_speed:.2f}x | "
            f"{r['positions'] / r['pairs']:.0f} | {r['real_tokens'] / r['pairs']:.0f} | {rss:.0f} | "
            f"{r['warmup_seconds']:.1f} | {r['wall_seconds']:.0f} |"
        )
    print(
        "\nCounted by the probe over the timed steps of the median run: "
        + "; ".join(
            f"{name}: {r['batches']} batches, {r['forwards']} forwards, {r['pairs']} pairs, "
            f"{r['positions']} input positions, {r['real_tokens']} real tokens, weights {r['model_dtype']}"
            for name, r in medians.items()
        )
    )
    print("\n" + "; ".join(token_check(name, r, expected) for name, r in medians.items()))
    print("\nThe config change (added to Axolotl's own reward-model YAML):\n")
    print(yaml.safe_dump(PLUGIN_LINES, sort_keys=False).strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2", help="tiny: smoke test")
    parser.add_argument("--steps", type=int, default=2, help="timed optimizer steps")
    parser.add_argument("--warmup-steps", type=int, default=1, help="untimed steps first")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--sequence-len", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each side, interleaved")
    parser.add_argument(
        "--timeout", type=float, default=1200, help="seconds one `axolotl train` run may take (default 1200)"
    )
    parser.add_argument(
        "--sides",
        nargs="+",
        choices=["axolotl", "plugin"],
        default=["axolotl", "plugin"],
        help="runs to make",
    )
    parser.add_argument(
        "--keep", type=Path, help="work in this folder and keep it (default: a temporary one)"
    )
    args = parser.parse_args()

    from smollm2 import save_reward_folder
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        model_dir = workdir / args.model
        if not (model_dir / "config.json").is_file():  # a kept folder (--keep) is reused
            (save_tiny_folder if args.model == "tiny" else save_reward_folder)(model_dir)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        rows = bt_rows(tokenizer, (args.warmup_steps + args.steps) * args.batch, args.sequence_len)
        expected = expected_tokens(tokenizer, rows)
        data = workdir / "bt.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        base = base_config(model_dir, data, workdir, args)
        sides = {
            "Axolotl 0.19 (its own reward trainer)": base,
            "Axolotl + reward_plugin": {**base, **PLUGIN_LINES},
        }
        sides = {
            name: cfg for (name, cfg), key in zip(sides.items(), ("axolotl", "plugin")) if key in args.sides
        }
        results: dict[str, list[dict]] = {name: [] for name in sides}
        for repeat in range(args.repeats):
            for name, config in sides.items():
                result = run(name, config, workdir, args)
                results[name].append(result)
                print(
                    f"  {name}, run {repeat + 1}: {result['pairs_per_s']:.3f} pairs/s "
                    f"(wall {result['wall_seconds']:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    print_table(results, len(rows), expected, args)


if __name__ == "__main__":
    main()
