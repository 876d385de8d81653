"""Segment attention for the prefix-shared and packed pair layouts: no dense ``T x T`` mask.

A packed row holds pair blocks ``[prefix | chosen tail | rejected tail]``, or more generally
group blocks ``[prefix | tail 1 | ... | tail K]`` (a pair is the group of K=2). Within a block the
prefix and the first tail attend causally to each other, and every other tail attends to the
prefix and causally to itself; nothing crosses blocks. A dense 4D mask makes the attention kernel
compute every ``T x T`` score of the row and throw most away, so its cost grows with the square of
the row length and punishes packing. Here every block runs as two small attention calls instead
(``prefix + chosen`` causal, ``rejected`` against ``[prefix, rejected]``), which is what a
variable-length attention kernel does on GPU: ``scaled_dot_product_attention`` on GPU and for long
segments, float32 matmul + softmax for pair-sized segments on CPU (see :func:`_attend`). The
outputs are those of the dense mask (same keys, same order within each softmax) within
floating-point rounding.

Wiring: transformers looks the attention function up by ``config._attn_implementation`` at every
layer call (also when gradient checkpointing recomputes a layer in the backward pass), and passes
the model's extra keyword arguments through to it. :func:`use_segment_attention` registers, once,
an implementation per base implementation (``reward_pairs_sdpa``, ``reward_pairs_eager``) that
runs segment attention when the forward got :data:`SPANS_KWARG` (the varlen backend of :mod:`.varlen`
when it got :data:`.varlen.PLAN_KWARG`), and the base implementation
(with its own mask construction) otherwise, and sets it on the model's config. Plain forwards of
the model therefore behave exactly as before; the name is a runtime attribute that is not saved
with the config.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..hf_internals import (
    attention_function,
    attn_implementation,
    register_attention,
    set_attn_implementation,
)
from ..scoring import unwrap_model
from .varlen import PLAN_KWARG, varlen_pair_attention

#: The forward keyword argument that carries the pair spans to the attention function.
SPANS_KWARG = "reward_pair_spans"
#: Prefix of the attention implementations registered here.
IMPLEMENTATION_PREFIX = "reward_pairs_"
#: Base implementations segment attention can stand in for (both honour custom masks exactly).
BASE_IMPLEMENTATIONS = ("sdpa", "eager")

#: One block: ``(row, start, prefix, tail 1, ..., tail K)`` token counts; a pair block is
#: ``(row, start, prefix, chosen tail, rejected tail)``. Tails of length 0 are padding (a batch of
#: groups of different sizes stores its spans as one zero-padded tensor).
Span = tuple[int, ...]


def spans_from_batch(batch: dict[str, torch.Tensor]) -> tuple[Span, ...]:
    """The ``packed_spans`` tensor of a prefix-shared/packed (pair or group) batch as a tuple of Python spans."""
    return tuple(tuple(int(v) for v in span) for span in batch["packed_spans"].tolist())


#: On CPU, segments with at most this many query x key scores use plain matmul-softmax attention.
CPU_MATH_MAX_SCORES = 512 * 1024

_HIDDEN: dict[torch.device, torch.Tensor] = {}


def _hidden_keys(q_len: int, k_len: int, window: int | None, device: torch.device) -> torch.Tensor:
    """Boolean ``(q_len, k_len)``, True where a key is hidden from a query.

    A segment's queries are its last ``q_len`` tokens (query ``i`` at position ``k_len - q_len + i``
    of the keys), so key ``j`` is hidden when ``j`` lies after the query or, with a sliding
    ``window``, ``window`` or more positions before it. Without a window this is a slice of one
    cached upper-triangular matrix.
    """
    offset = k_len - q_len
    if window is None:
        cached = _HIDDEN.get(device)
        if cached is None or cached.shape[0] < k_len:
            size = max(k_len, 2 * (cached.shape[0] if cached is not None else 512))
            cached = _HIDDEN[device] = torch.ones(size, size, dtype=torch.bool, device=device).triu_(1)
        return cached[offset:k_len, :k_len]
    q_pos = torch.arange(offset, k_len, device=device)[:, None]
    k_pos = torch.arange(k_len, device=device)[None, :]
    return (k_pos > q_pos) | (q_pos - k_pos >= window)


def _attend(
    query,
    key,
    value,
    *,
    window: int | None,
    scaling,
    dropout: float,
    gqa: bool,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal attention of one segment's queries (the last ``q`` of its keys), ``(1, heads, q, head_dim)``.

    On CPU, segments of pair-block size run as matmul + softmax: PyTorch's fused CPU kernel is no
    faster there and keeps memory per new segment shape, which a stream of differently sized pairs
    grows without bound. Longer segments, and other devices, use ``scaled_dot_product_attention``.
    Logit soft-capping (``softcap``: ``tanh(s / c) * c``, Gemma 2) and attention sinks (``sinks``:
    one extra logit per head that takes part in the softmax and is dropped, gpt-oss) are applied
    as the models' eager attention applies them, always on the matmul path.
    """
    q_len, k_len = query.shape[2], key.shape[2]
    if window is not None and k_len <= window:
        window = None  # every key is inside the window
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    plain = softcap is None and sinks is None
    if plain and (query.device.type != "cpu" or q_len * k_len > CPU_MATH_MAX_SCORES):
        plain_causal = window is None and q_len == k_len
        mask = None if plain_causal else ~_hidden_keys(q_len, k_len, window, query.device)
        return F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=mask,
            dropout_p=dropout,
            is_causal=plain_causal,
            scale=scale,
            enable_gqa=gqa,
        )
    if gqa:
        groups = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    # Scaling the queries (q x d) is cheaper than scaling the scores (q x k); matmul saves its
    # inputs, not its output, so the mask can be written into the scores in place.
    scores = (query * scale) @ key.transpose(-1, -2)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores.masked_fill_(_hidden_keys(q_len, k_len, window, query.device), float("-inf"))
    if sinks is not None:
        sink = sinks.reshape(1, -1, 1, 1).expand(1, -1, q_len, 1).to(scores.dtype)
        probs = torch.cat([scores, sink], dim=-1).softmax(dim=-1)[..., :-1]
    else:
        probs = scores.softmax(dim=-1)
    if dropout:
        probs = F.dropout(probs, p=dropout)
    return probs @ value


