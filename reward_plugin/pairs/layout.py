"""The prefix-shared and packed pair layouts: whether a model can use them, and how long their blocks are.

A decoder's hidden state at a token depends only on the tokens before it, so chosen and rejected,
which usually share a long prompt, can run as one sequence ``[shared prefix | chosen tail |
rejected tail]``: the rejected tail attends to the prefix and to itself (not to the chosen tail),
and its position ids restart where the prefix ends. Both rewards (the head's score at the last
token of each tail) are then exactly those of two separate forward passes. ``packed`` puts several
such pair blocks into one row (positions restart per pair).

The package's modules, in data-flow order: :mod:`.layout` (this one: modes, segment codes, block
lengths), :mod:`.collators` (rows of pairs -> batch tensors), :mod:`.masks` (the dense 4D mask of a
layout), :mod:`.attention` (segment attention: each block on its own, no mask) and :mod:`.forward`
(one model forward -> chosen and rejected rewards). What they borrow from transformers' internals
lives in :mod:`reward_plugin.hf_internals`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from torch import nn

# Defined once, with the dataset toolkit (inspect reports the same prefix); re-exported here.
from dataset_formats.prefix import shared_prefix_length

from ..errors import UnsupportedModelError
from ..scoring import find_head, unwrap_model
from .attention import base_implementation
from .coverage_table import model_type_reason

logger = logging.getLogger(__name__)

#: Pair-batching modes that lay a pair out as one prefix-shared block.
FAST_MODES = ("prefix_shared", "packed")
#: Attention implementations that honour a custom 4D mask (flash-attention kernels ignore it).
MASKED_ATTENTION = ("sdpa", "eager", "flex_attention")
#: Flash-attention implementations, packed through the varlen backend (``pair_attention`` auto/varlen/flex).
FLASH_ATTENTION = ("flash_attention_2", "flash_attention_3")

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


def unsupported_reason(model: nn.Module, attention: str = "segments") -> str | None:
    """Why the prefix-shared layout cannot be exact for ``model``, or None when it can.

    Which model types are exact, with which attention implementation and ``attention`` path, is
    proven per type on a tiny random instance (:mod:`.coverage`, docs/models.md), not listed here.

    Args:
        model: the reward model (PEFT/DDP wrappers included).
        attention: ``RewardConfig.pair_attention`` (``mask`` is judged by the dense-mask result, the
            block-wise backends by the segment result).

    Returns:
        A short explanation, or None for a supported decoder.
    """
    base = unwrap_model(model)
    config = getattr(base, "config", None)
    model_type = getattr(config, "model_type", None)
    name = type(base).__name__
    impl = base_implementation(base)
    # Flash-attention kernels ignore custom masks; the varlen backend runs them with their own varlen function.
    if impl not in MASKED_ATTENTION and impl not in FLASH_ATTENTION:
        return f"{name} uses attn_implementation={impl!r}, which ignores custom 4D masks; load it with 'sdpa', 'eager' or a flash-attention implementation"
    # The coverage table records the sdpa/eager paths: the block-wise backends (segments, varlen, flex)
    # run each block through the model's own attention function as segments do; flash models are
    # judged by their sdpa result (same modules, another kernel).
    checked_impl = "sdpa" if impl in FLASH_ATTENTION else impl
    reason = model_type_reason(model_type, checked_impl, "mask" if attention == "mask" else "segments")
    if reason is not None:
        return f"{name}: {reason}"
    found = find_head(model)
    if found is None or found[0] != "score":
        return f"{name} has no per-token `score` head to read both rewards from"
    peft_config = getattr(model, "peft_config", None)
    if isinstance(peft_config, dict) and any(
        getattr(c, "is_prompt_learning", False) for c in peft_config.values()
    ):
        return "prompt-learning PEFT adapters prepend virtual tokens and a 2D mask"
    return None


def resolve_pair_batching(mode: str, model: nn.Module | None, attention: str = "segments") -> str:
    """The layout a trainer uses for ``RewardConfig.pair_batching=mode`` and this model.

    ``auto`` picks ``packed`` (the fastest exact layout) where the model supports it and otherwise
    falls back to ``standard`` with a one-line warning; an explicit fast mode on an unsupported
    model raises.

    Args:
        mode: ``standard``, ``prefix_shared``, ``packed`` or ``auto``.
        model: the reward model, or None (not built yet: ``standard`` for ``auto``).
        attention: ``RewardConfig.pair_attention`` (``mask`` is judged by the dense-mask result, the
            block-wise backends by the segment result).

    Returns:
        ``standard``, ``prefix_shared`` or ``packed``.

    Raises:
        UnsupportedModelError: an explicit fast mode for a model it cannot run exactly.
    """
    if mode == "standard":
        return mode
    reason = unsupported_reason(model, attention) if model is not None else "no model yet"
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
