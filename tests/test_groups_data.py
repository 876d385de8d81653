"""The grouped table: RM-Bench and ranking rows convert to groups that expand to exactly the pair table."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from conftest import RM_BENCH

import dataset_formats as df
from dataset_formats.conversion import encode_rows
from dataset_formats.groups import expand_groups, group_schema, make_group


def rm_bench_rows(n: int) -> list[dict]:
    """The first ``n`` (at most 12) prompts of RM-Bench's chat file (tests/fixtures/data/README.md)."""
    with gzip.open(RM_BENCH / "chat_filtered.slice.json.gz", "rt", encoding="utf-8") as fh:
        rows = json.load(fh)
    assert n <= len(rows), f"the repository's RM-Bench slice holds {len(rows)} prompts"
    return rows[:n]


def test_make_group_orders_responses_better_sides_first_and_keeps_scores_and_margins():
    a, b, c = [1, 2, 3, 4], [1, 2, 5], [1, 2, 3, 6, 7]
    group = make_group([(a, b), (c, b), (a, c)], [0.5, None, 1.0], [(2.0, 0.0), (1.0, 0.0), (2.0, 1.0)])
    assert group["prompt_ids"] == [1, 2]
    assert group["response_ids"] == [[3, 4], [3, 6, 7], [5]]  # a, c (better sides), then b
    assert group["pairs"] == [
        {"better": 0, "worse": 2, "margin": 0.5},
        {"better": 1, "worse": 2, "margin": None},
        {"better": 0, "worse": 1, "margin": 1.0},
    ]
    assert group["scores"] == [2.0, 1.0, 0.0]
    # A response scored differently in two pairs, or a pair without scores: no scores for the group.
    assert make_group([(a, b), (a, c)], [None, None], [(2.0, 0.0), (3.0, 1.0)])["scores"] is None
    assert make_group([(a, b), (a, c)], [None, None], [(2.0, 0.0), None])["scores"] is None


def test_rm_bench_groups_expand_to_the_pair_table(minilm_path):
    rows = rm_bench_rows(12)
    pairs, pair_stats = encode_rows(rows, format="rm-bench", tokenizer=minilm_path)
    groups, group_stats = encode_rows(rows, format="rm-bench", tokenizer=minilm_path, groups=True)
    assert groups.schema.remove_metadata() == group_schema()
    assert pair_stats.pairs_written == group_stats.pairs_written == 9 * len(rows)
    assert group_stats.groups_written == groups.num_rows == len(rows) and pair_stats.groups_written == 0
    assert expand_groups(groups).equals(pairs)
    first = groups.slice(0, 1).to_pylist()[0]
    assert len(first["response_ids"]) == 6
    assert first["scores"] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert {(p["better"], p["worse"]) for p in first["pairs"]} == {
        (i, j) for i in range(3) for j in (3, 4, 5)
    }
    # The shared prompt is stored once: the group holds far fewer tokens than its 9 pairs.
    group_tokens = len(first["prompt_ids"]) + sum(map(len, first["response_ids"]))
    pair_tokens = sum(
        len(p) for side in ("input_ids_chosen", "input_ids_rejected") for p in pairs[side][:9].to_pylist()
    )
    assert pair_tokens > 2.5 * group_tokens


def cut_group(sequences: list[list[int]], drop: int, max_length: int) -> list[list[int]]:
    """Every sequence of a group without the same ``drop`` tokens after [CLS]; one still too long
    loses its end, keeping the final [SEP]."""
    cut = [s[:1] + s[1 + drop :] for s in sequences]
    return [s if len(s) <= max_length else s[: max_length - 1] + s[-1:] for s in cut]


@pytest.mark.parametrize("max_length", [96, 512])
def test_rm_bench_groups_are_cut_once_per_group_and_keep_every_response(minilm_path, max_length):
    rows = rm_bench_rows(12)
    whole, _ = encode_rows(rows, format="rm-bench", tokenizer=minilm_path, groups=True)
    cut, stats = encode_rows(
        rows, format="rm-bench", tokenizer=minilm_path, max_length=max_length, groups=True
    )
    assert cut.num_rows == whole.num_rows == len(rows) and stats.pairs_written == 9 * len(rows)
    truncated = 0
    for full, short in zip(whole.to_pylist(), cut.to_pylist()):
        # Every response kept (RM-Bench: 6, or 5 where two responses are the same text), its pairs unchanged.
        assert len(short["response_ids"]) == len(full["response_ids"]) and short["pairs"] == full["pairs"]
        sequences = [full["prompt_ids"] + r for r in full["response_ids"]]
        got = [short["prompt_ids"] + r for r in short["response_ids"]]
        # One cut for the whole group: the same leading tokens dropped from every sequence, never
        # more than its longest sequence is over the limit (fewer only where the prompt ran out).
        over = max(0, max(map(len, sequences)) - max_length)
        drops = [d for d in range(over + 1) if cut_group(sequences, d, max_length) == got]
        assert drops, "the sequences of a group were not cut alike"
        assert drops[0] == over or max(map(len, got)) == max_length
        truncated += got != sequences
    assert truncated > 0 and stats.groups_truncated == stats.rows_truncated == truncated


