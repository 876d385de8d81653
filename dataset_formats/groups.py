"""The grouped table: one row per prompt with its K responses and their preference structure.

A source row that yields several pairs (a ranking, RM-Bench's 3 chosen x 3 rejected) is one
*group*: the distinct token sequences of its written pairs, stored once each, plus the pairs as
``(better, worse, margin)`` indices into them. Columns (see ``docs/groups.md``):

- ``prompt_ids`` ``list<int32>``: the leading tokens every response sequence shares (at most the
  shortest sequence minus one token, so every response keeps at least one token of its own);
- ``response_ids`` ``list<list<int32>>``: per response, the tokens after ``prompt_ids``; the full
  sequence of response ``i`` is ``prompt_ids + response_ids[i]``;
- ``pairs`` ``list<struct<better: int32, worse: int32, margin: float32>>``: the preference pairs in
  the order the pair table has them; ``margin`` is null when the source gives none;
- ``scores`` ``list<float32>`` (null when the source does not score every response): higher is
  better, equal scores tie; the ranking the listwise losses use;
- ``source_row`` ``int64``.

:func:`expand_groups` turns a grouped table back into the four-column pair table, row for row the
table ``convert`` writes without ``--groups``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from .prefix import common_prefix_length
from .schema import MARGIN_COLUMN, PAIR_COLUMNS, SOURCE_ROW_COLUMN, pair_schema

PROMPT_IDS_COLUMN = "prompt_ids"
RESPONSE_IDS_COLUMN = "response_ids"
PAIRS_COLUMN = "pairs"
SCORES_COLUMN = "scores"
#: The columns that make a table grouped.
GROUP_COLUMNS = (PROMPT_IDS_COLUMN, RESPONSE_IDS_COLUMN, PAIRS_COLUMN)

PAIR_STRUCT = pa.struct(
    [
        pa.field("better", pa.int32(), nullable=False),
        pa.field("worse", pa.int32(), nullable=False),
        pa.field("margin", pa.float32(), nullable=True),
    ]
)


def group_schema() -> pa.Schema:
    """The grouped table's schema (see the module docstring)."""
    ids = pa.list_(pa.int32())
    return pa.schema(
        [
            pa.field(PROMPT_IDS_COLUMN, ids, nullable=False),
            pa.field(RESPONSE_IDS_COLUMN, pa.list_(ids), nullable=False),
            pa.field(PAIRS_COLUMN, pa.list_(PAIR_STRUCT), nullable=False),
            pa.field(SCORES_COLUMN, pa.list_(pa.float32()), nullable=True),
            pa.field(SOURCE_ROW_COLUMN, pa.int64(), nullable=False),
        ]
    )


def is_group_table(columns: Sequence[str]) -> bool:
    """Whether ``columns`` are those of a grouped table."""
    return all(c in columns for c in GROUP_COLUMNS)


def make_group(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    margins: Sequence[float | None],
    scores: Sequence[tuple[float, float] | None],
) -> dict[str, Any]:
    """One group row from the encoded pairs of one source row.

    The responses are the distinct sequences, in order of first appearance among the better sides
    of the pairs, then among the worse sides (RM-Bench: its chosen responses, then its rejected).

    Args:
        pairs: ``(better ids, worse ids)`` of each pair, whole sequences (prompt included).
        margins: each pair's margin, or None.
        scores: each pair's ``(better score, worse score)``, or None.

    Returns:
        A dict with the grouped columns except ``source_row``; ``scores`` is None unless every
        response has a score and a response never gets two different scores.
    """
    index: dict[tuple[int, ...], int] = {}
    for side in (0, 1):
        for pair in pairs:
            index.setdefault(tuple(pair[side]), len(index))
    sequences = list(index)
    prefix = common_prefix_length(sequences)
    links = [
        {"better": index[tuple(b)], "worse": index[tuple(w)], "margin": m}
        for (b, w), m in zip(pairs, margins)
    ]
    response_scores: list[float | None] = [None] * len(sequences)
    consistent = all(s is not None for s in scores)
    for link, score in zip(links, scores):
        if score is None:
            break
        for key, value in zip(("better", "worse"), score):
            seen = response_scores[link[key]]
            consistent &= seen is None or seen == value
            response_scores[link[key]] = float(value)
    return {
        PROMPT_IDS_COLUMN: list(sequences[0][:prefix]),
        RESPONSE_IDS_COLUMN: [list(s[prefix:]) for s in sequences],
        PAIRS_COLUMN: links,
        SCORES_COLUMN: response_scores if consistent else None,
    }


