"""Summaries of a converted paired table: lengths, shared prefixes, margins and a decoded sample."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .errors import InputFileError
from .groups import is_group_table
from .prefix import shared_prefix_lengths
from .schema import MARGIN_COLUMN, PAIR_COLUMNS, SOURCE_ROW_COLUMN
from .tables import open_table
from .writing import METADATA_KEY

PERCENTILES = (50, 90, 95, 99)


def _open_batches(path: Path) -> tuple[str, pa.Schema, Iterator[pa.RecordBatch]]:
    """The kind, schema and record batches of a converted table (:mod:`.tables`)."""
    table = open_table(path)
    return table.kind, table.schema, table.iter_batches(4096 if table.kind == "parquet" else None)


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    out: dict[str, float] = {"min": float(values.min())}
    for p in PERCENTILES:
        # Nearest-rank percentile: an actual value of the data (a token count stays an integer).
        out[f"p{p}"] = float(np.percentile(values, p, method="inverted_cdf"))
    out["max"] = float(values.max())
    out["mean"] = float(values.mean())
    return out


def inspect_output(path: str | os.PathLike, tokenizer: Any = None, sample_row: int = 0) -> dict[str, Any]:
    """Statistics of a converted table.

    Args:
        path: a ``.parquet`` / ``.arrow`` file or ``datasets.save_to_disk`` folder with the four columns.
        tokenizer: a tokenizer (or path) to decode a sample pair with; None: no sample.
        sample_row: which row to decode.

    Returns:
        A JSON-ready dict: ``rows``, ``columns``, ``conversion`` (settings stored by ``convert``),
        ``tokens`` (chosen/rejected length percentiles), ``shared_prefix`` (length percentiles and
        the fraction of all tokens that are shared), ``margin`` (stats or None), ``problems``
        (mask/ids mismatches) and ``sample`` (decoded texts, when a tokenizer is given).

    Raises:
        InputFileError: unreadable, or without the four pair columns.
    """
    path = Path(path)
    kind, schema, batches = _open_batches(path)
    if is_group_table(schema.names):
        return _group_report(path, kind, schema, batches, tokenizer, sample_row)
    missing = [c for c in PAIR_COLUMNS if c not in schema.names]
    if missing:
        raise InputFileError(
            str(path),
            f"has no column {missing[0]!r} (columns: {', '.join(schema.names)}); is it a converted table?",
        )
    lengths: dict[str, list[np.ndarray]] = {"chosen": [], "rejected": []}
    shared: list[np.ndarray] = []
    margins: list[np.ndarray] = []
    problems: list[str] = []
    sample: dict[str, Any] | None = None
    seen = 0
    for batch in batches:
        columns = {name: batch.column(name) for name in batch.schema.names}
        for side in ("chosen", "rejected"):
            ids, mask = columns[f"input_ids_{side}"], columns[f"attention_mask_{side}"]
            n_ids = np.diff(ids.offsets.to_numpy())
            if not np.array_equal(n_ids, np.diff(mask.offsets.to_numpy())):
                bad = int(np.flatnonzero(n_ids != np.diff(mask.offsets.to_numpy()))[0]) + seen
                problems.append(f"row {bad}: input_ids_{side} and attention_mask_{side} differ in length")
            lengths[side].append(n_ids)
        shared.append(shared_prefix_lengths(columns["input_ids_chosen"], columns["input_ids_rejected"]))
        if MARGIN_COLUMN in columns:
            margins.append(columns[MARGIN_COLUMN].to_numpy(zero_copy_only=False).astype(np.float64))
        if tokenizer is not None and sample is None and seen <= sample_row < seen + batch.num_rows:
            sample = _decode_sample(tokenizer, batch.slice(sample_row - seen, 1).to_pylist()[0], sample_row)
        seen += batch.num_rows
    chosen, rejected = (
        np.concatenate(lengths[s]) if lengths[s] else np.zeros(0) for s in ("chosen", "rejected")
    )
    prefix = np.concatenate(shared) if shared else np.zeros(0)
    total_tokens = float(chosen.sum() + rejected.sum())
    raw_meta = (schema.metadata or {}).get(METADATA_KEY)
    report: dict[str, Any] = {
        "path": str(path),
        "kind": kind,
        "rows": seen,
        "columns": schema.names,
        "conversion": json.loads(raw_meta) if raw_meta else None,
        "tokens": {"chosen": _percentiles(chosen), "rejected": _percentiles(rejected)},
        "shared_prefix": {
            **_percentiles(prefix),
            # Tokens a prompt-sharing causal model need not compute twice, as a share of all tokens.
            "fraction_of_tokens": float(prefix.sum() / total_tokens) if total_tokens else 0.0,
        },
        "margin": None,
        "problems": problems,
        "sample": sample,
    }
    if margins:
        m = np.concatenate(margins)
        report["margin"] = {
            **_percentiles(m),
            "std": float(m.std()) if m.size else 0.0,
            "nonzero": int((m != 0).sum()),
        }
    return report


def _group_report(path, kind, schema, batches, tokenizer, sample_row) -> dict[str, Any]:
    """A grouped table's report (:mod:`.group_inspect`), with a decoded sample group."""
    from .group_inspect import decode_group, group_report

    batches = list(batches)
    raw_meta = (schema.metadata or {}).get(METADATA_KEY)
    conversion = json.loads(raw_meta) if raw_meta else None
    report = group_report(str(path), kind, schema, batches, conversion, _percentiles)
    if tokenizer is not None and 0 <= sample_row < report["groups"]:
        if isinstance(tokenizer, (str, os.PathLike)):
            from .encoding import load_tokenizer

            tokenizer = load_tokenizer(str(tokenizer))
        row = pa.Table.from_batches(batches).slice(sample_row, 1).to_pylist()[0]
        report["sample"] = decode_group(tokenizer, row, sample_row)
    return report


