"""binarize_groups: one pair per group, a top response against a random worse one (seeded)."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pytest

from dataset_formats.groups import binarize_groups, expand_groups, group_schema


def link(better: int, worse: int, margin: float | None = None) -> dict:
    return {"better": better, "worse": worse, "margin": margin}


# Each group with the (better, worse) pairs a binarisation may pick, written out by hand.
GROUPS = [
    (  # a strict ranking by scores: response 0 is best; it beats 1 and 2
        {"prompt_ids": [1, 2], "response_ids": [[3], [4, 5], [6]], "scores": [2.0, 0.0, 1.0]},
        [link(0, 1, 0.5), link(0, 2), link(2, 1)],
        {((1, 2, 3), (1, 2, 4, 5)), ((1, 2, 3), (1, 2, 6))},
    ),
    (  # RM-Bench-like: two tied chosen (score 1) x two rejected (score 0), all four pairs possible
        {"prompt_ids": [7], "response_ids": [[8], [9], [10], [11, 12]], "scores": [1.0, 1.0, 0.0, 0.0]},
        [link(0, 2), link(0, 3), link(1, 2), link(1, 3)],
        {((7, 8), (7, 10)), ((7, 8), (7, 11, 12)), ((7, 9), (7, 10)), ((7, 9), (7, 11, 12))},
    ),
    (  # no scores: the top is the response never on the worse side (0), it beats only 1
        {"prompt_ids": [], "response_ids": [[13, 14], [13, 15], [16]], "scores": None},
        [link(0, 1), link(1, 2)],
        {((13, 14), (13, 15))},
    ),
]


def grouped_table() -> pa.Table:
    rows = [{**group, "pairs": links, "source_row": 10 + i} for i, (group, links, _) in enumerate(GROUPS)]
    return pa.Table.from_pylist(rows, schema=group_schema())


def drawn_pairs(table: pa.Table) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    pairs = expand_groups(table).to_pydict()
    return [tuple(map(tuple, p)) for p in zip(pairs["input_ids_chosen"], pairs["input_ids_rejected"])]


def test_binarize_draws_one_top_vs_worse_pair_per_group_seeded():
    table = grouped_table()
    counts: list[Counter] = [Counter() for _ in GROUPS]
    for seed in range(200):
        out = binarize_groups(table, seed=seed)
        assert out.schema.remove_metadata() == group_schema()
        assert out.column("source_row").to_pylist() == [10, 11, 12]
        assert all(len(r) == 2 for r in out.column("response_ids").to_pylist())
        for count, pair in zip(counts, drawn_pairs(out)):
            count[pair] += 1
    for count, (_, _, allowed) in zip(counts, GROUPS):
        assert set(count) == allowed
        # uniform among the allowed pairs: 200/k expected, bounds over 4 standard deviations away
        for n in count.values():
            assert abs(n - 200 / len(allowed)) <= 4 * (200 / len(allowed)) ** 0.5 + 1
    assert binarize_groups(table, seed=3).equals(binarize_groups(table, seed=3))


def test_binarize_keeps_the_margin_and_the_two_scores():
    table = grouped_table().slice(0, 1)
    for seed in range(20):
        row = binarize_groups(table, seed=seed).to_pylist()[0]
        (pair,) = row["pairs"]
        assert (pair["better"], pair["worse"]) == (0, 1)
        chosen = row["prompt_ids"] + row["response_ids"][0]
        expected = {(1, 2, 4, 5): (0.5, [2.0, 0.0]), (1, 2, 6): (None, [2.0, 1.0])}
        margin, scores = expected[tuple(row["prompt_ids"] + row["response_ids"][1])]
        assert chosen == [1, 2, 3] and pair["margin"] == margin and row["scores"] == scores


def test_binarize_refuses_a_group_without_pairs():
    rows = [{"prompt_ids": [1], "response_ids": [[2]], "pairs": [], "scores": None, "source_row": 4}]
    with pytest.raises(ValueError, match="source row 4 lists no pairs"):
        binarize_groups(pa.Table.from_pylist(rows, schema=group_schema()))
