"""One prepared GPU check of the pair-attention backends: exactness on the GPU, and training speed against TRL 1.16.

Part 1: every backend available on the machine (segments, mask, varlen with the reference kernel,
PyTorch's ``varlen_attn``, flash-attn if installed, flex attention) against the dense-mask
reference, on one packed batch of pairs (grouped queries, a sliding window), in float32 and bf16
(``varlen_attn`` and flash-attn in bf16 only: they take no float32):
outputs and gradients of q, k, v (largest absolute difference). Part 2: the training loop
(forward, backward, AdamW step; bf16 weights; random weights of SmolLM2-135M's and Qwen2-1.5B's
shapes) on the bundled hh-rlhf rows at ``max_length`` 1024: pairs per second and peak GPU memory of
TRL 1.16's padded step against ours (packed + varlen, packed + mask, packed + segments at 8 pairs),
at 8 and 32 pairs per batch. Prints a markdown table and writes a JSON.

It runs on the GPU machine's own stack (torch 2.11 with CUDA, transformers 5.17, no network): the
project is found through this file's location (or PYTHONPATH), and the pure-Python wheels below,
which that stack lacks, are carried in ``wheels/`` and installed with ``--no-deps``. On this
machine, once:

    pip download --no-deps --only-binary=:all: --python-version 3.11 -d wheels \\
        trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 fsspec==2026.9.0 pyarrow==26.0.1 xxhash==4.1.0
    python benchmarks/gpu_check.py --prepare          # tokenizes the bundled rows (SmolLM2 tokenizer)

(``pyarrow`` and ``xxhash`` are binary wheels; carry them only where the GPU stack lacks them.)
Then, on the GPU machine (carry ``wheels`` and ``build/gpu_check``):

    pip install --no-deps wheels/*.whl && python benchmarks/gpu_check.py --json $OUT/gpu_check.json

    python benchmarks/gpu_check.py --dry-run          # CPU: tiny model, reference kernel, < 1 min
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

#: The wheels the GPU stack lacks (``pip download`` line in the docstring).
WHEELS = ("trl==1.16.0", "datasets==5.2.0", "dill==0.4.1", "multiprocess==0.70.19", "fsspec==2026.9.0")
DATA = ROOT / "reward_plugin" / "sample_data" / "hh_rlhf_sample.jsonl.gz"
PREPARED = ROOT / "build" / "gpu_check" / "pairs.json.gz"
SHAPES = {
    "SmolLM2-135M": {
        "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
        "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True, "rope_theta": 100000.0,
        "model_type": "llama",
    },
    "Qwen2-1.5B": {
        "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
        "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True, "rope_theta": 1000000.0,
        "model_type": "qwen2",
    },
    "tiny": {
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 259, "model_type": "llama",
    },
}  # fmt: skip


# ------------------------------------------------------------------------------------ the data


def prepare(max_length: int) -> None:
    """Tokenize the bundled rows with SmolLM2's tokenizer (left truncation) into :data:`PREPARED`."""
    from reward_plugin.modeling import model_tokenizer

    tok = model_tokenizer("smollm2-135m-instruct")
    pairs = []
    for row in read_rows():
        ids = [tok(row[side])["input_ids"][-max_length:] for side in ("chosen", "rejected")]
        pairs.append({"chosen_ids": ids[0], "rejected_ids": ids[1]})
    PREPARED.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(PREPARED, "wt", encoding="utf-8") as fh:
        json.dump(pairs, fh)
    print(f"{len(pairs)} pairs -> {PREPARED}")


def read_rows() -> list[dict]:
    with gzip.open(DATA, "rt", encoding="utf-8") as fh:
        return [r for r in map(json.loads, fh) if r["chosen"].strip() and r["rejected"].strip()]


def load_pairs(max_length: int, byte_tokens: bool) -> list[dict]:
    """The bundled pairs as token ids: SmolLM2's (prepared) or, for the dry run, UTF-8 bytes."""
    if not byte_tokens:
        if not PREPARED.exists():
            raise SystemExit(f"{PREPARED} is missing: run `python benchmarks/gpu_check.py --prepare` first")
        with gzip.open(PREPARED, "rt", encoding="utf-8") as fh:
            return json.load(fh)
    return [
        {side: [b + 3 for b in row[key].encode()][-max_length:] for side, key in (("chosen_ids", "chosen"), ("rejected_ids", "rejected"))}
        for row in read_rows()
    ]  # fmt: skip


# ------------------------------------------------------------------------ part 1: exactness


def available_kernels(device: torch.device) -> list[str]:
    import importlib.util

    from reward_plugin.pairs.backends import flex_available, torch_varlen_available

    kernels = ["reference"]
    if device.type == "cuda" and torch_varlen_available():
        kernels.append("torch")
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        kernels.append("flash_attn_2")
    if flex_available():
        kernels.append("flex")
    return kernels