def _decode_sample(tokenizer: Any, row: dict[str, Any], index: int) -> dict[str, Any]:
    if isinstance(tokenizer, (str, os.PathLike)):
        from .encoding import load_tokenizer

        tokenizer = load_tokenizer(str(tokenizer))
    out = {"row": index, "source_row": row.get(SOURCE_ROW_COLUMN)}
    for side in ("chosen", "rejected"):
        out[side] = tokenizer.decode(row[f"input_ids_{side}"], skip_special_tokens=False)
    if MARGIN_COLUMN in row:
        out[MARGIN_COLUMN] = row[MARGIN_COLUMN]
    return out


def format_report(report: dict[str, Any]) -> str:
    """The human-readable form of :func:`inspect_output`'s report."""
    if "groups" in report:
        from .group_inspect import format_group_report

        return format_group_report(report, _num)
    lines = [
        f"{report['path']} ({report['kind']}): {report['rows']} pairs",
        f"columns: {', '.join(report['columns'])}",
    ]
    conv = report.get("conversion")
    if conv:
        settings = ", ".join(
            f"{k}={conv[k]}" for k in ("format", "tokenizer", "max_length", "truncation") if k in conv
        )
        if conv.get("chat_template"):
            settings += f", chat_template={conv['chat_template']}"
        lines.append(f"converted with: {settings}")
    keys = ["min", *(f"p{p}" for p in PERCENTILES), "max", "mean"]
    lines.append("")
    lines.append(f"{'tokens':<15}" + "".join(f"{k:>9}" for k in keys))
    rows = [("chosen", report["tokens"]["chosen"]), ("rejected", report["tokens"]["rejected"])]
    rows.append(("shared prefix", report["shared_prefix"]))
    if report.get("margin"):
        rows.append(("margin", report["margin"]))
    for name, stats in rows:
        cells = "".join(f"{_num(stats.get(k)):>9}" for k in keys)
        lines.append(f"{name:<15}{cells}")
    lines.append(
        f"shared prefix tokens: {report['shared_prefix'].get('fraction_of_tokens', 0.0):.1%} of all tokens"
    )
    if report.get("margin"):
        m = report["margin"]
        lines.append(
            f"margin: std {m.get('std', 0.0):.4g}, nonzero in {m.get('nonzero', 0)} of {report['rows']} pairs"
        )
    else:
        lines.append("margin: no margin column")
    for problem in report.get("problems", []):
        lines.append(f"problem: {problem}")
    sample = report.get("sample")
    if sample:
        lines.append("")
        lines.append(f"sample pair (row {sample['row']}, source row {sample.get('source_row')}):")
        for side in ("chosen", "rejected"):
            lines.append(f"--- {side} ---")
            lines.append(sample[side])
        if MARGIN_COLUMN in sample:
            lines.append(f"--- margin: {sample[MARGIN_COLUMN]}")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"