def build_group_batch(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    rows: Sequence[int],
    margins: Sequence[float | None],
    scores: Sequence[tuple[float, float] | None],
) -> pa.RecordBatch:
    """Arrow batch of groups: the written pairs of each source row (consecutive in ``rows``) as one group.

    Args:
        pairs: ``(better ids, worse ids)`` of every written pair, grouped by source row.
        rows: the source row of each pair.
        margins: each pair's margin or None.
        scores: each pair's ``(better, worse)`` scores or None.

    Returns:
        A ``pyarrow.RecordBatch`` with :func:`group_schema`, one row per source row.
    """
    groups: list[dict[str, Any]] = []
    start = 0
    while start < len(rows):
        end = start
        while end < len(rows) and rows[end] == rows[start]:
            end += 1
        group = make_group(pairs[start:end], margins[start:end], scores[start:end])
        group[SOURCE_ROW_COLUMN] = rows[start]
        groups.append(group)
        start = end
    return pa.RecordBatch.from_pylist(groups, schema=group_schema())


def expand_groups(table: pa.Table | pa.RecordBatch) -> pa.Table:
    """The four-column pair table of a grouped table: one row per pair, ids = prompt + response.

    Args:
        table: a grouped table (:func:`group_schema`).

    Returns:
        A table with :func:`~dataset_formats.schema.pair_schema` (``margin`` when any pair has one,
        0.0 for pairs without), the pairs of each group in order, ``source_row`` carried over.
    """
    data = table.select([*GROUP_COLUMNS, SOURCE_ROW_COLUMN]).to_pydict()
    chosen: list[list[int]] = []
    rejected: list[list[int]] = []
    margins: list[float | None] = []
    rows: list[int] = []
    for prompt, responses, links, row in zip(*(data[c] for c in (*GROUP_COLUMNS, SOURCE_ROW_COLUMN))):
        for link in links:
            chosen.append(prompt + responses[link["better"]])
            rejected.append(prompt + responses[link["worse"]])
            margins.append(link["margin"])
            rows.append(row)
    with_margin = any(m is not None for m in margins)
    schema = pair_schema(with_margin=with_margin)
    list_type = schema.field(PAIR_COLUMNS[0]).type
    columns: list[Any] = []
    for ids in (chosen, rejected):
        columns += [pa.array(ids, type=list_type), pa.array([[1] * len(i) for i in ids], type=list_type)]
    if with_margin:
        columns.append(pa.array([0.0 if m is None else m for m in margins], type=pa.float32()))
    columns.append(pa.array(rows, type=pa.int64()))
    return pa.Table.from_arrays(columns, schema=schema)


def binarize_groups(table: pa.Table | pa.RecordBatch, seed: int = 0) -> pa.Table:
    """One pair per group, as preference data is usually binarised: a best response vs a random worse one.

    Per group, the candidate pairs are the listed pairs whose better response is a top response
    (the highest ``scores``; without scores, a response that is never on the worse side of a
    pair); one of them is drawn uniformly (``numpy.random.default_rng(seed)``, groups in table
    order). For RM-Bench (every chosen beats every rejected, scores 1 and 0) that is a random
    chosen response against a random rejected one; for a ranking, the best response against a
    random lower one (ties for the top drawn among too).

    Args:
        table: a grouped table (:func:`group_schema`).
        seed: the seed of the draws.

    Returns:
        A grouped table of groups of two responses, one pair each (its margin and the two
        responses' scores kept), ``source_row`` carried over; :func:`expand_groups` turns it into
        one four-column pair per group.

    Raises:
        ValueError: a group lists no pairs.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    groups = []
    for row in table.select([*GROUP_COLUMNS, SCORES_COLUMN, SOURCE_ROW_COLUMN]).to_pylist():
        links, scores = row[PAIRS_COLUMN], row[SCORES_COLUMN]
        if not links:
            raise ValueError(f"group of source row {row[SOURCE_ROW_COLUMN]} lists no pairs to binarise")
        if scores is not None:
            top = max(scores)
            candidates = [link for link in links if scores[link["better"]] == top]
        else:
            worse = {link["worse"] for link in links}
            candidates = [link for link in links if link["better"] not in worse]
        link = (candidates or links)[int(rng.integers(len(candidates or links)))]
        prompt, responses = row[PROMPT_IDS_COLUMN], row[RESPONSE_IDS_COLUMN]
        pair = (prompt + responses[link["better"]], prompt + responses[link["worse"]])
        score = None if scores is None else (scores[link["better"]], scores[link["worse"]])
        group = make_group([pair], [link["margin"]], [score])
        group[SOURCE_ROW_COLUMN] = row[SOURCE_ROW_COLUMN]
        groups.append(group)
    return pa.Table.from_pylist(groups, schema=group_schema())


__all__ = [
    "GROUP_COLUMNS",
    "MARGIN_COLUMN",
    "PAIRS_COLUMN",
    "PROMPT_IDS_COLUMN",
    "RESPONSE_IDS_COLUMN",
    "SCORES_COLUMN",
    "binarize_groups",
    "build_group_batch",
    "common_prefix_length",
    "expand_groups",
    "group_schema",
    "is_group_table",
    "make_group",
]