def check_backends(pairs: list[dict], device: torch.device, dtypes: list[torch.dtype]) -> list[dict]:
    """Largest |difference| of each backend's outputs and q/k/v gradients from the dense mask."""
    import torch.nn.functional as F

    from reward_plugin.pairs.attention import segment_attention, spans_from_batch
    from reward_plugin.pairs.collators import PrefixSharedPairCollator
    from reward_plugin.pairs.masks import allowed_pairs
    from reward_plugin.pairs.varlen import HALF_PRECISION_KERNELS, varlen_pair_attention, varlen_plan

    batch = PrefixSharedPairCollator(pad_token_id=0, pack=True, max_length=256)(pairs[:12])
    batch = {k: v.to(device) for k, v in batch.items()}
    rows, length = batch["packed_input_ids"].shape
    spans = spans_from_batch(batch)
    real = (batch["packed_segments"] >= 0)[:, :, None, None]
    results = []
    for dtype in dtypes:
        g = torch.Generator().manual_seed(0)
        base = [torch.randn(rows, h, length, 64, generator=g) for h in (9, 3, 3)]
        for window in (None, 64):
            leaves = [t.to(device, dtype).requires_grad_() for t in base]
            q, k, v = leaves
            mask = allowed_pairs(batch, window)
            want = (
                F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True).transpose(1, 2)
                * real
            )
            weights = torch.randn(want.shape, generator=g).to(device, dtype)
            want_grads = torch.autograd.grad((want * weights).float().sum(), leaves)
            candidates = {
                "segments": lambda q, k, v, w=window: segment_attention(q, k, v, spans, sliding_window=w)
            }
            for kernel in available_kernels(device):
                if kernel in HALF_PRECISION_KERNELS and dtype == torch.float32:
                    continue  # fp16/bf16 kernels: float32 would run the reference kernel
                plan = varlen_plan(spans, rows, length, device, kernel)
                candidates[f"varlen ({kernel})"] = lambda q, k, v, plan=plan, w=window: varlen_pair_attention(
                    q, k, v, plan, sliding_window=w
                )
            for name, run in candidates.items():
                backward = not (name == "varlen (flex)" and device.type == "cpu")  # no flex backward on CPU
                try:
                    got = run(q, k, v) * real if backward else run(*(t.detach() for t in leaves)) * real
                    error = float((got.detach().float() - want.detach().float()).abs().max())
                    grads = torch.autograd.grad((got * weights).float().sum(), leaves) if backward else None
                    grad_error = (
                        max(float((a.float() - b.float()).abs().max()) for a, b in zip(grads, want_grads))
                        if grads
                        else None
                    )
                    results.append({"backend": name, "dtype": str(dtype).removeprefix("torch."), "window": window,
                                    "max_abs_error": error, "max_abs_grad_error": grad_error})  # fmt: skip
                except Exception as exc:  # noqa: BLE001 - a failing backend is reported, the check goes on
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    results.append({"backend": name, "dtype": str(dtype).removeprefix("torch."), "window": window,
                                    "error": f"{type(exc).__name__}: {first}"[:200]})  # fmt: skip
    return results


# ----------------------------------------------------------------------- part 2: training speed


def build_model(shape: str, device: torch.device, dtype: torch.dtype):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    options = dict(SHAPES[shape])
    config = AutoConfig.for_model(options.pop("model_type"), **options, num_labels=1, pad_token_id=0)
    torch.manual_seed(0)
    with device:  # initialized where it runs (a 1.5B model initializes slowly on the CPU)
        model = AutoModelForSequenceClassification.from_config(
            config, attn_implementation="sdpa", dtype=dtype
        )
    return model.train()


