"""LengthGroupedPairSampler: a seeded permutation whose batches hold pairs of similar length."""

from __future__ import annotations

import random

import datasets

from reward_plugin.data import pair_lengths
from reward_plugin.sampler import LengthGroupedPairSampler


def lengths(n, seed=0):
    rng = random.Random(seed)
    return [rng.randint(5, 500) for _ in range(n)]


def padded_tokens(batches, lens):
    return sum(len(b) * max(lens[i] for i in b) for b in batches)


def test_is_a_permutation_with_the_longest_batch_first_and_the_short_batch_last():
    lens = lengths(103)
    sampler = LengthGroupedPairSampler(lens, batch_size=8, seed=1)
    batches = sampler.batches()
    assert sorted(sampler) == list(range(103)) and len(sampler) == 103
    assert list(sampler) == [i for b in batches for i in b]
    assert [len(b) for b in batches] == [8] * 12 + [7]
    assert max(lens[i] for i in batches[0]) == max(lens)


def test_grouping_cuts_padding_against_random_batches():
    lens = lengths(400, seed=3)
    grouped = LengthGroupedPairSampler(lens, batch_size=8, seed=0).batches()
    order = list(range(400))
    random.Random(0).shuffle(order)
    shuffled = [order[i : i + 8] for i in range(0, 400, 8)]
    # Sorting inside mega-batches of 50 batches leaves little padding: measured, not assumed.
    assert padded_tokens(grouped, lens) < 0.7 * padded_tokens(shuffled, lens)
    assert padded_tokens(grouped, lens) >= sum(lens)


def test_order_depends_only_on_seed_and_epoch():
    lens = lengths(64)
    a, b = LengthGroupedPairSampler(lens, 4, seed=5), LengthGroupedPairSampler(lens, 4, seed=5)
    random.seed(123)  # the global RNGs play no part
    assert list(a) == list(b)
    assert list(a) != list(LengthGroupedPairSampler(lens, 4, seed=6))
    b.set_epoch(1)
    assert list(a) != list(b)
    a.set_epoch(1)
    assert list(a) == list(b)


def test_pair_lengths_take_the_longer_side():
    ds = datasets.Dataset.from_dict(
        {"input_ids_chosen": [[1, 2, 3], [1]], "input_ids_rejected": [[1], [1, 2, 3, 4]], "other": ["a", "b"]}
    )
    assert pair_lengths(ds) == [3, 4]
    assert pair_lengths(ds.select([1, 0])) == [4, 3]


def test_empty_dataset():
    assert list(LengthGroupedPairSampler([], batch_size=4)) == []
