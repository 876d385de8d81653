"""The ``formats``, ``convert`` and ``inspect`` commands (argument parsing and printing only)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import OptionError
from .on_error import DEFAULT_ON_ERROR, ON_ERROR_CHOICES


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``formats``, ``convert`` and ``inspect`` to a sub-command parser."""
    _add_formats(subparsers)
    _add_convert(subparsers)
    _add_inspect(subparsers)


def _add_formats(subparsers: argparse._SubParsersAction) -> None:
    formats = subparsers.add_parser(
        "formats",
        help="list the dataset formats (adapters)",
        description="List the registered dataset formats.",
    )
    formats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    formats.set_defaults(func=run_formats)


def _add_convert(subparsers: argparse._SubParsersAction) -> None:
    convert = subparsers.add_parser(
        "convert",
        help="convert preference data into a tokenized paired table",
        description=(
            "Convert preference data (jsonl/json/parquet/csv, .gz ok, or a datasets folder) into a table with "
            "input_ids_chosen, attention_mask_chosen, input_ids_rejected, attention_mask_rejected "
            "(+ margin, source_row). Remote code is never run unless --trust-remote-code is given."
        ),
    )
    _add_convert_io(convert)
    _add_convert_policy(convert)
    convert.add_argument("--no-progress", action="store_true", help="no progress bar")
    convert.set_defaults(func=run_convert)


def _add_convert_io(convert: argparse.ArgumentParser) -> None:
    """What is read and written: inputs, output, format, tokenizer, side files."""
    convert.add_argument("inputs", nargs="*", metavar="INPUT", help="input files or datasets folders")
    convert.add_argument(
        "-o", "--output", required=True, help="OUTPUT: .parquet, .arrow, or a folder (save_to_disk)"
    )
    convert.add_argument(
        "--format", default="auto", metavar="NAME|auto", help="dataset format (default: auto)"
    )
    convert.add_argument(
        "--tokenizer", required=True, metavar="PATH_OR_NAME", help="fast tokenizer folder or name"
    )
    convert.add_argument(
        "--chat-template", metavar="NAME|PATH", help="shipped template name, .jinja file, or 'tokenizer'"
    )
    convert.add_argument(
        "--rejects", metavar="FILE.jsonl", help="write rejected rows (file, row, field, reason)"
    )
    convert.add_argument("--stats-json", metavar="FILE", help="write the conversion stats as JSON")
    convert.add_argument(
        "--overwrite", action="store_true", help="replace existing output/rejects/stats files"
    )
    convert.add_argument(
        "--dataset-info",
        metavar="PATH",
        help="a LLaMA-Factory dataset_info.json, or a catalog a plugin reads (with --dataset)",
    )
    convert.add_argument("--dataset", metavar="NAME", help="the dataset entry of --dataset-info to convert")


def _add_convert_policy(convert: argparse.ArgumentParser) -> None:
    """How rows become pairs: length policy, bad rows, processes, adapter options, remote code."""
    convert.add_argument(
        "--max-length", type=int, metavar="N", help="longest sequence to keep (default: no limit)"
    )
    convert.add_argument(
        "--groups",
        action="store_true",
        help="write the grouped table: one row per prompt with its responses and pairs (docs/groups.md)",
    )
    convert.add_argument(
        "--truncation",
        choices=("left", "right", "drop"),
        default="left",
        help="left: cut the oldest prompt tokens, keep responses (default); right: cut the end; drop: reject",
    )
    convert.add_argument(
        "--on-error",
        choices=ON_ERROR_CHOICES,
        default=DEFAULT_ON_ERROR,
        help="raise: stop at the first bad row, write nothing (default); skip: reject bad rows and go on",
    )
    convert.add_argument(
        "--num-proc", type=int, default=1, metavar="N", help="worker processes (same output)"
    )
    from .ties import DEFAULT_TIES, TIES_CHOICES

    convert.add_argument(
        "--ties",
        choices=TIES_CHOICES,
        default=DEFAULT_TIES,
        help=(
            f"pairs the source marks as ties (equal scores, a tie label, strength 0): skip them, keep them "
            f"as preferences, or write them with a `tie` column for the tie-aware loss (default: {DEFAULT_TIES})"
        ),
    )
    convert.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the format's adapter (repeatable; see `formats --json`)",
    )
    convert.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow a tokenizer with custom Python code (off by default: remote code is never run otherwise)",
    )


