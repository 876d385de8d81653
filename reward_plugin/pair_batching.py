"""Fast pair batching for causal reward models: one shared prompt per pair, several pairs per row.

A decoder's hidden state at a token depends only on the tokens before it, so chosen and rejected,
which usually share a long prompt, can run as one sequence ``[shared prefix | chosen tail |
rejected tail]``: the rejected tail attends to the prefix and to itself (not to the chosen tail),
and its position ids restart where the prefix ends. Both rewards (the head's score at the last
token of each tail) are then exactly those of two separate forward passes. ``packed`` puts several
such pair blocks into one row with a block-diagonal mask (positions restart per pair).

The collators (:mod:`reward_plugin.pair_batching_collator`) write a compact description of the
layout (token ids, position ids, the pair and segment of every token, each block's span, where each
reward is read); :func:`packed_rewards` runs the model once, either with segment attention
(:mod:`reward_plugin.pair_attention`: each block attends on its own, no mask) or with the 4D mask
the model's attention implementation takes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .errors import UnsupportedModelError
from .pair_attention import (
    SPANS_KWARG,
    base_implementation,
    spans_from_batch,
    supports_segment_attention,
    use_segment_attention,
)
from .scoring import ScoreReader, find_head, unwrap_model

logger = logging.getLogger(__name__)

#: Pair-batching modes that lay a pair out as one prefix-shared block.
FAST_MODES = ("prefix_shared", "packed")
#: ``config.model_type`` of the decoders whose attention takes a custom 4D mask and position ids
#: exactly (checked against the standard two-sequence forward by the tests).
SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "mistral", "gemma", "gpt2")
#: Attention implementations that honour a custom 4D mask (flash-attention kernels ignore it).
MASKED_ATTENTION = ("sdpa", "eager", "flex_attention")

#: Segment codes of the ``packed_segments`` batch tensor.
PAD, PREFIX, CHOSEN, REJECTED = -1, 0, 1, 2
#: Batch keys of the prefix-shared/packed layout. ``chosen_index`` comes first so that
#: ``transformers``' ``find_batch_size`` sees the number of pairs, not the number of rows.
PACKED_KEYS = (
    "chosen_index",
    "rejected_index",
    "packed_input_ids",
    "packed_position_ids",
    "packed_pair_ids",
    "packed_segments",
    "packed_spans",
)


def shared_prefix_length(chosen: Sequence[int], rejected: Sequence[int]) -> int:
    """Length of the longest common prefix of two id lists, capped so each keeps >= 1 token of its own.

    Args:
        chosen: token ids of the chosen sequence (no padding).
        rejected: token ids of the rejected sequence (no padding).

    Returns:
        The number of leading tokens the two share, at most ``min(len) - 1``.

    Example::

        >>> shared_prefix_length([1, 2, 3, 4], [1, 2, 5])
        2
        >>> shared_prefix_length([1, 2], [1, 2, 3])
        1
    """
    cap = min(len(chosen), len(rejected)) - 1
    n = 0
    while n < cap and chosen[n] == rejected[n]:
        n += 1
    return max(n, 0)


def unsupported_reason(model: nn.Module) -> str | None:
    """Why the prefix-shared layout cannot be exact for ``model``, or None when it can.

    Args:
        model: the reward model (PEFT/DDP wrappers included).

    Returns:
        A short explanation, or None for a supported decoder.
    """
    base = unwrap_model(model)
    config = getattr(base, "config", None)
    model_type = getattr(config, "model_type", None)
    name = type(base).__name__
    if model_type not in SUPPORTED_MODEL_TYPES:
        return (
            f"{name} (model_type={model_type!r}) is not one of the causal decoders whose attention takes a custom "
            f"4D mask ({', '.join(SUPPORTED_MODEL_TYPES)}); encoders attend in both directions and cannot share a prompt"
        )
    impl = base_implementation(base)
    if impl not in MASKED_ATTENTION:
        return f"{name} uses attn_implementation={impl!r}, which ignores custom 4D masks; load it with 'sdpa' or 'eager'"
    found = find_head(model)
    if found is None or found[0] != "score":
        return f"{name} has no per-token `score` head to read both rewards from"
    peft_config = getattr(model, "peft_config", None)
    if isinstance(peft_config, dict) and any(
        getattr(c, "is_prompt_learning", False) for c in peft_config.values()
    ):
        return "prompt-learning PEFT adapters prepend virtual tokens and a 2D mask"
    return None


def resolve_pair_batching(mode: str, model: nn.Module | None) -> str:
    """The layout a trainer uses for ``RewardConfig.pair_batching=mode`` and this model.

    ``auto`` picks ``packed`` (the fastest exact layout) where the model supports it and otherwise
    falls back to ``standard`` with a one-line warning; an explicit fast mode on an unsupported
    model raises.

    Args:
        mode: ``standard``, ``prefix_shared``, ``packed`` or ``auto``.
        model: the reward model, or None (not built yet: ``standard`` for ``auto``).

    Returns:
        ``standard``, ``prefix_shared`` or ``packed``.

    Raises:
        UnsupportedModelError: an explicit fast mode for a model it cannot run exactly.
    """
    if mode == "standard":
        return mode
    reason = unsupported_reason(model) if model is not None else "no model yet"
    if mode == "auto":
        if reason is None:
            return "packed"
        logger.warning("pair_batching='auto' uses the standard layout: %s", reason)
        return "standard"
    if reason is not None:
        raise UnsupportedModelError(
            f"pair_batching={mode!r} cannot be exact here: {reason}; set pair_batching='standard' (or 'auto', "
            "which falls back to it)"
        )
    return mode


def _mask_plan(config: Any) -> list[tuple[str | None, int | None]]:
    """``(layer type, sliding window)`` of every mask the model needs; a None type means one mask for all layers.

    A custom 4D mask replaces the model's own mask construction, so sliding windows must be in it.
    """
    window = getattr(config, "sliding_window", None)
    if getattr(config, "model_type", None) == "mistral":
        return [(None, window)]
    layer_types = getattr(config, "layer_types", None) or []
    if "sliding_attention" in layer_types and window is not None:
        return [("full_attention", None), ("sliding_attention", int(window))]
    return [(None, None)]


def allowed_pairs(batch: dict[str, torch.Tensor], window: int | None = None) -> torch.Tensor:
    """Boolean ``(rows, 1, T, T)``: whether query token ``q`` may attend key token ``k``.

    Within one pair block attention is causal, except that rejected-tail tokens never see chosen-tail
    tokens; tokens of different pairs never see each other; a padding token sees only itself (so no
    softmax row is empty). ``window`` restricts keys to ``pos(q) - pos(k) < window``.
    """
    pair, seg, pos = batch["packed_pair_ids"], batch["packed_segments"], batch["packed_position_ids"]
    length = pair.shape[1]
    index = torch.arange(length, device=pair.device)
    causal = (index[None, :] <= index[:, None]).unsqueeze(0)
    allowed = (pair[:, :, None] == pair[:, None, :]) & (pair[:, :, None] >= 0) & causal
    allowed &= ~((seg[:, :, None] == REJECTED) & (seg[:, None, :] == CHOSEN))
    if window is not None:
        allowed &= (pos[:, :, None] - pos[:, None, :]) < window
    allowed |= torch.eye(length, dtype=torch.bool, device=pair.device).unsqueeze(0) & (pair < 0)[:, :, None]
    return allowed.unsqueeze(1)


def _flex_mask(batch: dict[str, torch.Tensor], window: int | None) -> Any:
    """A flex-attention ``BlockMask`` with the rule of :func:`allowed_pairs` (computes only visible blocks)."""
    from torch.nn.attention.flex_attention import create_block_mask

    pair, seg, pos = batch["packed_pair_ids"], batch["packed_segments"], batch["packed_position_ids"]

    def mask_mod(b, h, q, k):
        same = (pair[b, q] == pair[b, k]) & (pair[b, q] >= 0) & (k <= q)
        same = same & ~((seg[b, q] == REJECTED) & (seg[b, k] == CHOSEN))
        if window is not None:
            same = same & (pos[b, q] - pos[b, k] < window)
        return same | ((q == k) & (pair[b, q] < 0))

    rows, length = pair.shape
    return create_block_mask(mask_mod, rows, None, length, length, device=pair.device)


def attention_masks(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor | dict[str, Any]:
    """The mask argument for the model's forward: one 4D mask, or a dict per layer type (sliding layers).

    ``sdpa`` gets a boolean mask, ``eager`` an additive float mask, ``flex_attention`` a ``BlockMask``.
    """
    config = unwrap_model(model).config
    impl = base_implementation(model)
    masks: dict[str | None, Any] = {}
    for layer_type, window in _mask_plan(config):
        if impl == "flex_attention":
            mask = _flex_mask(batch, window)
        else:
            mask = allowed_pairs(batch, window)
            if impl == "eager":
                dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
                mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
                    ~mask, torch.finfo(dtype).min
                )
        masks[layer_type] = mask
    return masks.get(None, masks)


def packed_rewards(
    reader: ScoreReader, model: nn.Module, batch: dict[str, torch.Tensor], *, segments: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rewards_chosen, rewards_rejected)``, each ``(pairs,)``, from one forward over a packed batch.

    Args:
        reader: the trainer's :class:`ScoreReader` (its hook captures the head's per-token scores).
        model: the reward model (wrappers included).
        batch: a batch with the :data:`PACKED_KEYS` (from a prefix-shared or packed collator).
        segments: run attention block by block (:mod:`reward_plugin.pair_attention`) where the
            model's implementation allows it (``sdpa``, ``eager``); otherwise, or when False, build
            the dense 4D mask (a flex-attention ``BlockMask`` under ``flex_attention``).

    Returns:
        The chosen and rejected rewards, in the batch's pair order.
    """
    inputs: dict[str, Any] = {"input_ids": batch["packed_input_ids"], "position_ids": batch["packed_position_ids"]}
    if segments and supports_segment_attention(model):
        use_segment_attention(model)
        inputs[SPANS_KWARG] = spans_from_batch(batch)
        # A 4D mask is taken as given, so the model builds none of its own; segment attention ignores it.
        rows = batch["packed_input_ids"].shape[0]
        inputs["attention_mask"] = torch.ones(rows, 1, 1, 1, dtype=torch.bool, device=batch["packed_input_ids"].device)
    else:
        inputs["attention_mask"] = attention_masks(model, batch)
    scores, _ = reader.token_scores(model, **inputs)
    if scores is None:
        raise UnsupportedModelError(
            f"{type(unwrap_model(model)).__name__} returned no per-token scores from its head, so the packed layout "
            "cannot read rewards; set pair_batching='standard'"
        )
    flat = scores.reshape(-1)
    return flat[batch["chosen_index"]], flat[batch["rejected_index"]]


def attention_cost_tokens(model: nn.Module) -> float:
    """Row length at which a token's dense attention costs about as much as its linear layers.

    Per layer and token the linear layers cost ~``2 * P`` FLOPs (``P``: the layer's weights), dense
    attention ~``4 * hidden * T`` for a row of ``T`` tokens, so the two are equal at
    ``T = P / (2 * hidden)``. Used by the packed collator to choose how long its rows are.
    """
    base = unwrap_model(model)
    config = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None) or 1
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None) or 1
    skip = {id(m.weight) for m in base.modules() if isinstance(m, nn.Embedding)}
    weights = sum(p.numel() for p in base.parameters() if id(p) not in skip)
    return max(weights / layers / (2 * hidden), 1.0)


def layout_lengths(chosen: Sequence[Sequence[int]], rejected: Sequence[Sequence[int]]) -> list[int]:
    """Tokens of each pair's prefix-shared block: ``len(chosen) + len(rejected) - shared prefix``."""
    return [len(c) + len(r) - shared_prefix_length(c, r) for c, r in zip(chosen, rejected)]
