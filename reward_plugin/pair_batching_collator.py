"""Collators of the prefix-shared and packed pair layouts (see :mod:`reward_plugin.pair_batching`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .collator import MARGIN_COLUMN, RewardDataCollatorWithPadding
from .errors import DataError
from .pair_batching import CHOSEN, PAD, PREFIX, REJECTED, shared_prefix_length


@dataclass
class PrefixSharedPairCollator(RewardDataCollatorWithPadding):
    """Lays each pair out as one block ``[shared prefix | chosen tail | rejected tail]``.

    Takes the same rows as :class:`RewardDataCollatorWithPadding` and cuts each side to
    ``max_length`` the same way (``truncation``, ``keep_token_ids``); tokens whose attention mask
    is 0 are dropped. The shared prefix is the longest common prefix of the two id lists, capped
    so each tail keeps at least one token. With ``pack=False`` every pair gets its own row
    (``prefix_shared``); with ``pack=True`` pairs are packed first-fit-decreasing into rows
    (``packed``). The row capacity is chosen per batch to minimise the estimated cost
    ``rows * T * (1 + T / attention_cost_tokens)`` (linear layers grow with the tokens, dense
    attention with their square): from the batch's longest block (no row longer than without
    packing) up to all pairs in one row. Without ``attention_cost_tokens`` the capacity is the
    longest block.

    The batch holds ``chosen_index``/``rejected_index`` (``(pairs,)``: flat positions in
    ``rows * T`` where each reward is read), ``packed_input_ids``, ``packed_position_ids``
    (restarting at 0 per pair, and at the prefix end for the rejected tail), ``packed_pair_ids``
    (the pair of each token, -1 for padding), ``packed_segments`` (0 prefix, 1 chosen, 2 rejected,
    -1 padding), each ``(rows, T)``, ``packed_spans`` (``(pairs, 5)``: row, start, prefix,
    chosen tail and rejected tail lengths of each block, for segment attention), and ``margin``
    when the rows have one.

    Args:
        pack: put several pairs into one row.
        attention_cost_tokens: row length at which a token's attention costs as much as its linear
            layers (see :func:`reward_plugin.pair_batching.attention_cost_tokens`); packing only.
        (others): as :class:`RewardDataCollatorWithPadding`; ``padding_side`` is not used.

    Example::

        >>> collator = PrefixSharedPairCollator(pad_token_id=0)
        >>> batch = collator([{"chosen_ids": [5, 6, 7], "rejected_ids": [5, 6, 9, 9]}])
        >>> batch["packed_input_ids"]
        tensor([[5, 6, 7, 9, 9]])
        >>> batch["packed_position_ids"]
        tensor([[0, 1, 2, 2, 3]])
        >>> batch["chosen_index"], batch["rejected_index"]
        (tensor([2]), tensor([4]))
    """

    pack: bool = False
    attention_cost_tokens: float | None = None

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not examples:
            raise DataError("cannot collate an empty batch of pairs")
        blocks = []
        for index, example in enumerate(examples):
            chosen = _real_tokens(*self._sequence(example, "chosen", index))
            rejected = _real_tokens(*self._sequence(example, "rejected", index))
            blocks.append(_block(chosen, rejected))
        margins = self._margins(examples)
        lengths = [len(b[0]) for b in blocks]
        rows = (
            _best_packing(lengths, self.attention_cost_tokens)
            if self.pack
            else [[i] for i in range(len(blocks))]
        )
        length = max(sum(len(blocks[i][0]) for i in row) for row in rows)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        shape = (len(rows), length)
        ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        positions = torch.zeros(shape, dtype=torch.long)
        pair_ids = torch.full(shape, -1, dtype=torch.long)
        segments = torch.full(shape, PAD, dtype=torch.long)
        chosen_index = torch.empty(len(blocks), dtype=torch.long)
        rejected_index = torch.empty(len(blocks), dtype=torch.long)
        spans = torch.empty(len(blocks), 5, dtype=torch.long)
        for r, row in enumerate(rows):
            start = 0
            for pair in row:
                block_ids, block_pos, block_seg, chosen_end, rejected_end, sizes = blocks[pair]
                end = start + len(block_ids)
                ids[r, start:end] = torch.tensor(block_ids)
                positions[r, start:end] = torch.tensor(block_pos)
                segments[r, start:end] = torch.tensor(block_seg)
                pair_ids[r, start:end] = pair
                chosen_index[pair] = r * length + start + chosen_end
                rejected_index[pair] = r * length + start + rejected_end
                spans[pair] = torch.tensor([r, start, *sizes])
                start = end
        batch = {
            "chosen_index": chosen_index,
            "rejected_index": rejected_index,
            "packed_input_ids": ids,
            "packed_position_ids": positions,
            "packed_pair_ids": pair_ids,
            "packed_segments": segments,
            "packed_spans": spans,
        }
        if margins is not None:
            batch[MARGIN_COLUMN] = torch.tensor(margins, dtype=torch.float32)
        return batch


def _real_tokens(ids: list[int], mask: list[int]) -> list[int]:
    return [i for i, m in zip(ids, mask) if m] if not all(mask) else ids


def _block(
    chosen: list[int], rejected: list[int]
) -> tuple[list[int], list[int], list[int], int, int, tuple[int, int, int]]:
    """(ids, positions, segments, last chosen offset, last rejected offset, (prefix, chosen tail,
    rejected tail) lengths) of one pair block."""
    p = shared_prefix_length(chosen, rejected)
    ids = chosen + rejected[p:]
    positions = list(range(len(chosen))) + list(range(p, len(rejected)))
    segments = [PREFIX] * p + [CHOSEN] * (len(chosen) - p) + [REJECTED] * (len(rejected) - p)
    return ids, positions, segments, len(chosen) - 1, len(ids) - 1, (p, len(chosen) - p, len(rejected) - p)


def _best_packing(lengths: list[int], attention_cost_tokens: float | None) -> list[list[int]]:
    """The cheapest first-fit-decreasing packing over capacities from the longest block to all blocks."""
    longest, total = max(lengths), sum(lengths)
    if attention_cost_tokens is None:
        return _pack(lengths, longest)
    best, best_cost = None, float("inf")
    for rows in range(1, len(lengths) + 1):
        bins = _pack(lengths, max(longest, -(-total // rows)))
        width = max(sum(lengths[i] for i in b) for b in bins)
        cost = len(bins) * width * (1 + width / attention_cost_tokens)
        if cost < best_cost:
            best, best_cost = bins, cost
    return best


def _pack(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit-decreasing bins (lists of block indices) of ``capacity`` tokens (>= the longest block)."""
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
