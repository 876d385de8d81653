"""One model forward over a prefix-shared/packed batch: the head's score at every token, and the
chosen and rejected reward of every pair (a group batch reads its K rewards per group from the same
scores, see :mod:`.groups`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import UnsupportedModelError
from ..scoring import ScoreReader, unwrap_model
from .attention import (
    SPANS_KWARG,
    spans_from_batch,
    supports_segment_attention,
    use_pair_attention,
    use_segment_attention,
)
from .backends import resolve_pair_attention
from .masks import attention_masks
from .varlen import PLAN_KWARG, varlen_plan


def packed_rewards(
    reader: ScoreReader,
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    *,
    segments: bool = True,
    attention: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rewards_chosen, rewards_rejected)``, each ``(pairs,)``, from one forward over a packed batch.

    Args:
        reader: the trainer's :class:`ScoreReader` (its hook captures the head's per-token scores).
        model: the reward model (wrappers included).
        batch: a batch with the :data:`PACKED_KEYS` (from a prefix-shared or packed collator).
        segments: see :func:`packed_scores`.
        attention: see :func:`packed_scores`.

    Returns:
        The chosen and rejected rewards, in the batch's pair order.
    """
    flat = packed_scores(reader, model, batch, segments=segments, attention=attention)
    return flat[batch["chosen_index"]], flat[batch["rejected_index"]]


def packed_scores(
    reader: ScoreReader,
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    *,
    segments: bool = True,
    attention: str | None = None,
) -> torch.Tensor:
    """The head's score at every token of a packed (pair or group) batch, flat ``(rows * T,)``.

    Args:
        reader: the trainer's :class:`ScoreReader` (its hook captures the head's per-token scores).
        model: the reward model (wrappers included).
        batch: ``packed_input_ids``, ``packed_position_ids``, ``packed_spans`` (and, for the dense
            mask, ``packed_pair_ids`` and ``packed_segments``).
        segments: run attention block by block (:mod:`.attention`) where the
            model's implementation allows it (``sdpa``, ``eager``); otherwise, or when False, build
            the dense 4D mask (a flex-attention ``BlockMask`` under ``flex_attention``).
        attention: a ``RewardConfig.pair_attention`` value, resolved for this model and the batch's
            device by :func:`.backends.resolve_pair_attention`; when given it replaces ``segments``.

    Returns:
        The scores; a reward is the score at its sequence's last token.
    """
    inputs: dict[str, Any] = {
        "input_ids": batch["packed_input_ids"],
        "position_ids": batch["packed_position_ids"],
    }
    if attention is None:
        attention = "segments" if segments else "mask"
    backend = resolve_pair_attention(attention, model, batch["packed_input_ids"].device)
    rows, length = batch["packed_input_ids"].shape
    if backend.name in ("varlen", "flex"):
        use_pair_attention(model)
        # The sequences' offsets and the key gather index, once per batch for every layer.
        plan = varlen_plan(
            spans_from_batch(batch), rows, length, batch["packed_input_ids"].device, backend.kernel
        )
        inputs[PLAN_KWARG] = plan
        inputs["attention_mask"] = torch.ones(
            rows, 1, 1, 1, dtype=torch.bool, device=batch["packed_input_ids"].device
        )
    elif backend.name == "segments" and supports_segment_attention(model):
        use_segment_attention(model)
        inputs[SPANS_KWARG] = spans_from_batch(batch)
        # A 4D mask is taken as given, so the model builds none of its own; segment attention ignores it.
        inputs["attention_mask"] = torch.ones(
            rows, 1, 1, 1, dtype=torch.bool, device=batch["packed_input_ids"].device
        )
    else:
        inputs["attention_mask"] = attention_masks(model, batch)
    scores, _ = reader.token_scores(model, **inputs)
    if scores is None:
        raise UnsupportedModelError(
            f"{type(unwrap_model(model)).__name__} returned no per-token scores from its head, so the packed layout "
            "cannot read rewards; set pair_batching='standard'"
        )
    return scores.reshape(-1)
