"""The dense attention mask of a prefix-shared/packed batch (``pair_attention: mask``, and flex attention).

Segment attention (:mod:`.attention`) needs no mask; these masks are the reference it is tested
against and the path for attention implementations it does not stand in for.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..scoring import unwrap_model
from .attention import base_implementation
from .layout import PREFIX


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
    if not layer_types and window is not None:  # one window for every layer (Mistral-style configs)
        return [(None, int(window))]
    return [(None, None)]


def allowed_pairs(batch: dict[str, torch.Tensor], window: int | None = None) -> torch.Tensor:
    """Boolean ``(rows, 1, T, T)``: whether query token ``q`` may attend key token ``k``.

    Within one pair block attention is causal, except that rejected-tail tokens never see chosen-tail
    tokens (in a group block, a tail sees the prefix and itself, no other tail); tokens of different
    blocks never see each other; a padding token sees only itself (so no softmax row is empty). ``window`` restricts keys to ``pos(q) - pos(k) < window``.
    """
    pair, seg, pos = batch["packed_pair_ids"], batch["packed_segments"], batch["packed_position_ids"]
    length = pair.shape[1]
    index = torch.arange(length, device=pair.device)
    causal = (index[None, :] <= index[:, None]).unsqueeze(0)
    allowed = (pair[:, :, None] == pair[:, None, :]) & (pair[:, :, None] >= 0) & causal
    # A key is visible when it is in the prefix or in the query's own segment (causality already
    # hides every later segment: for a pair, chosen tokens from the rejected tail).
    allowed &= (seg[:, None, :] == PREFIX) | (seg[:, None, :] == seg[:, :, None])
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
        same = same & ((seg[b, k] == PREFIX) | (seg[b, k] == seg[b, q]))
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