def _add_inspect(subparsers: argparse._SubParsersAction) -> None:
    inspect = subparsers.add_parser(
        "inspect",
        help="summarize a converted table",
        description="Row count, token-length percentiles, shared-prefix lengths, margins, a decoded sample pair.",
    )
    inspect.add_argument(
        "output", metavar="OUTPUT", help="a converted .parquet/.arrow file or datasets folder"
    )
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.add_argument(
        "--tokenizer", metavar="PATH_OR_NAME", help="decode a sample pair with this tokenizer"
    )
    inspect.add_argument("--row", type=int, default=0, metavar="N", help="which pair to decode (default 0)")
    inspect.set_defaults(func=run_inspect)


# formats -----------------------------------------------------------------------------------------


def _origin(info: Any) -> str:
    return "built-in" if info.distribution == "built-in" else f"{info.plugin} ({info.distribution})"


def _options(adapter: Any) -> list[dict[str, Any]]:
    out = []
    for f in dataclasses.fields(adapter.Options):
        default = f.default if f.default is not dataclasses.MISSING else None
        out.append({"name": f.name, "type": str(f.type), "default": default})
    return out


def run_formats(args: argparse.Namespace) -> int:
    from .registry import list_formats

    infos = list_formats()
    if args.json:
        data = [
            {
                "name": i.name,
                "description": i.description,
                "origin": _origin(i),
                "plugin": i.plugin,
                "distribution": i.distribution,
                "produces_margin": i.adapter.produces_margin,
                "options": _options(i.adapter),
            }
            for i in infos
        ]
        print(json.dumps(data, indent=2, default=repr))
        return 0
    width = max([len(i.name) for i in infos] + [4])
    origin_width = max([len(_origin(i)) for i in infos] + [6])
    print(f"{'name':<{width}}  {'origin':<{origin_width}}  description")
    for i in infos:
        print(f"{i.name:<{width}}  {_origin(i):<{origin_width}}  {i.description}")
    return 0


# convert -----------------------------------------------------------------------------------------


def parse_options(items: list[str]) -> dict[str, str]:
    """``["k=v", ...]`` -> ``{"k": "v"}`` (the adapter coerces the types)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise OptionError(f"--option expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value
    return out


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Let SIGTERM unwind like Ctrl-C, so temporary output files are removed."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_convert(args: argparse.Namespace) -> int:
    from .conversion import convert

    options = parse_options(args.option)
    inputs = list(args.inputs)
    fmt = args.format
    if args.dataset_info or args.dataset:
        if not (args.dataset_info and args.dataset):
            raise OptionError("--dataset-info and --dataset go together: give both, or neither")
        if inputs:
            raise OptionError("with --dataset-info the input files come from dataset_info.json; drop INPUT")
        from .catalogs import resolve_dataset

        resolved = resolve_dataset(args.dataset_info, args.dataset)
        inputs = list(resolved.paths)
        if fmt == "auto":
            fmt = resolved.format
        options = {**resolved.options, **options}
    if not inputs:
        raise OptionError("no INPUT given; pass one or more input files (or --dataset-info and --dataset)")
    with _sigterm_as_interrupt():
        stats = convert(
            inputs,
            args.output,
            format=fmt,
            tokenizer=args.tokenizer,
            chat_template=args.chat_template,
            max_length=args.max_length,
            truncation=args.truncation,
            on_error=args.on_error,
            rejects=args.rejects,
            num_proc=args.num_proc,
            format_options=options,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            stats_json=args.stats_json,
            trust_remote_code=args.trust_remote_code,
            groups=args.groups,
            ties=args.ties,
        )
    print(stats.summary())
    print(f"wrote {args.output}" + (f"; rejected rows in {args.rejects}" if args.rejects else ""))
    if stats.rows_read and not stats.pairs_written:
        print(
            f"warning: no pairs were written: all {stats.rows_read} rows were rejected; see the reasons above",
            file=sys.stderr,
        )
    if stats.rows_rejected and not args.rejects:
        print("hint: pass --rejects FILE.jsonl to see why rows were rejected", file=sys.stderr)
    return 0


# inspect -----------------------------------------------------------------------------------------


def run_inspect(args: argparse.Namespace) -> int:
    from .inspect import format_report, inspect_output

    report = inspect_output(args.output, tokenizer=args.tokenizer, sample_row=args.row)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
