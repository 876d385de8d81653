"""``inspect`` of a grouped table: group sizes, pairs per group, token counts against the expanded pairs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .groups import PAIRS_COLUMN, PROMPT_IDS_COLUMN, RESPONSE_IDS_COLUMN, SCORES_COLUMN
from .schema import SOURCE_ROW_COLUMN


def group_report(
    path: str,
    kind: str,
    schema: pa.Schema,
    batches: Iterable[pa.RecordBatch],
    conversion: Any,
    percentiles: Any,
) -> dict[str, Any]:
    """The ``inspect`` report of a grouped table (see :func:`dataset_formats.inspect.inspect_output`).

    Args:
        path, kind, schema, batches: the opened table.
        conversion: the settings ``convert`` stored (or None).
        percentiles: the report's percentile function (values -> dict).

    Returns:
        A JSON-ready dict: ``groups``, ``pairs``, ``group_sizes`` (responses per group: a count per
        size and percentiles), ``pairs_per_group``, ``tokens`` (prompt and response lengths), the
        tokens of the groups against those of their expanded pairs, and how many groups have scores.
    """
    sizes, pair_counts, prompts, responses = [], [], [], []
    group_tokens = pair_tokens = 0
    scored = seen = 0
    for batch in batches:
        prompt_len = pc.list_value_length(batch.column(PROMPT_IDS_COLUMN)).to_numpy()
        for p, resp, links, scores in zip(
            prompt_len,
            batch.column(RESPONSE_IDS_COLUMN).to_pylist(),
            batch.column(PAIRS_COLUMN).to_pylist(),
            batch.column(SCORES_COLUMN).to_pylist(),
        ):
            lengths = [len(r) for r in resp]
            sizes.append(len(resp))
            pair_counts.append(len(links))
            prompts.append(int(p))
            responses.extend(lengths)
            group_tokens += int(p) + sum(lengths)
            pair_tokens += sum(2 * int(p) + lengths[x["better"]] + lengths[x["worse"]] for x in links)
            scored += scores is not None
        seen += batch.num_rows
    as_array = np.asarray
    return {
        "path": path,
        "kind": kind,
        "rows": seen,
        "groups": seen,
        "pairs": int(sum(pair_counts)),
        "columns": schema.names,
        "conversion": conversion,
        "group_sizes": {
            "count_by_size": {str(k): v for k, v in sorted(Counter(sizes).items())},
            **percentiles(as_array(sizes, dtype=np.float64)),
        },
        "pairs_per_group": percentiles(as_array(pair_counts, dtype=np.float64)),
        "tokens": {
            "prompt": percentiles(as_array(prompts, dtype=np.float64)),
            "response": percentiles(as_array(responses, dtype=np.float64)),
        },
        "group_tokens": group_tokens,
        "expanded_pair_tokens": pair_tokens,
        "groups_with_scores": scored,
        "problems": [],
        "sample": None,
    }


def decode_group(tokenizer: Any, row: dict[str, Any], index: int) -> dict[str, Any]:
    """The prompt and responses of one group row, decoded."""
    return {
        "row": index,
        "source_row": row.get(SOURCE_ROW_COLUMN),
        "prompt": tokenizer.decode(row[PROMPT_IDS_COLUMN], skip_special_tokens=False),
        "responses": [tokenizer.decode(r, skip_special_tokens=False) for r in row[RESPONSE_IDS_COLUMN]],
        "pairs": [(p["better"], p["worse"]) for p in row[PAIRS_COLUMN]],
        "scores": row.get(SCORES_COLUMN),
    }


def format_group_report(report: dict[str, Any], number: Any) -> str:
    """The human-readable form of :func:`group_report`."""
    lines = [
        f"{report['path']} ({report['kind']}): {report['groups']} groups, {report['pairs']} pairs",
        f"columns: {', '.join(report['columns'])}",
    ]
    conv = report.get("conversion")
    if conv:
        lines.append(
            "converted with: "
            + ", ".join(f"{k}={conv[k]}" for k in ("format", "tokenizer", "max_length") if k in conv)
        )
    by_size = ", ".join(f"{k}: {v}" for k, v in report["group_sizes"]["count_by_size"].items())
    lines.append(f"groups by number of responses: {by_size}")
    keys = ["min", "p50", "p90", "p99", "max", "mean"]
    lines.append(f"{'':<18}" + "".join(f"{k:>9}" for k in keys))
    rows = [
        ("responses/group", report["group_sizes"]),
        ("pairs/group", report["pairs_per_group"]),
        ("prompt tokens", report["tokens"]["prompt"]),
        ("response tokens", report["tokens"]["response"]),
    ]
    for name, stats in rows:
        lines.append(f"{name:<18}" + "".join(f"{number(stats.get(k)):>9}" for k in keys))
    g, p = report["group_tokens"], report["expanded_pair_tokens"]
    ratio = f" ({p / g:.2f}x)" if g else ""
    lines.append(f"tokens: {g} in the groups, {p} in their {report['pairs']} expanded pairs{ratio}")
    lines.append(f"groups with scores: {report['groups_with_scores']} of {report['groups']}")
    sample = report.get("sample")
    if sample:
        lines += [
            "",
            f"sample group (row {sample['row']}, source row {sample['source_row']}):",
            "--- prompt ---",
            sample["prompt"],
        ]
        for i, text in enumerate(sample["responses"]):
            score = "" if sample["scores"] is None else f" (score {sample['scores'][i]:g})"
            lines += [f"--- response {i}{score} ---", text]
        lines.append(f"--- pairs (better, worse): {sample['pairs']}")
    return "\n".join(lines)