def segment_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    spans: Sequence[Span],
    *,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention over packed pair (or group) blocks, block by block.

    Args:
        query: ``(rows, heads, T, head_dim)``.
        key: ``(rows, kv_heads, T, head_dim)``; ``heads`` a multiple of ``kv_heads`` (grouped queries).
        value: as ``key``.
        spans: one :data:`Span` per pair or group; tokens outside every span (padding) get a zero
            output.
        scaling: softmax scale (default ``head_dim ** -0.5``).
        dropout: attention dropout probability.
        sliding_window: keys more than ``sliding_window - 1`` positions back are not seen.
        softcap: attention logit soft-cap (Gemma 2), or None.
        sinks: ``(heads,)`` attention-sink logits (gpt-oss), or None.

    Returns:
        ``(rows, T, heads, head_dim)``, the layout transformers' attention functions return.
    """
    if query.device.type == "cpu" and query.dtype in (torch.bfloat16, torch.float16):
        # Attention itself runs in float32 on CPU: every batch brings new segment shapes, and bf16
        # matmuls pay for each new shape in time and in memory that is never returned (200 batches of
        # SmolLM2-sized segments: 3.1x slower and 1.2 GB more RSS than float32, docs/benchmarks.md).
        # The result goes back to the model's compute dtype.
        with torch.autocast("cpu", enabled=False):
            output = attend_segments(
                query.float(), key.float(), value.float(), spans,
                scaling=scaling, dropout=dropout, sliding_window=sliding_window, softcap=softcap,
                sinks=None if sinks is None else sinks.float(),
            )  # fmt: skip
        return output.to(query.dtype)
    return attend_segments(
        query, key, value, spans, scaling=scaling, dropout=dropout, sliding_window=sliding_window,
        softcap=softcap, sinks=sinks,
    )  # fmt: skip


def attend_segments(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    spans: Sequence[Span],
    *,
    scaling: float | None,
    dropout: float,
    sliding_window: int | None,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`segment_attention` in the inputs' own dtype (no float32 upcast on CPU)."""
    rows, heads, length, head_dim = query.shape
    gqa = key.shape[1] != heads
    by_row: list[list[Span]] = [[] for _ in range(rows)]
    for span in spans:
        by_row[span[0]].append(span)
    out_rows = []
    # One split per tensor and row (not a slice per segment): autograd then writes each gradient
    # once into one row-sized buffer instead of one buffer per slice.
    for row, (q_row, k_row, v_row) in enumerate(zip(query.split(1), key.split(1), value.split(1))):
        # Split sizes along the row: padding gaps, and per block [prefix + first tail, tail 2, ...,
        # tail K]; `blocks` holds each block's (prefix length, K), None for a gap.
        sizes: list[int] = []
        blocks: list[tuple[int, int] | None] = []
        cursor = 0
        for _, start, prefix, *tails in sorted(by_row[row], key=lambda s: s[1]):
            tails = [t for t in tails if t > 0]
            if start > cursor:
                sizes.append(start - cursor)
                blocks.append(None)
            sizes += [prefix + tails[0], *tails[1:]]
            blocks.append((prefix, len(tails)))
            cursor = start + prefix + sum(tails)
        if cursor < length:
            sizes.append(length - cursor)
            blocks.append(None)
        q_parts, k_parts, v_parts = (t.split(sizes, dim=2) for t in (q_row, k_row, v_row))
        pieces, part = [], 0
        for block in blocks:
            if block is None:  # padding: no keys to attend, a zero output
                pieces.append(query.new_zeros(1, heads, sizes[part], head_dim))
                part += 1
                continue
            prefix, count = block
            q_head, k_head, v_head = q_parts[part], k_parts[part], v_parts[part]
            options = {
                "window": sliding_window, "scaling": scaling, "dropout": dropout, "gqa": gqa,
                "softcap": softcap, "sinks": sinks,
            }  # fmt: skip
            pieces.append(_attend(q_head, k_head, v_head, **options))
            # Every further tail (the rejected one of a pair) continues the prefix (positions
            # prefix..prefix+tail-1) and never sees the other tails.
            for q_tail, k_tail, v_tail in zip(
                *(parts[part + 1 : part + count] for parts in (q_parts, k_parts, v_parts))
            ):
                keys = torch.cat([k_head[:, :, :prefix], k_tail], dim=2)
                values = torch.cat([v_head[:, :, :prefix], v_tail], dim=2)
                pieces.append(_attend(q_tail, keys, values, **options))
            part += count
        out_rows.append(torch.cat(pieces, dim=2))
    return torch.cat(out_rows, dim=0).transpose(1, 2).contiguous()


