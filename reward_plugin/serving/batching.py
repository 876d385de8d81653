"""Token-budget forwards for scoring: group blocks packed without padding, or padded rows for encoders.

The completions of one prompt form a group; a causal decoder scores a group as one block
``[shared prefix | tail 1 | ... | tail K]`` (the group layout of :mod:`reward_plugin.pairs.groups`:
the prefix is encoded once, every tail attends to it and causally to itself), and blocks are laid
end to end in a single row, so a forward holds no padding at all. Each forward holds at most
``token_budget`` tokens (a group too long for one forward is split into several blocks, each with
the prefix again; a single sequence longer than the budget runs alone), so memory stays flat
however many completions come in. Models that cannot run the group layout exactly (encoders,
flash-attention kernels) run padded rows, sorted by length, at most ``token_budget`` tokens of
padded batch per forward; the reward is read at the last attended token either way
(:class:`~reward_plugin.scoring.ScoreReader`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from dataset_formats.prefix import common_prefix_length

from ..pairs.blocks import first_fit_decreasing, lay_out_block, lay_out_rows
from ..pairs.forward import packed_scores
from ..scoring import ScoreReader

#: Default tokens per forward on an accelerator: large forwards keep a GPU busy.
DEFAULT_TOKEN_BUDGET = 16384
#: Default tokens per forward on CPU: past a few thousand tokens the activations leave the caches, and
#: the same tokens took 1.2x as long at 16,384 per forward as at 2,048-4,096 (SmolLM2 shape, 2 cores;
#: benchmarks/token_budget.py, docs/benchmarks.md "The reward server under load").
CPU_TOKEN_BUDGET = 4096


def default_token_budget(device: torch.device | str) -> int:
    """The tokens per forward a scorer uses on ``device`` unless told otherwise."""
    return CPU_TOKEN_BUDGET if torch.device(device).type == "cpu" else DEFAULT_TOKEN_BUDGET


@dataclass
class Block:
    """One group block: the item numbers of its sequences, in order, and its layout
    (:func:`~reward_plugin.pairs.blocks.lay_out_block`)."""

    items: list[int]
    ids: list[int]
    positions: list[int]
    segments: list[int]
    ends: list[int]
    sizes: list[int]


def group_blocks(groups: Sequence[Sequence[tuple[int, list[int]]]], token_budget: int) -> list[Block]:
    """Blocks of ``groups`` (each a list of ``(item, token ids)``), none over ``token_budget`` tokens
    unless one sequence alone is (a group that does not fit is split, its prefix repeated)."""
    blocks: list[Block] = []

    def close(members: list[tuple[int, list[int]]]) -> None:
        blocks.append(Block([k for k, _ in members], *lay_out_block([s for _, s in members])))

    for group in groups:
        current: list[tuple[int, list[int]]] = []
        prefix = total = 0
        for item in group:
            seq = item[1]
            if current:
                first = current[0][1]
                p = min(prefix, common_prefix_length((first, seq)))
                size = p + (total + len(seq)) - (len(current) + 1) * p
                if size > token_budget:
                    close(current)
                    current = []
            if not current:
                current, prefix, total = [item], len(seq) - 1, len(seq)
            else:
                current.append(item)
                prefix, total = p, total + len(seq)
        if current:
            close(current)
    return blocks


def pack_forwards(blocks: list[Block], token_budget: int) -> Iterator[list[Block]]:
    """Blocks in forwards of at most ``token_budget`` tokens, longest first (first fit)."""
    order = first_fit_decreasing([len(b.ids) for b in blocks], token_budget)
    for members in order:
        yield [blocks[i] for i in members]


def packed_batch(blocks: list[Block], device: torch.device | str) -> dict[str, torch.Tensor]:
    """The one-row packed batch of ``blocks`` (keys of :func:`~reward_plugin.pairs.forward.packed_scores`)
    plus ``response_index``: the flat position of every sequence's last token, in block order."""
    batch = lay_out_rows(blocks, [list(range(len(blocks)))])
    return {k: v.to(device) for k, v in batch.items()}


def score_grouped(
    model: nn.Module,
    reader: ScoreReader,
    groups: Sequence[Sequence[tuple[int, list[int]]]],
    *,
    token_budget: int,
    device: torch.device | str,
) -> dict[int, float]:
    """``{item: reward}`` of every sequence of ``groups``, one group-layout forward per token budget."""
    out: dict[int, float] = {}
    for members in pack_forwards(group_blocks(groups, token_budget), token_budget):
        batch = packed_batch(members, device)
        scores = packed_scores(reader, model, batch, segments=True)[batch["response_index"]]
        items = [k for block in members for k in block.items]
        for k, value in zip(items, scores.float().cpu().tolist()):
            out[k] = value
    return out


def score_padded(
    model: nn.Module,
    reader: ScoreReader,
    sequences: Sequence[tuple[int, list[int]]],
    *,
    token_budget: int,
    pad_token_id: int,
    device: torch.device | str,
) -> dict[int, float]:
    """``{item: reward}`` from right-padded rows sorted by length, at most ``token_budget`` padded tokens each."""
    out: dict[int, float] = {}
    ordered = sorted(sequences, key=lambda s: -len(s[1]))
    start = 0
    while start < len(ordered):
        width = len(ordered[start][1])
        rows = max(1, token_budget // max(width, 1))
        chunk = ordered[start : start + rows]
        start += len(chunk)
        ids = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, (_, seq) in enumerate(chunk):
            ids[r, : len(seq)] = torch.tensor(seq)
            mask[r, : len(seq)] = 1
        rewards = reader.rewards(model, input_ids=ids.to(device), attention_mask=mask.to(device))
        for (k, _), value in zip(chunk, rewards.float().cpu().tolist()):
            out[k] = value
    return out


__all__ = [
    "CPU_TOKEN_BUDGET",
    "DEFAULT_TOKEN_BUDGET",
    "default_token_budget",
    "group_blocks",
    "pack_forwards",
    "score_grouped",
    "score_padded",
]
