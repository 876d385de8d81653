"""Ranking strategies checked against an independent enumeration; seeded random draws."""

from __future__ import annotations

import itertools
import random

import pytest

from dataset_formats import get_format


def make_row(scores, prompt="Explain recursion."):
    return {
        "instruction": prompt,
        "completions": [
            {"response": f"answer {i} to {prompt}", "overall_score": s} for i, s in enumerate(scores)
        ],
    }


def convert(row, **options):
    adapter = get_format("ranking")
    return adapter.to_pairs(row, adapter.make_options(options))


@pytest.mark.parametrize("seed", range(30))
def test_strategies_match_an_independent_enumeration(seed):
    rng = random.Random(seed)
    scores = [rng.choice([1.0, 2.0, 3.0, 4.0]) for _ in range(rng.randint(2, 6))]
    if len(set(scores)) == 1:
        scores[0] += 1
    row = make_row(scores)
    text = {i: c["response"] for i, c in enumerate(row["completions"])}
    better = {
        (text[i], text[j]) for i, j in itertools.permutations(range(len(scores)), 2) if scores[i] > scores[j]
    }
    tied = sum(1 for i, j in itertools.combinations(range(len(scores)), 2) if scores[i] == scores[j])

    pairs = convert(row, strategy="all-pairs")
    assert {(p.chosen, p.rejected) for p in pairs} == better and len(pairs) == len(better)
    assert sum(p.meta.get("ties_dropped", 0) for p in pairs) == tied

    top = max(scores)
    best = text[scores.index(top)]  # first of the best, in input order
    pairs = convert(row, strategy="best-vs-rest")
    assert [(p.chosen, p.rejected) for p in pairs] == [
        (best, text[j])
        for j in sorted((j for j in range(len(scores)) if scores[j] < top), key=lambda j: (-scores[j], j))
    ]
    assert pairs[0].meta["ties_dropped"] == scores.count(top) - 1

    (pair,) = convert(row, strategy="best-vs-worst")
    assert (pair.chosen, pair.rejected) == (best, text[scores.index(min(scores))])

    (pair,) = convert(row, strategy="best-vs-random-lower", seed=7)
    assert pair.chosen == best and (pair.chosen, pair.rejected) in better


def test_random_lower_is_reproducible_per_row_and_depends_on_the_seed():
    rows = [make_row([5.0, 1.0, 2.0, 3.0], prompt=f"question {i}") for i in range(300)]
    draw = lambda row, seed: convert(row, strategy="best-vs-random-lower", seed=seed)[0].rejected.split(" ")[
        1
    ]
    first = [draw(r, 0) for r in rows]
    assert [draw(r, 0) for r in reversed(rows)] == first[::-1]  # order does not matter
    assert [draw(r, 1) for r in rows] != first
    counts = {k: first.count(k) for k in ("1", "2", "3")}
    assert all(60 <= c <= 140 for c in counts.values()), counts  # ~100 each; never the best ("0")


def test_nectar_rank_one_is_best_and_prompt_transcript_is_parsed():
    row = {
        "prompt": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Capital of Peru?\n\nAssistant:",
        "answers": [
            {"answer": "Cusco", "rank": 2},
            {"answer": "Lima", "rank": 1},
            {"answer": "Quito", "rank": 3},
        ],
    }
    pairs = convert(row, strategy="best-vs-worst")
    assert [(p.chosen, p.rejected) for p in pairs] == [("Lima", "Quito")]
    assert pairs[0].prompt == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Capital of Peru?"},
    ]


def test_identical_texts_and_empty_completions_are_dropped_and_counted():
    row = {
        "instruction": "Q",
        "completions": [
            {"response": "same", "overall_score": 9},
            {"response": "same", "overall_score": 3},
            {"response": " ", "overall_score": 1},
            {"response": "other", "overall_score": 2},
        ],
    }
    pairs = convert(row, strategy="all-pairs")
    assert [(p.chosen, p.rejected) for p in pairs] == [("same", "other"), ("same", "other")]
    assert pairs[0].meta == {
        "ties_dropped": 0,
        "unscored_dropped": 0,
        "empty_dropped": 1,
        "identical_dropped": 1,
    }
    assert pairs[1].meta == {}
