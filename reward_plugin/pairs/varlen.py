"""Variable-length pair attention: one kernel call per layer for every block of a packed batch.

A packed row holds blocks ``[prefix | tail 1 | ... | tail K]`` (a pair block has two tails). As
variable-length sequences these are: ``[prefix | tail 1]`` (its queries and keys are the same
contiguous tokens), and for every further tail the queries ``tail k`` against the keys
``[prefix | tail k]``. Padding gaps are sequences of their own (their outputs are never read). So
the queries stay where they are (the batch flattened to ``(rows * T, heads, head_dim)``), and only
the keys and values are gathered, once per layer, by one ``index_select`` with an index computed
once per batch (:func:`varlen_plan`). One causal variable-length call then attends every sequence:
a query sees the keys up to its own position, with queries aligned to the END of their keys
(bottom-right: the ``i``-th of ``q`` queries is key position ``k - q + i``), which is how a tail's
queries continue the prefix.

Kernels (same arguments, same alignment; :data:`KERNELS`):

- ``flash_attn_2`` / ``flash_attn_3``: flash-attn's ``flash_attn_varlen_func`` (for models loaded
  with ``flash_attention_2``/``3``); grouped queries and sliding windows native.
- ``torch``: ``torch.nn.attention.varlen.varlen_attn`` (CUDA); causal as ``window_size=(-1, 0)``.
  Releases without its ``enable_gqa`` argument (torch 2.11) get the KV heads repeated.
  It and flash-attn take float16/bfloat16 only: float32 attention (a float32 model without
  autocast) runs the reference kernel instead, with a one-time warning.
- ``flex``: flex attention with a ``BlockMask`` over the same sequences (compiled on GPU; on CPU
  its forward only: torch has no flex backward on CPU).
- ``reference``: a portable kernel (float32 matmul + softmax per sequence, with its own backward),
  registered as one operator ``reward_plugin::varlen_reference`` so it dispatches as one call like
  the CUDA kernels. It runs the backend where no CUDA kernel exists, and is the kernel the tests
  check against the dense mask.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import UnsupportedModelError

#: The forward keyword argument that carries the :class:`VarlenPlan` to the attention function.
PLAN_KWARG = "reward_pair_varlen"
#: Kernel names, in the order ``auto`` prefers them.
KERNELS = ("flash_attn_3", "flash_attn_2", "torch", "flex", "reference")
#: Kernels that run float16/bfloat16 only (float32 inputs go to the reference kernel, with a warning).
HALF_PRECISION_KERNELS = ("flash_attn_3", "flash_attn_2", "torch")

logger = logging.getLogger(__name__)
_WARNED: set[str] = set()


@dataclass
class VarlenPlan:
    """Per-batch offsets of a packed batch's variable-length sequences (built once, used by every layer).

    Attributes:
        kernel: one of :data:`KERNELS`.
        rows, length: the packed batch's shape; queries are its ``rows * length`` tokens in order.
        cu_q, cu_k: ``(sequences + 1,)`` int32 cumulative query and key lengths.
        gather: ``(keys,)`` int64 token index of every key (``[prefix | tail k]`` per sequence).
        max_q, max_k: the longest query and key sequence.
    """

    kernel: str
    rows: int
    length: int
    cu_q: torch.Tensor
    cu_k: torch.Tensor
    gather: torch.Tensor
    max_q: int
    max_k: int
    _block_masks: dict[int | None, Any] = field(default_factory=dict, repr=False)

    def block_mask(self, window: int | None) -> Any:
        """The flex-attention ``BlockMask`` of these sequences (cached per window, shared by the layers)."""
        if window not in self._block_masks:
            self._block_masks[window] = _flex_block_mask(self, window)
        return self._block_masks[window]


def varlen_plan(
    spans: Sequence[Sequence[int]], rows: int, length: int, device: torch.device | str, kernel: str
) -> VarlenPlan:
    """The :class:`VarlenPlan` of a packed batch from its spans (``(row, start, prefix, tail 1, ...)``).

    Args:
        spans: one span per pair or group block (:func:`.attention.spans_from_batch`); tails of
            length 0 are group padding.
        rows, length: the shape of ``packed_input_ids``.
        device: where the offsets go (the batch's device).
        kernel: the kernel the plan is for (one of :data:`KERNELS`).
    """
    by_row: list[list[Sequence[int]]] = [[] for _ in range(rows)]
    for span in spans:
        by_row[span[0]].append(span)
    q_lens: list[int] = []
    k_lens: list[int] = []
    runs: list[tuple[int, int]] = []  # (first token, count) of consecutive keys, in key order

    def sequence(q_len: int, keys: list[tuple[int, int]]) -> None:
        q_lens.append(q_len)
        k_lens.append(sum(n for _, n in keys))
        runs.extend(keys)

    for row in range(rows):
        base, cursor = row * length, 0
        for _, start, prefix, *tails in sorted(by_row[row], key=lambda s: s[1]):
            tails = [t for t in tails if t > 0]
            if start > cursor:
                sequence(start - cursor, [(base + cursor, start - cursor)])
            first = prefix + tails[0]
            sequence(first, [(base + start, first)])
            position = start + first
            for tail in tails[1:]:
                sequence(tail, [(base + start, prefix), (base + position, tail)])
                position += tail
            cursor = position
        if cursor < length:
            sequence(length - cursor, [(base + cursor, length - cursor)])
    counts = torch.tensor([n for _, n in runs], dtype=torch.long)
    firsts = torch.tensor([b for b, _ in runs], dtype=torch.long)
    # Key i of run r is token firsts[r] + (i - first key of run r).
    run_start = torch.cumsum(counts, 0) - counts
    gather = torch.arange(int(counts.sum())) + torch.repeat_interleave(firsts - run_start, counts)

    def cumulative(lens: list[int]) -> torch.Tensor:
        return torch.tensor([0, *lens], dtype=torch.int64).cumsum(0).to(torch.int32)

    return VarlenPlan(
        kernel=kernel,
        rows=rows,
        length=length,
        cu_q=cumulative(q_lens).to(device),
        cu_k=cumulative(k_lens).to(device),
        gather=gather.to(device),
        max_q=max(q_lens),
        max_k=max(k_lens),
    )


def varlen_pair_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    plan: VarlenPlan,
    *,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
) -> torch.Tensor:
    """Attention over a packed batch's blocks in one variable-length kernel call.

    Args:
        query: ``(rows, heads, T, head_dim)``.
        key: ``(rows, kv_heads, T, head_dim)``; ``heads`` a multiple of ``kv_heads``.
        value: as ``key``.
        plan: the batch's :class:`VarlenPlan`.
        scaling: softmax scale (default ``head_dim ** -0.5``).
        dropout: attention dropout probability (flash-attn kernels only).
        sliding_window: a query sees keys less than ``sliding_window`` positions back.

    Returns:
        ``(rows, T, heads, head_dim)``, the layout transformers' attention functions return; the
        outputs at padding tokens are unspecified (nothing reads them).
    """
    rows, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    scale = scaling if scaling is not None else dim**-0.5
    window = sliding_window or None
    if dropout and not plan.kernel.startswith("flash_attn"):
        raise UnsupportedModelError(
            f"the {plan.kernel} varlen kernel has no attention dropout (the model asks for {dropout}); set the "
            "model's attention dropout to 0 or use pair_attention='segments' or 'mask'"
        )
    q = query.transpose(1, 2).reshape(rows * length, heads, dim)
    k = key.transpose(1, 2).reshape(rows * length, kv_heads, dim).index_select(0, plan.gather)
    v = value.transpose(1, 2).reshape(rows * length, kv_heads, dim).index_select(0, plan.gather)
    out = run_kernel(plan.kernel, q, k, v, plan, scale=scale, window=window, dropout=dropout)
    return out.reshape(rows, length, heads, dim)


def run_kernel(
    kernel: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    plan: VarlenPlan,
    *,
    scale: float,
    window: int | None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """One variable-length causal call: ``q`` ``(Tq, heads, d)``, ``k``/``v`` ``(Tk, kv_heads, d)`` -> ``(Tq, heads, d)``."""
    gqa = k.shape[1] != q.shape[1]
    if kernel in HALF_PRECISION_KERNELS and q.dtype not in (torch.float16, torch.bfloat16):
        if kernel not in _WARNED:
            _WARNED.add(kernel)
            logger.warning(
                "the %s varlen kernel takes float16/bfloat16 only; %s attention runs the reference kernel (exact, "
                "one call per sequence): train in bf16 for the fast kernel",
                kernel,
                str(q.dtype).removeprefix("torch."),
            )
        kernel = "reference"
    if kernel == "reference":
        return reference_varlen_attention(q, k, v, plan.cu_q, plan.cu_k, scale=scale, window=window)
    if kernel == "torch":
        from torch.nn.attention.varlen import varlen_attn

        if gqa and not _torch_varlen_has_gqa():
            groups = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
            gqa = False
        options: dict[str, Any] = {"enable_gqa": True} if gqa else {}
        left = window - 1 if window is not None else -1
        return varlen_attn(
            q,
            k,
            v,
            plan.cu_q,
            plan.cu_k,
            plan.max_q,
            plan.max_k,
            scale=scale,
            window_size=(left, 0),
            **options,
        )
    if kernel in ("flash_attn_2", "flash_attn_3"):
        if kernel == "flash_attn_3":
            from flash_attn_interface import flash_attn_varlen_func

            extra: dict[str, Any] = {}
        else:
            from flash_attn import flash_attn_varlen_func

            extra = {"dropout_p": dropout}
        size = (window - 1, window - 1) if window is not None else (-1, -1)
        out = flash_attn_varlen_func(
            q, k, v, plan.cu_q, plan.cu_k, plan.max_q, plan.max_k,
            softmax_scale=scale, causal=True, window_size=size, **extra,
        )  # fmt: skip
        return out[0] if isinstance(out, tuple) else out
    if kernel == "flex":
        flex = _flex_function(q.device.type)
        out = flex(
            q.transpose(0, 1).unsqueeze(0),
            k.transpose(0, 1).unsqueeze(0),
            v.transpose(0, 1).unsqueeze(0),
            block_mask=plan.block_mask(window),
            scale=scale,
            enable_gqa=gqa,
        )
        return out[0].transpose(0, 1)
    raise ValueError(f"unknown varlen kernel {kernel!r}; one of {', '.join(KERNELS)}")


@functools.cache
def _torch_varlen_has_gqa() -> bool:
    from torch.nn.attention.varlen import varlen_attn

    return "enable_gqa" in inspect.signature(varlen_attn).parameters


@functools.cache
def _flex_function(device_type: str):
    from torch.nn.attention.flex_attention import flex_attention

    # Flex attention is fast only compiled; on CPU the eager form (forward only) is the check.
    return torch.compile(flex_attention, dynamic=True) if device_type == "cuda" else flex_attention


def _flex_block_mask(plan: VarlenPlan, window: int | None) -> Any:
    from torch.nn.attention.flex_attention import create_block_mask

    device = plan.gather.device
    q_lens = (plan.cu_q[1:] - plan.cu_q[:-1]).long()
    k_lens = (plan.cu_k[1:] - plan.cu_k[:-1]).long()
    ids = torch.arange(len(q_lens), device=device)
    q_seq = torch.repeat_interleave(ids, q_lens)
    k_seq = torch.repeat_interleave(ids, k_lens)
    # Positions in key space: a key's index in its sequence; a query's, aligned to the end of the keys.
    k_pos = torch.arange(len(k_seq), device=device) - plan.cu_k[:-1].long()[k_seq]
    q_pos = torch.arange(len(q_seq), device=device) - plan.cu_q[:-1].long()[q_seq] + (k_lens - q_lens)[q_seq]

    def mask_mod(b, h, q, k):
        seen = (q_seq[q] == k_seq[k]) & (k_pos[k] <= q_pos[q])
        if window is not None:
            seen = seen & (q_pos[q] - k_pos[k] < window)
        return seen

    return create_block_mask(mask_mod, None, None, len(q_seq), len(k_seq), device=device)


# ----------------------------------------------------------------- the portable reference kernel


def _sequence_probs(q: torch.Tensor, k: torch.Tensor, scale: float, window: int) -> torch.Tensor:
    """Softmax probabilities ``(heads, q, k)`` of one sequence (float32), queries aligned to the end of the keys."""
    q_len, k_len = q.shape[0], k.shape[0]
    scores = torch.einsum("qhd,khd->hqk", q * scale, k)
    q_pos = torch.arange(k_len - q_len, k_len, device=q.device)[:, None]
    k_pos = torch.arange(k_len, device=q.device)[None, :]
    hidden = k_pos > q_pos
    if window > 0:
        hidden |= q_pos - k_pos >= window
    return scores.masked_fill(hidden, float("-inf")).softmax(dim=-1)


def _bounds(cu_q: torch.Tensor, cu_k: torch.Tensor) -> list[tuple[int, int, int, int]]:
    q, k = cu_q.tolist(), cu_k.tolist()
    return [(q[i], q[i + 1], k[i], k[i + 1]) for i in range(len(q) - 1)]


def _expand(t: torch.Tensor, heads: int) -> torch.Tensor:
    return t.repeat_interleave(heads // t.shape[1], dim=1) if t.shape[1] != heads else t


@torch.library.custom_op("reward_plugin::varlen_reference", mutates_args=())
def _reference_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_q: torch.Tensor,
    cu_k: torch.Tensor,
    scale: float,
    window: int,
) -> torch.Tensor:
    heads = q.shape[1]
    qf, kf, vf = q.float(), _expand(k.float(), heads), _expand(v.float(), heads)
    out = torch.empty(q.shape, dtype=torch.float32, device=q.device)
    for q0, q1, k0, k1 in _bounds(cu_q, cu_k):
        probs = _sequence_probs(qf[q0:q1], kf[k0:k1], scale, window)
        out[q0:q1] = torch.einsum("hqk,khd->qhd", probs, vf[k0:k1])
    return out.to(q.dtype)


@_reference_forward.register_fake
def _(q, k, v, cu_q, cu_k, scale, window):
    return torch.empty_like(q)


@torch.library.custom_op("reward_plugin::varlen_reference_backward", mutates_args=())
def _reference_backward(
    grad: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_q: torch.Tensor,
    cu_k: torch.Tensor,
    scale: float,
    window: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    heads, kv_heads = q.shape[1], k.shape[1]
    qf, kf, vf, gf = q.float(), _expand(k.float(), heads), _expand(v.float(), heads), grad.float()
    dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    dk = torch.zeros(kf.shape, dtype=torch.float32, device=q.device)
    dv = torch.zeros(vf.shape, dtype=torch.float32, device=q.device)
    for q0, q1, k0, k1 in _bounds(cu_q, cu_k):
        probs = _sequence_probs(qf[q0:q1], kf[k0:k1], scale, window)
        g = gf[q0:q1]
        dv[k0:k1] = torch.einsum("hqk,qhd->khd", probs, g)
        dprobs = torch.einsum("qhd,khd->hqk", g, vf[k0:k1])
        dscores = probs * (dprobs - (dprobs * probs).sum(-1, keepdim=True))
        dq[q0:q1] = torch.einsum("hqk,khd->qhd", dscores, kf[k0:k1]) * scale
        dk[k0:k1] = torch.einsum("hqk,qhd->khd", dscores, qf[q0:q1]) * scale
    if kv_heads != heads:  # grouped queries: each KV head collects the gradients of its query heads
        dk = dk.view(dk.shape[0], kv_heads, heads // kv_heads, -1).sum(2)
        dv = dv.view(dv.shape[0], kv_heads, heads // kv_heads, -1).sum(2)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


@_reference_backward.register_fake
def _(grad, q, k, v, cu_q, cu_k, scale, window):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output):
    q, k, v, cu_q, cu_k, scale, window = inputs
    ctx.save_for_backward(q, k, v, cu_q, cu_k)
    ctx.scale, ctx.window = scale, window


def _backward(ctx, grad):
    q, k, v, cu_q, cu_k = ctx.saved_tensors
    dq, dk, dv = _reference_backward(grad.contiguous(), q, k, v, cu_q, cu_k, ctx.scale, ctx.window)
    return dq, dk, dv, None, None, None, None


_reference_forward.register_autograd(_backward, setup_context=_setup_context)


def reference_varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_q: torch.Tensor,
    cu_k: torch.Tensor,
    *,
    scale: float | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """The portable variable-length causal kernel: the CUDA kernels' arguments and alignment, on any device.

    Args:
        q: ``(Tq, heads, d)``; sequence ``i``'s queries are ``q[cu_q[i]:cu_q[i+1]]``.
        k, v: ``(Tk, kv_heads, d)``; sequence ``i``'s keys are ``k[cu_k[i]:cu_k[i+1]]``, at least as
            many as its queries.
        cu_q, cu_k: cumulative lengths, ``(sequences + 1,)``.
        scale: softmax scale (default ``d ** -0.5``).
        window: a query sees keys less than ``window`` positions back (None: all earlier keys).

    Returns:
        ``(Tq, heads, d)``: the ``j``-th of ``n`` queries of a sequence with ``m`` keys attends keys
        ``0 .. m - n + j`` (queries aligned to the end of their keys), computed in float32.
    """
    scale = scale if scale is not None else q.shape[-1] ** -0.5
    return _reference_forward(
        q.contiguous(), k.contiguous(), v.contiguous(), cu_q, cu_k, float(scale), int(window or 0)
    )
