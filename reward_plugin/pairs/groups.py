"""Groups: K responses of one prompt in one block ``[prefix | tail 1 | ... | tail K]``, one forward.

A row of the grouped table (:mod:`dataset_formats.groups`) holds a prompt, K responses and the
pairs among them. :class:`GroupCollator` turns a batch of such rows into

- the ``standard`` layout: every response a padded row ``prompt + response`` (K rows per group,
  not 2 per pair: no response is encoded twice), for models without the fast layouts;
- the ``prefix_shared``/``packed`` layouts: one block per group whose tails each attend to the
  shared prefix and causally to themselves (segment attention, :mod:`.attention`, or the dense
  mask of :mod:`.masks`), the prefix encoded once; ``packed`` puts several blocks into one row.

Rows of the four-column pair table are taken too, each as a group of K=2 (``prompt_ids`` empty),
which is exactly the pair layout of :class:`~.collators.PrefixSharedPairCollator`.

:func:`group_rewards` runs the forward and returns one reward per response; the losses over them
are in :mod:`reward_plugin.loss` (:func:`~reward_plugin.loss.group_loss`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dataset_formats.groups import PAIRS_COLUMN, PROMPT_IDS_COLUMN, RESPONSE_IDS_COLUMN, SCORES_COLUMN
from dataset_formats.schema import MARGIN_COLUMN

from ..errors import DataError
from ..scoring import ScoreReader
from .blocks import lay_out_block, lay_out_rows, pack_blocks
from .collators import RewardDataCollatorWithPadding, _as_list
from .forward import packed_scores

#: Layouts a :class:`GroupCollator` writes.
GROUP_LAYOUTS = ("standard", "prefix_shared", "packed")
#: Batch keys of a group batch. ``pair_better`` comes first so that ``transformers``'
#: ``find_batch_size`` sees the number of pairs; evaluation predicts one row per group and unpacks
#: the pairs after the gather (``reward_plugin.group_eval``).
GROUP_KEYS = (
    "pair_better",
    "pair_worse",
    "pair_margin",
    "response_group",
    "response_scores",
    "response_index",
    "group_input_ids",
    "group_attention_mask",
)


def group_sequences(example: Mapping[str, Any], index: int) -> tuple[list[list[int]], list[dict[str, Any]]]:
    """The full token sequences (prompt + response) and the pairs of one row (a group, or a pair as K=2)."""
    if RESPONSE_IDS_COLUMN in example:
        prompt = _as_list(example.get(PROMPT_IDS_COLUMN) or [])
        responses = [_as_list(r) for r in example[RESPONSE_IDS_COLUMN]]
        pairs = [dict(p) for p in example.get(PAIRS_COLUMN) or []]
        where = f"group {index} of the batch"
        if not responses or any(len(r) == 0 for r in responses):
            raise DataError(
                f"{where}: every response needs at least one token; response lengths {[len(r) for r in responses]}"
            )
        if not pairs:
            raise DataError(
                f"{where} has no pairs: a group needs at least one (better, worse) pair to learn from"
            )
        valid = range(len(responses))
        for p in pairs:
            b, w = p.get("better"), p.get("worse")
            if b not in valid or w not in valid or b == w or isinstance(b, bool) or isinstance(w, bool):
                raise DataError(
                    f"{where}: pair {p!r} must name two different responses 0..{len(responses) - 1}"
                )
        return [prompt + r for r in responses], pairs
    # A row of the four-column pair table: the group of its two sequences.
    collator = RewardDataCollatorWithPadding()
    sides = [collator.side_tokens(example, side, index) for side in ("chosen", "rejected")]
    sequences = [[t for t, m in zip(ids, mask) if m] for ids, mask in sides]
    margin = example.get(MARGIN_COLUMN)
    return sequences, [{"better": 0, "worse": 1, "margin": margin}]


@dataclass
class GroupCollator(RewardDataCollatorWithPadding):
    """Collates rows of the grouped table (or pair rows, as groups of two) for one forward per group.

    Each response is cut to ``max_length`` together with the prompt (``prompt + response``, as the
    pair collators cut a side). The batch holds, for ``n`` pairs, ``m`` responses and ``g`` groups:
    ``pair_better``/``pair_worse`` (``(n,)``: indices into the responses), ``pair_margin``
    (``(n,)``, 0.0 where a pair has none), ``response_group`` (``(m,)``: the group of each
    response), ``response_scores`` (``(m,)``, NaN where the group has no scores); then, for
    ``standard``, ``group_input_ids``/``group_attention_mask`` (``(m, T)``); for the fast layouts,
    ``response_index`` (``(m,)``: flat positions in ``rows * T`` of each response's last token) and
    the ``packed_*`` tensors of :class:`~.collators.PrefixSharedPairCollator` with segment codes
    ``0`` prefix, ``k`` tail k (1-based), ``-1`` padding, and ``packed_spans`` of shape
    ``(g, 3 + K_max)``: row, start, prefix and each tail's length (0 past a group's K).

    Args:
        layout: ``standard``, ``prefix_shared`` or ``packed``.
        attention_cost_tokens: as :class:`~.collators.PrefixSharedPairCollator` (``packed`` only).
        (others): as :class:`~.collators.RewardDataCollatorWithPadding`.

    Example::

        >>> collator = GroupCollator(pad_token_id=0)
        >>> batch = collator([{"prompt_ids": [5, 6], "response_ids": [[7], [8, 9], [4]],
        ...     "pairs": [{"better": 0, "worse": 1, "margin": None}, {"better": 0, "worse": 2, "margin": None}],
        ...     "scores": [2.0, 1.0, 0.0]}])
        >>> batch["packed_input_ids"], batch["packed_position_ids"]
        (tensor([[5, 6, 7, 8, 9, 4]]), tensor([[0, 1, 2, 2, 3, 2]]))
        >>> batch["response_index"], batch["pair_worse"]
        (tensor([2, 4, 5]), tensor([1, 2]))
    """

    layout: str = "packed"
    attention_cost_tokens: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layout not in GROUP_LAYOUTS:
            raise ValueError(f"`layout` must be one of {', '.join(GROUP_LAYOUTS)}, got {self.layout!r}")

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not examples:
            raise DataError("cannot collate an empty batch of groups")
        groups, better, worse, margins, owner, scores = [], [], [], [], [], []
        for index, example in enumerate(examples):
            sequences, pairs = group_sequences(example, index)
            if self.max_length is not None:
                sequences = [self._truncate(s) if len(s) > self.max_length else s for s in sequences]
            base = len(owner)
            for p in pairs:
                better.append(base + p["better"])
                worse.append(base + p["worse"])
                margins.append(0.0 if p.get("margin") is None else float(p["margin"]))
            row_scores = example.get(SCORES_COLUMN)
            if row_scores is not None and len(row_scores) != len(sequences):
                raise DataError(
                    f"group {index} of the batch has {len(row_scores)} scores for {len(sequences)} responses"
                )
            scores += [math.nan] * len(sequences) if row_scores is None else [float(s) for s in row_scores]
            owner += [index] * len(sequences)
            groups.append(sequences)
        batch = {
            "pair_better": torch.tensor(better, dtype=torch.long),
            "pair_worse": torch.tensor(worse, dtype=torch.long),
            "pair_margin": torch.tensor(margins, dtype=torch.float32),
            "response_group": torch.tensor(owner, dtype=torch.long),
            "response_scores": torch.tensor(scores, dtype=torch.float32),
        }
        if self.layout == "standard":
            flat = [s for sequences in groups for s in sequences]
            length = self._padded_length(max(map(len, flat)))
            batch["group_input_ids"] = self._pad(flat, length, self.pad_token_id)
            batch["group_attention_mask"] = self._pad([[1] * len(s) for s in flat], length, 0)
            return batch
        batch.update(self._packed(groups))
        return batch

    def _padded_length(self, length: int) -> int:
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        return length

    def _packed(self, groups: list[list[list[int]]]) -> dict[str, torch.Tensor]:
        blocks = [lay_out_block(sequences) for sequences in groups]
        rows = (
            pack_blocks([len(b.ids) for b in blocks], self.attention_cost_tokens)
            if self.layout == "packed"
            else [[i] for i in range(len(blocks))]
        )
        return lay_out_rows(
            blocks, rows, pad_token_id=self.pad_token_id, pad_to_multiple_of=self.pad_to_multiple_of
        )


def group_rewards(
    reader: ScoreReader,
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    *,
    segments: bool = True,
    attention: str | None = None,
) -> torch.Tensor:
    """One reward per response of a :class:`GroupCollator` batch, ``(m,)``, from one forward.

    Args:
        reader: the trainer's :class:`~reward_plugin.scoring.ScoreReader`.
        model: the reward model (wrappers included).
        batch: a batch from :class:`GroupCollator` (any layout).
        segments: fast layouts: segment attention where the model allows it (see
            :func:`~.forward.packed_scores`).
        attention: a ``RewardConfig.pair_attention`` value (see :func:`~.forward.packed_scores`).

    Returns:
        The rewards in the batch's response order (``pair_better``/``pair_worse`` index them).
    """
    if "packed_input_ids" in batch:
        return packed_scores(reader, model, batch, segments=segments, attention=attention)[
            batch["response_index"]
        ]
    return reader.rewards(
        model, input_ids=batch["group_input_ids"], attention_mask=batch["group_attention_mask"]
    )