def train_speed(
    model, system: str, pairs: list[dict], per_batch: int, steps: int, device: torch.device
) -> dict:
    """Pairs per second and peak memory of ``steps`` timed steps (after one warm-up step)."""
    from trl.trainer.reward_trainer import DataCollatorForPreference

    from reward_plugin.loss import pairwise_loss
    from reward_plugin.pairs import PrefixSharedPairCollator, attention_cost_tokens, packed_rewards
    from reward_plugin.scoring import ScoreReader

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    reader = ScoreReader(model)
    if system == "trl":
        collate = DataCollatorForPreference(pad_token_id=0)
    else:
        cost = attention_cost_tokens(model) if system == "mask" else math.inf
        collate = PrefixSharedPairCollator(pad_token_id=0, pack=True, attention_cost_tokens=cost)

    def step(batch_pairs: list[dict]) -> float:
        batch = {k: v.to(device) for k, v in collate(batch_pairs).items()}
        if system == "trl":  # TRL 1.16 RewardTrainer.compute_loss
            logits = model(**batch, use_cache=False).logits
            chosen, rejected = torch.chunk(logits.squeeze(-1), chunks=2)
            loss = -torch.nn.functional.logsigmoid(chosen - rejected).mean()
        else:
            loss = pairwise_loss(*packed_rewards(reader, model, batch, attention=system))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    batches = [pairs[i * per_batch : (i + 1) * per_batch] for i in range(steps + 1)]
    step(batches[0])
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for batch_pairs in batches[1:]:
        step(batch_pairs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return {"pairs_per_s": steps * per_batch / seconds, "peak_gib": peak, "steps": steps}


def measure(shapes, systems, sizes, pairs, steps, device, dtype) -> list[dict]:
    """One model per shape (random weights), trained on by every system in turn with a fresh optimizer."""
    import gc

    rows = []
    for shape in shapes:
        model = build_model(shape, device, dtype)
        for per_batch in sizes:
            for system in systems:
                if system == "segments" and per_batch > 8 and device.type == "cuda":
                    continue  # launches grow with the pairs: measured at 8 only
                try:
                    found = train_speed(model, system, pairs, per_batch, steps, device)
                except torch.OutOfMemoryError:
                    found = {"error": "out of GPU memory"}
                model.zero_grad(set_to_none=True)
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                rows.append({"shape": shape, "system": system, "pairs_per_batch": per_batch, **found})
                print(json.dumps(rows[-1]), flush=True)
        del model
        gc.collect()
    return rows


def table(checks: list[dict], speed: list[dict]) -> str:
    lines = [
        "| backend | dtype | window | max abs error | max abs grad error |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for c in checks:
        if "error" in c:
            lines.append(f"| {c['backend']} | {c['dtype']} | {c['window']} | {c['error']} | |")
            continue
        grad = "n/a" if c["max_abs_grad_error"] is None else f"{c['max_abs_grad_error']:.2e}"
        lines.append(f"| {c['backend']} | {c['dtype']} | {c['window']} | {c['max_abs_error']:.2e} | {grad} |")
    lines += ["", "| shape | pairs/batch | system | pairs/s | vs TRL | peak GiB | vs TRL |", "| --- | ---: | --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in speed:
        trl = next((t for t in speed if t["system"] == "trl" and t["shape"] == r["shape"]
                    and t["pairs_per_batch"] == r["pairs_per_batch"] and "error" not in t), None)  # fmt: skip
        if "error" in r:
            lines.append(f"| {r['shape']} | {r['pairs_per_batch']} | {r['system']} | {r['error']} | | | |")
            continue
        speed_ratio = f"{r['pairs_per_s'] / trl['pairs_per_s']:.2f}x" if trl else ""
        peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "n/a"
        mem_ratio = (
            f"{r['peak_gib'] / trl['peak_gib']:.2f}x" if trl and r["peak_gib"] and trl["peak_gib"] else ""
        )
        lines.append(
            f"| {r['shape']} | {r['pairs_per_batch']} | {r['system']} | {r['pairs_per_s']:.1f} | {speed_ratio} | "
            f"{peak} | {mem_ratio} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dry-run", action="store_true", help="CPU: tiny model, reference kernel, byte tokens"
    )
    parser.add_argument(
        "--prepare", action="store_true", help="tokenize the bundled rows here (SmolLM2 tokenizer)"
    )
    parser.add_argument("--json", default="gpu_check.json", help="where the JSON goes")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument(
        "--steps", type=int, default=6, help="timed steps per measurement (one warm-up before)"
    )
    args = parser.parse_args()
    if args.prepare:
        prepare(args.max_length)
        return
    started = time.perf_counter()
    if args.dry_run:
        torch.set_num_threads(1)  # a tiny model: more threads only wait on each other
        device, dtype, shapes, sizes, steps = torch.device("cpu"), torch.float32, ["tiny"], [4], 1
        systems = ["trl", "varlen", "segments"]
        pairs = load_pairs(128, byte_tokens=True)
        dtypes = [torch.float32]
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run with --dry-run on a CPU")
        torch.backends.cuda.matmul.allow_tf32 = False  # exactness in float32
        device, dtype, shapes, sizes, steps = torch.device("cuda"), torch.bfloat16, ["SmolLM2-135M", "Qwen2-1.5B"], [8, 32], args.steps  # fmt: skip
        systems = ["trl", "varlen", "mask", "segments"]
        pairs = load_pairs(args.max_length, byte_tokens=False)
        dtypes = [torch.float32, torch.bfloat16]
    print(f"torch {torch.__version__}, device {device}, {len(pairs)} pairs", flush=True)
    checks = check_backends(pairs, device, dtypes)
    speed = measure(shapes, systems, sizes, pairs, steps, device, dtype)
    report = table(checks, speed)
    print(report)
    Path(args.json).write_text(
        json.dumps(
            {"torch": torch.__version__, "device": str(device), "checks": checks, "speed": speed,
             "seconds": time.perf_counter() - started},
            indent=1,
        )
    )  # fmt: skip
    print(f"wrote {args.json} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
