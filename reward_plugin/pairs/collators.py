"""Collators: rows of tokenized pairs -> batch tensors, in each pair layout.

:class:`RewardDataCollatorWithPadding` pads chosen and rejected into two ``(pairs, T)`` tensors
(the ``standard`` layout, TRL's); :class:`PrefixSharedPairCollator` lays each pair out as one
prefix-shared block and optionally packs blocks into rows (``prefix_shared``, ``packed``; see
:mod:`reward_plugin.pairs.layout`). Both read a pair's sides the same way (:meth:`side_tokens`)
and cut them to ``max_length`` the same way.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from dataset_formats.schema import MARGIN_COLUMN, PAIR_COLUMNS, TIE_COLUMN

from ..errors import DataError
from .blocks import lay_out_block, lay_out_rows, pack_blocks

#: Current TRL's tokenized columns; attention masks are all ones.
TRL_ID_COLUMNS = ("chosen_ids", "rejected_ids")


def missing_columns_message(present: Collection[str], where: str = "the dataset") -> str:
    """The one-line explanation used whenever pair columns are missing."""
    shown = ", ".join(sorted(present)) or "none"
    return (
        f"{where} has no tokenized preference pairs: it needs the columns {', '.join(PAIR_COLUMNS)} "
        f"(or {', '.join(TRL_ID_COLUMNS)}); columns present: {shown}"
    )


@dataclass
class RewardDataCollatorWithPadding:
    """Pads chosen and rejected sequences of a batch of pairs to one common length.

    Each example holds ``input_ids_chosen``, ``attention_mask_chosen``, ``input_ids_rejected`` and
    ``attention_mask_rejected`` (or current TRL's ``chosen_ids``/``rejected_ids``, whose masks are
    all ones), and optionally a float ``margin``. Chosen and rejected are padded to the same length
    (the longest sequence of the batch, rounded up to ``pad_to_multiple_of``) so a trainer can stack
    them into one forward pass.

    Args:
        tokenizer: optional; supplies ``pad_token_id`` and ``padding_side`` when those are not given.
        pad_token_id: id written into padded positions (default 0; only the masks say what is real).
        pad_to_multiple_of: round the padded length up to a multiple of this value.
        max_length: cut sequences longer than this; ``None`` never cuts.
        truncation: ``"left"`` drops the oldest tokens, ``"right"`` the newest.
        keep_token_ids: special token ids (BOS/CLS, EOS/SEP) that survive a cut at their end: a
            leading one on a left cut, a trailing one on a right cut.
        padding_side: ``"right"`` or ``"left"``.

    Example::

        >>> collator = RewardDataCollatorWithPadding(pad_token_id=0)
        >>> batch = collator([
        ...     {"input_ids_chosen": [5, 6, 7], "attention_mask_chosen": [1, 1, 1],
        ...      "input_ids_rejected": [5, 8], "attention_mask_rejected": [1, 1], "margin": 1.5},
        ...     {"input_ids_chosen": [9], "attention_mask_chosen": [1],
        ...      "input_ids_rejected": [9, 4, 4, 2], "attention_mask_rejected": [1, 1, 1, 1], "margin": 0.0},
        ... ])
        >>> batch["input_ids_chosen"]
        tensor([[5, 6, 7, 0],
                [9, 0, 0, 0]])
        >>> batch["attention_mask_rejected"]
        tensor([[1, 1, 0, 0],
                [1, 1, 1, 1]])
        >>> batch["margin"]
        tensor([1.5000, 0.0000])
    """

    tokenizer: Any = None
    pad_token_id: int | None = None
    pad_to_multiple_of: int | None = None
    max_length: int | None = None
    truncation: str = "left"
    keep_token_ids: Collection[int] = field(default_factory=frozenset)
    padding_side: str | None = None
    return_tensors: str = "pt"

    def __post_init__(self) -> None:
        if self.pad_token_id is None:
            tok_pad = getattr(self.tokenizer, "pad_token_id", None)
            self.pad_token_id = int(tok_pad) if tok_pad is not None else 0
        if self.padding_side is None:
            self.padding_side = getattr(self.tokenizer, "padding_side", None) or "right"
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"`padding_side` must be 'left' or 'right', got {self.padding_side!r}")
        if self.truncation not in ("left", "right"):
            raise ValueError(f"`truncation` must be 'left' or 'right', got {self.truncation!r}")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"`max_length` must be a positive integer or None, got {self.max_length!r}")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError(
                f"`pad_to_multiple_of` must be a positive integer or None, got {self.pad_to_multiple_of!r}"
            )
        if self.return_tensors != "pt":
            raise ValueError(f"`return_tensors` must be 'pt' (PyTorch), got {self.return_tensors!r}")
        self.keep_token_ids = frozenset(int(i) for i in self.keep_token_ids)

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not examples:
            raise DataError("cannot collate an empty batch of pairs")
        chosen = [self.side_tokens(example, "chosen", index) for index, example in enumerate(examples)]
        rejected = [self.side_tokens(example, "rejected", index) for index, example in enumerate(examples)]
        margins = self.margins(examples)
        has_margin = margins is not None
        length = max(len(ids) for ids, _ in chosen + rejected)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = {}
        for side, pairs in (("chosen", chosen), ("rejected", rejected)):
            batch[f"input_ids_{side}"] = self._pad([ids for ids, _ in pairs], length, self.pad_token_id)
            batch[f"attention_mask_{side}"] = self._pad([mask for _, mask in pairs], length, 0)
        if has_margin:
            batch[MARGIN_COLUMN] = torch.tensor(margins, dtype=torch.float32)
        ties = self.ties(examples)
        if ties is not None:
            batch[TIE_COLUMN] = ties
        return batch

    @staticmethod
    def ties(examples: Sequence[Mapping[str, Any]]) -> torch.Tensor | None:
        """The optional ``tie`` flag of every pair (``convert --ties tie``) as a bool tensor, or None
        when pair 0 has none; a missing value counts as not a tie."""
        if examples[0].get(TIE_COLUMN) is None:
            return None
        return torch.tensor([bool(example.get(TIE_COLUMN) or False) for example in examples])

    def margins(self, examples: Sequence[Mapping[str, Any]]) -> list[float] | None:
        """The ``margin`` of every pair, or None when pair 0 has none."""
        if MARGIN_COLUMN not in examples[0] or examples[0][MARGIN_COLUMN] is None:
            return None
        margins = []
        for index, example in enumerate(examples):
            value = example.get(MARGIN_COLUMN)
            if value is None:
                raise DataError(
                    f"pair {index} of the batch has no {MARGIN_COLUMN!r} value while pair 0 has one; "
                    "give every pair a margin (0.0 for none) or drop the column"
                )
            margins.append(float(value))
        return margins

    def side_tokens(self, example: Mapping[str, Any], side: str, index: int) -> tuple[list[int], list[int]]:
        """The ``(ids, mask)`` of one side (``chosen``/``rejected``) of pair ``index``, checked and cut to ``max_length``."""
        if f"input_ids_{side}" in example:
            ids_key, mask_key = f"input_ids_{side}", f"attention_mask_{side}"
            if mask_key not in example:
                raise DataError(missing_columns_message(example.keys(), f"pair {index} of the batch"))
            ids, mask = _as_list(example[ids_key]), _as_list(example[mask_key])
        elif f"{side}_ids" in example:
            ids_key, mask_key = f"{side}_ids", None
            ids = _as_list(example[ids_key])
            mask = [1] * len(ids)
        else:
            raise DataError(missing_columns_message(example.keys(), f"pair {index} of the batch"))
        if mask_key is not None and len(mask) != len(ids):
            raise DataError(
                f"pair {index} of the batch: {mask_key!r} has {len(mask)} entries but {ids_key!r} has "
                f"{len(ids)}; the mask must be as long as the ids"
            )
        if not any(mask):
            raise DataError(
                f"pair {index} of the batch: {ids_key!r} is empty ({ids!r}); every side needs at least one token"
            )
        if self.max_length is not None and len(ids) > self.max_length:
            ids, mask = self._truncate(ids), self._truncate(mask, ids)
        return ids, mask

    def _truncate(self, values: list[int], ids: list[int] | None = None) -> list[int]:
        """Cut ``values`` (ids, or a mask aligned with ``ids``) to ``max_length`` on the configured side."""
        ids = values if ids is None else ids
        n = self.max_length
        if self.truncation == "left":
            if n > 1 and ids[0] in self.keep_token_ids:
                return values[:1] + values[len(values) - (n - 1) :]
            return values[len(values) - n :]
        if n > 1 and ids[-1] in self.keep_token_ids:
            return values[: n - 1] + values[-1:]
        return values[:n]

    def _pad(self, rows: list[list[int]], length: int, value: int) -> torch.Tensor:
        out = torch.full((len(rows), length), value, dtype=torch.long)
        for i, row in enumerate(rows):
            if self.padding_side == "right":
                out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            else:
                out[i, length - len(row) :] = torch.tensor(row, dtype=torch.long)
        return out


def _as_list(value: Any) -> list[int]:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "tolist"):  # numpy / pyarrow
        return list(value.tolist())
    return list(value)


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
            layers (see :func:`reward_plugin.pairs.layout.attention_cost_tokens`); packing only.
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
            chosen = _real_tokens(*self.side_tokens(example, "chosen", index))
            rejected = _real_tokens(*self.side_tokens(example, "rejected", index))
            blocks.append(lay_out_block((chosen, rejected)))
        margins = self.margins(examples)
        rows = (
            pack_blocks([len(b.ids) for b in blocks], self.attention_cost_tokens)
            if self.pack
            else [[i] for i in range(len(blocks))]
        )
        # A pair is the group layout with K=2: its two ends are the chosen and rejected rewards.
        laid = lay_out_rows(
            blocks, rows, pad_token_id=self.pad_token_id, pad_to_multiple_of=self.pad_to_multiple_of
        )
        ends = laid.pop("response_index")
        batch = {"chosen_index": ends[0::2].contiguous(), "rejected_index": ends[1::2].contiguous(), **laid}
        if margins is not None:
            batch[MARGIN_COLUMN] = torch.tensor(margins, dtype=torch.float32)
        ties = self.ties(examples)
        if ties is not None:
            batch[TIE_COLUMN] = ties
        return batch


def _real_tokens(ids: list[int], mask: list[int]) -> list[int]:
    return [i for i, m in zip(ids, mask) if m] if not all(mask) else ids
