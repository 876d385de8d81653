"""The group block and its packing: one layout for pairs (K=2), groups (any K) and the scorer.

A block is ``[shared prefix | tail 1 | ... | tail K]``: the K sequences' common prefix
(:func:`dataset_formats.prefix.common_prefix_length`, each keeps >= 1 token of its own) once, then
each sequence's own tail, whose position ids restart where the prefix ends. Segment codes are
``0`` prefix, ``k`` tail k (1-based; a pair's chosen and rejected tails are 1 and 2), ``-1``
padding. :func:`lay_out_block` lays out one block, :func:`pack_blocks` chooses which blocks share a
row, :func:`lay_out_rows` writes the batch tensors. :class:`~.collators.PrefixSharedPairCollator`,
:class:`~.groups.GroupCollator` and the scorer (:mod:`reward_plugin.serving.batching`) all lay out
through here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from dataset_formats.prefix import common_prefix_length

from .layout import PAD, PREFIX


class BlockLayout(NamedTuple):
    """One block: its ``ids``, ``positions`` and ``segments`` (one per token), ``ends`` (offset of
    each sequence's last token in the block) and ``sizes`` (prefix length, then each tail's)."""

    ids: list[int]
    positions: list[int]
    segments: list[int]
    ends: list[int]
    sizes: list[int]


def lay_out_block(sequences: Sequence[Sequence[int]]) -> BlockLayout:
    """The block of ``sequences`` (K >= 1 token id lists, no padding).

    Example::

        >>> block = lay_out_block([[5, 6, 7], [5, 6, 9, 9]])
        >>> block.ids, block.positions, block.segments
        ([5, 6, 7, 9, 9], [0, 1, 2, 2, 3], [0, 0, 1, 2, 2])
        >>> block.ends, block.sizes
        ([2, 4], [2, 1, 2])
    """
    p = common_prefix_length(sequences)
    ids, positions, segments, ends = list(sequences[0][:p]), list(range(p)), [PREFIX] * p, []
    for k, seq in enumerate(sequences):
        ids += seq[p:]
        positions += range(p, len(seq))
        segments += [k + 1] * (len(seq) - p)
        ends.append(len(ids) - 1)
    return BlockLayout(ids, positions, segments, ends, [p] + [len(s) - p for s in sequences])


def pack_blocks(lengths: list[int], attention_cost_tokens: float | None) -> list[list[int]]:
    """Rows (lists of block indices) for blocks of ``lengths`` tokens: the cheapest first-fit-decreasing
    packing over row capacities from the longest block up to all blocks in one row.

    The cost of a packing is ``rows * T * (1 + T / attention_cost_tokens)`` (linear layers grow with
    the tokens, dense attention with their square); without ``attention_cost_tokens`` the capacity
    is the longest block (no row longer than without packing).
    """
    longest, total = max(lengths), sum(lengths)
    if attention_cost_tokens is None:
        return first_fit_decreasing(lengths, longest)
    best, best_cost = None, float("inf")
    for rows in range(1, len(lengths) + 1):
        bins = first_fit_decreasing(lengths, max(longest, -(-total // rows)))
        width = max(sum(lengths[i] for i in b) for b in bins)
        cost = len(bins) * width * (1 + width / attention_cost_tokens)
        if cost < best_cost:
            best, best_cost = bins, cost
    return best


def first_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Bins (lists of block indices, longest block first) of at most ``capacity`` tokens; a block
    longer than ``capacity`` gets a bin of its own."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(capacity - lengths[i])
    return bins


def lay_out_rows(
    blocks: Sequence[BlockLayout],
    rows: Sequence[Sequence[int]],
    *,
    pad_token_id: int = 0,
    pad_to_multiple_of: int | None = None,
) -> dict[str, torch.Tensor]:
    """The batch tensors of ``blocks`` placed in ``rows`` (each a list of block indices, in order).

    Returns:
        ``response_index`` (``(m,)``: flat position in ``rows * T`` of every sequence's last token,
        blocks in index order), ``packed_input_ids``, ``packed_position_ids``, ``packed_pair_ids``
        (the block of each token, -1 for padding), ``packed_segments`` (each ``(rows, T)``) and
        ``packed_spans`` (``(blocks, 2 + 1 + K_max)``: row, start, prefix and each tail's length, 0
        past a block's K).
    """
    length = max(sum(len(blocks[i].ids) for i in row) for row in rows)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    shape = (len(rows), length)
    ids = torch.full(shape, pad_token_id, dtype=torch.long)
    positions = torch.zeros(shape, dtype=torch.long)
    owners = torch.full(shape, -1, dtype=torch.long)
    segments = torch.full(shape, PAD, dtype=torch.long)
    width = 2 + max(len(b.sizes) for b in blocks)
    spans = [[0] * width for _ in blocks]
    first = [0]
    for b in blocks:
        first.append(first[-1] + len(b.ends))
    response_index = [0] * first[-1]
    # One tensor write per row and column (not per block): the scorer lays out many small blocks.
    for r, row in enumerate(rows):
        row_ids: list[int] = []
        row_positions: list[int] = []
        row_segments: list[int] = []
        row_owners: list[int] = []
        for g in row:
            block, start = blocks[g], len(row_ids)
            row_ids += block.ids
            row_positions += block.positions
            row_segments += block.segments
            row_owners += [g] * len(block.ids)
            response_index[first[g] : first[g + 1]] = [r * length + start + e for e in block.ends]
            spans[g][: 2 + len(block.sizes)] = [r, start, *block.sizes]
        n = len(row_ids)
        ids[r, :n] = torch.tensor(row_ids, dtype=torch.long)
        positions[r, :n] = torch.tensor(row_positions, dtype=torch.long)
        segments[r, :n] = torch.tensor(row_segments, dtype=torch.long)
        owners[r, :n] = torch.tensor(row_owners, dtype=torch.long)
    return {
        "response_index": torch.tensor(response_index, dtype=torch.long),
        "packed_input_ids": ids,
        "packed_position_ids": positions,
        "packed_pair_ids": owners,
        "packed_segments": segments,
        "packed_spans": torch.tensor(spans, dtype=torch.long),
    }
