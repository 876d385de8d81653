"""The batch plan: how every batch of a trainer goes through the model, settled once.

What depends on the model and the data (the pair layout, the collator, whether the fast layouts
run segment attention, how packed rows are filled, how rewards are read from a batch) is decided
once when the trainer is built (:meth:`BatchPlan.build`), logged once, and used by every path:
training, ``evaluate``, ``predict``, the reward statistics and ``reward-plugin eval``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dataset_formats.groups import GROUP_COLUMNS, SCORES_COLUMN
from dataset_formats.schema import MARGIN_COLUMN, PAIR_COLUMNS, TIE_COLUMN

from ..errors import DataError
from ..loss import group_loss, pairwise_loss
from ..pairs import (
    FAST_MODES,
    PACKED_KEYS,
    PrefixSharedPairCollator,
    RewardDataCollatorWithPadding,
    attention_cost_tokens,
    packed_rewards,
    resolve_pair_batching,
)
from ..pairs.backends import resolve_pair_attention
from ..pairs.groups import GROUP_KEYS, GroupCollator, group_rewards
from ..scoring import ScoreReader
from ..ties import davidson_loss

#: Every column a collator of a plan reads (Trainer drops the others when it may).
PLAN_COLUMNS = (
    *PAIR_COLUMNS,
    "chosen_ids",
    "rejected_ids",
    MARGIN_COLUMN,
    TIE_COLUMN,
    *PACKED_KEYS,
    *GROUP_COLUMNS,
    SCORES_COLUMN,
    *GROUP_KEYS,
)
#: The pair collators a plan builds: a trainer replaces them when a grouped set arrives later.
PAIR_COLLATORS = (RewardDataCollatorWithPadding, PrefixSharedPairCollator)


@dataclass(frozen=True)
class BatchPlan:
    """How batches are laid out, collated and read.

    Attributes:
        layout: ``standard``, ``prefix_shared`` or ``packed`` (``RewardConfig.pair_batching``
            resolved for the model).
        grouped: the data is a grouped table: groups are collated (pair rows too, as groups of two).
        attention: ``RewardConfig.pair_attention`` (resolved per device by
            :func:`~reward_plugin.pairs.backends.resolve_pair_attention`).
        segments: the fast layouts attend without a dense mask (segments, varlen or flex: rows then
            need no length cap); False for the dense 4D mask.
        attention_cost: the ``packed`` collator's row-length cost (infinite without a dense mask,
            where a token costs the same in any row); None for the other layouts.
        options: cutting and padding, shared by every collator of the plan.
    """

    layout: str = "standard"
    grouped: bool = False
    attention: str = "auto"
    segments: bool = False
    attention_cost: float | None = None
    options: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def build(
        cls, args: Any, model: nn.Module | None, tokenizer: Any, pad_token_id: int, *, grouped: bool = False
    ) -> BatchPlan:
        """The plan for ``args`` (a ``RewardConfig``), this model (None: not built yet) and tokenizer."""
        layout = (
            resolve_pair_batching(args.pair_batching, model, args.pair_attention)
            if model is not None
            else "standard"
        )
        backend = (
            resolve_pair_attention(args.pair_attention, model, args.device)
            if model is not None and layout in FAST_MODES
            else None
        )
        segments = backend is not None and backend.name != "mask"
        cost = None
        if layout == "packed" and model is not None:
            cost = math.inf if segments else attention_cost_tokens(model)
        keep = {getattr(tokenizer, f"{kind}_token_id", None) for kind in ("bos", "eos", "cls", "sep")}
        options = {
            "pad_token_id": pad_token_id,
            "pad_to_multiple_of": args.pad_to_multiple_of,
            "max_length": args.max_length,
            "truncation": args.truncation,
            "keep_token_ids": {i for i in keep if isinstance(i, int)} if tokenizer is not None else set(),
            "padding_side": "right",
        }
        return cls(layout, grouped, args.pair_attention, segments, cost, options)

    def for_groups(self) -> BatchPlan:
        """The same plan for a grouped table."""
        return dataclasses.replace(self, grouped=True)

    def describe(self) -> str:
        """One line for the log."""
        attention = f", pair_attention={self.attention}" if self.layout in FAST_MODES else ""
        data = "groups" if self.grouped else "pairs"
        return f"batch plan: {data} in the {self.layout} layout{attention}"

    def collator(self) -> Callable:
        """The collator of this plan.

        Groups: :class:`GroupCollator` in the plan's layout. Pairs: ``standard`` pads chosen and
        rejected rows (:class:`RewardDataCollatorWithPadding`); ``prefix_shared`` and ``packed``
        write one block per pair (:class:`PrefixSharedPairCollator`).
        """
        if self.grouped:
            return GroupCollator(
                **self.options, layout=self.layout, attention_cost_tokens=self.attention_cost
            )
        if self.layout in FAST_MODES:
            return PrefixSharedPairCollator(
                **self.options, pack=self.layout == "packed", attention_cost_tokens=self.attention_cost
            )
        return RewardDataCollatorWithPadding(**self.options)

    def rewards_and_loss(
        self,
        reader: ScoreReader,
        model: nn.Module,
        batch: dict[str, Any],
        args: Any,
        *,
        tie_strength: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(rewards of the chosen / better, of the rejected / worse side of each pair, loss)`` of a batch.

        A group batch (``pair_better``) gets the group loss ``args.group_loss`` over one forward
        per group; a pair batch the pairwise loss (with its ``margin`` column when present), or, when
        it has a ``tie`` column, the Davidson loss with ``tie_strength`` (:mod:`reward_plugin.ties`).
        """
        if "pair_better" in batch:
            rewards = self.response_rewards(reader, model, batch)
            better, worse = batch["pair_better"], batch["pair_worse"]
            loss = group_loss(
                rewards,
                better,
                worse,
                kind=args.group_loss,
                margin=batch["pair_margin"],
                scores=batch["response_scores"],
                groups=batch["response_group"],
                center_rewards_coefficient=args.center_rewards_coefficient,
            )
            return rewards[better], rewards[worse], loss
        chosen, rejected = self.pair_rewards(reader, model, batch)
        if TIE_COLUMN in batch:
            loss = davidson_loss(
                chosen,
                rejected,
                batch[TIE_COLUMN],
                tie_strength=tie_strength,
                margin=batch.get(MARGIN_COLUMN),
                center_rewards_coefficient=args.center_rewards_coefficient,
            )
            return chosen, rejected, loss
        loss = pairwise_loss(
            chosen,
            rejected,
            margin=batch.get(MARGIN_COLUMN),
            center_rewards_coefficient=args.center_rewards_coefficient,
        )
        return chosen, rejected, loss

    def response_rewards(self, reader: ScoreReader, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """One reward per response of a group batch, ``(m,)``."""
        return group_rewards(reader, model, batch, attention=self.attention)

    def pair_rewards(
        self, reader: ScoreReader, model: nn.Module, batch: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rewards_chosen, rewards_rejected)``, each ``(pairs,)``, of a pair batch, from one forward.

        Fast layouts (a :class:`PrefixSharedPairCollator` batch): both rewards read from the head's
        per-token scores. TRL's layout (``input_ids``: chosen rows, then rejected rows). Standard:
        chosen and rejected rows stacked along the batch dimension, padded to one length.
        """
        if "packed_input_ids" in batch:
            return packed_rewards(reader, model, batch, attention=self.attention)
        if "input_ids_chosen" not in batch and "input_ids" in batch:
            rewards = reader.rewards(
                model, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            )
            return rewards.chunk(2)
        missing = [key for key in PAIR_COLUMNS if key not in batch]
        if missing:
            raise DataError(
                f"the batch has no {', '.join(missing)}; it holds {', '.join(sorted(batch))}: use "
                "RewardDataCollatorWithPadding (the default) or a collator that returns the four pair columns"
            )
        chosen_ids, rejected_ids = batch["input_ids_chosen"], batch["input_ids_rejected"]
        length = max(chosen_ids.shape[1], rejected_ids.shape[1])

        def widen(t: torch.Tensor, value: int) -> torch.Tensor:
            return nn.functional.pad(t, (0, length - t.shape[1]), value=value) if t.shape[1] < length else t

        pad = self.options.get("pad_token_id") or 0
        input_ids = torch.cat([widen(chosen_ids, pad), widen(rejected_ids, pad)])
        mask = torch.cat(
            [widen(batch["attention_mask_chosen"], 0), widen(batch["attention_mask_rejected"], 0)]
        )
        rewards = reader.rewards(model, input_ids=input_ids, attention_mask=mask)
        return rewards[: chosen_ids.shape[0]], rewards[chosen_ids.shape[0] :]


def pair_predictions(
    inputs: dict[str, Any], rewards_chosen: torch.Tensor, rewards_rejected: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rewards, labels)`` of a pair batch for the eval loop: rewards ``(n, 2)`` (chosen, rejected)
    in fp32, labels the batch's margins (``margin`` or a group batch's ``pair_margin``), zeros without."""
    rewards = torch.stack([rewards_chosen, rewards_rejected], dim=1).float()
    margin = inputs.get(MARGIN_COLUMN, inputs.get("pair_margin"))
    labels = margin.float() if margin is not None else torch.zeros(rewards.shape[0], device=rewards.device)
    return rewards, labels