def _make_attention_function(base: str):
    def attention(
        module: nn.Module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs: Any
    ):
        spans = kwargs.pop(SPANS_KWARG, None)
        plan = kwargs.pop(PLAN_KWARG, None)
        if plan is not None:
            window = kwargs.get("sliding_window", getattr(module, "sliding_window", None))
            output = varlen_pair_attention(
                query, key, value, plan, scaling=scaling, dropout=dropout, sliding_window=window or None
            )
            return output, None
        if spans is None:
            return attention_function(base, module)(
                module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
            )
        window = kwargs.get("sliding_window", getattr(module, "sliding_window", None))
        output = segment_attention(
            query, key, value, spans, scaling=scaling, dropout=dropout, sliding_window=window or None,
            softcap=kwargs.get("softcap"), sinks=kwargs.get("s_aux"),
        )  # fmt: skip
        return output, None

    attention.__name__ = f"reward_pairs_{base}_attention"
    return attention


_REGISTERED: set[str] = set()


def _register(base: str) -> str:
    name = IMPLEMENTATION_PREFIX + base
    if name not in _REGISTERED:
        register_attention(name, _make_attention_function(base), mask_like=base)
        _REGISTERED.add(name)
    return name


def base_implementation(model: nn.Module) -> str:
    """The model's attention implementation without the segment-attention wrapper."""
    impl = attn_implementation(unwrap_model(model).config) or "eager"
    return impl.removeprefix(IMPLEMENTATION_PREFIX)


def supports_segment_attention(model: nn.Module) -> bool:
    """Whether the model's attention can run as segment attention (``sdpa`` or ``eager``)."""
    return base_implementation(model) in BASE_IMPLEMENTATIONS


def use_pair_attention(model: nn.Module) -> None:
    """Route the model's attention through the pair backends (segments or varlen) when a forward carries their argument.

    Like :func:`use_segment_attention`, for any base implementation (flash-attention models run the
    varlen backend only). Idempotent.
    """
    set_attn_implementation(unwrap_model(model), _register(base_implementation(model)))


def use_segment_attention(model: nn.Module) -> None:
    """Route the model's attention through segment attention when a forward carries the spans.

    Idempotent. Forwards without :data:`SPANS_KWARG` run the model's own implementation.
    """
    base = base_implementation(model)
    if base not in BASE_IMPLEMENTATIONS:
        raise ValueError(f"segment attention stands in for {BASE_IMPLEMENTATIONS}, not {base!r}")
    set_attn_implementation(unwrap_model(model), _register(base))