def test_ranking_groups_keep_scores_and_leave_ties_out(minilm_path):
    row = {
        "instruction": "Explain recursion.",
        "completions": [
            {"response": "A function calling itself.", "overall_score": 7.0},
            {"response": "Looping.", "overall_score": 4.0},
            {"response": "Self-reference until a base case.", "overall_score": 7.0},
            {"response": "No idea.", "overall_score": 1.0},
        ],
    }
    groups, stats = encode_rows([row], format="ranking", tokenizer=minilm_path, groups=True)
    group = groups.to_pylist()[0]
    assert stats.ties_dropped == 1 and stats.pairs_written == 5
    assert len(group["response_ids"]) == 4
    scores = group["scores"]
    assert sorted(scores) == [1.0, 4.0, 7.0, 7.0]
    assert all(scores[p["better"]] > scores[p["worse"]] for p in group["pairs"])
    pairs, _ = encode_rows([row], format="ranking", tokenizer=minilm_path)
    assert expand_groups(groups).equals(pairs)


def test_cli_convert_writes_pairs_or_groups_and_counts_them(minilm_path, tmp_path):
    src = tmp_path / "rm.json.gz"
    with gzip.open(src, "wt", encoding="utf-8") as fh:
        json.dump(rm_bench_rows(5) + [{"prompt": "Hi", "chosen": ["Hello"], "rejected": "Bye"}], fh)
    base = [sys.executable, "-m", "reward_plugin", "convert", str(src), "--format", "rm-bench"]
    base += ["--tokenizer", minilm_path, "--on-error", "skip"]
    for flag, out in (([], "pairs.parquet"), (["--groups"], "groups.parquet")):
        stats = tmp_path / f"{out}.json"
        run = subprocess.run(
            [*base, *flag, "-o", str(tmp_path / out), "--stats-json", str(stats)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        counts = json.loads(stats.read_text())
        assert (counts["rows_read"], counts["rows_written"], counts["rows_rejected"]) == (6, 5, 1)
        assert counts["pairs_written"] == 45
        assert counts["groups_written"] == (5 if flag else 0)
    assert "groups written: 5, pairs written: 45 (in groups)" in run.stdout
    pairs = pq.read_table(tmp_path / "pairs.parquet")
    groups = pq.read_table(tmp_path / "groups.parquet")
    assert pairs.num_rows == 45 and groups.num_rows == 5
    assert expand_groups(groups).equals(pairs.replace_schema_metadata(None))


def test_rm_bench_is_detected():
    rows = rm_bench_rows(3)
    assert df.detect_format(list(rows[0]), rows) == "rm-bench"


def test_inspect_shows_group_sizes_and_the_tokens_against_the_expanded_pairs(minilm_path, tmp_path):
    from dataset_formats.inspect import format_report, inspect_output

    src = tmp_path / "rm.json"
    rows = rm_bench_rows(4)
    rows[1]["chosen"] = rows[1]["chosen"][:2]  # a group of 5 responses, 6 pairs
    src.write_text(json.dumps(rows), encoding="utf-8")
    out = tmp_path / "groups.parquet"
    df.convert(src, out, format="rm-bench", tokenizer=minilm_path, groups=True, progress=False)
    report = inspect_output(out, tokenizer=minilm_path, sample_row=1)
    groups = pq.read_table(out).to_pylist()
    assert (report["groups"], report["pairs"]) == (4, 33)
    sizes = [len(g["response_ids"]) for g in groups]
    assert report["group_sizes"]["count_by_size"] == {str(k): sizes.count(k) for k in sorted(set(sizes))}
    assert report["group_tokens"] == sum(
        len(g["prompt_ids"]) + sum(map(len, g["response_ids"])) for g in groups
    )
    expanded = expand_groups(pq.read_table(out)).to_pydict()
    pair_tokens = sum(map(len, expanded["input_ids_chosen"])) + sum(map(len, expanded["input_ids_rejected"]))
    assert report["expanded_pair_tokens"] == pair_tokens
    assert len(report["sample"]["responses"]) == sizes[1] and report["sample"]["source_row"] == 1
    text = format_report(report)
    assert f"{report['groups']} groups, 33 pairs" in text and "groups by number of responses:" in text


def test_doctests_of_the_group_modules():
    import doctest

    import dataset_formats.prefix  # the group prefix rule (common_prefix_length) lives there
    import reward_plugin.pairs.groups

    for module in (dataset_formats.prefix, reward_plugin.pairs.groups):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted >= 2, module.__name__


def test_one_prefix_rule_for_pairs_groups_encoding_and_eval():
    from dataset_formats.prefix import common_prefix_length, shared_prefix_length

    pair = ([5, 1, 2, 3, 9], [5, 1, 2, 4, 9])
    assert shared_prefix_length(*pair) == common_prefix_length(pair) == 3
    # Capped: each side keeps `keep` tokens of its own (1 by default; 0 is the plain common prefix).
    assert common_prefix_length(([1, 2], [1, 2, 3])) == 1
    assert common_prefix_length(([1, 2], [1, 2, 3]), keep=0) == 2
    assert common_prefix_length(([1, 2, 3], [1, 2, 3]), keep=2) == 1
    # `start`: leading tokens taken as shared unread, and a floor when the cap is below it.
    assert common_prefix_length(([7, 1, 2, 3], [8, 1, 2, 4]), start=1) == 3
    assert common_prefix_length(([7, 1], [8, 1]), start=1, keep=2) == 1
    # A group: the tokens all of its sequences share.
    assert common_prefix_length([[1, 2, 3], [1, 2, 4, 5], [1, 2, 3, 6]]) == 2
    assert common_prefix_length([[4, 4, 4]]) == 2
