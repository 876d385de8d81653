"""Segment attention equals attention under the dense pair mask, and leaves plain forwards alone.

The reference is ``scaled_dot_product_attention`` with the boolean 4D mask of
:func:`reward_plugin.pairs.masks.allowed_pairs` (itself checked against the standard two-sequence
forward in test_pair_batching.py), on random queries, keys and values.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from test_groups_forward import random_groups
from test_pair_batching import ARCHS, make_model, random_rows

from reward_plugin.pairs import attention as pair_attention
from reward_plugin.pairs.attention import (
    SPANS_KWARG,
    segment_attention,
    spans_from_batch,
    use_segment_attention,
)
from reward_plugin.pairs.collators import PrefixSharedPairCollator
from reward_plugin.pairs.groups import GroupCollator
from reward_plugin.pairs.masks import allowed_pairs


def packed_batch(cost=None, **options):
    return PrefixSharedPairCollator(pad_token_id=0, pack=True, attention_cost_tokens=cost, **options)(
        random_rows()
    )


def dense_reference(q, k, v, batch, window=None):
    mask = allowed_pairs(batch, window)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=k.shape[1] != q.shape[1])
    real = (batch["packed_segments"] >= 0)[:, None, :, None]
    return (out * real).transpose(1, 2)  # padding outputs are unused; segment attention writes zeros


@pytest.mark.parametrize("kernel", ["math", "sdpa"])
@pytest.mark.parametrize("window", [None, 5])
@pytest.mark.parametrize("cost", [None, float("inf")])  # several padded rows; one padding-free row
def test_segment_attention_equals_the_dense_pair_mask(monkeypatch, kernel, window, cost):
    if kernel == "sdpa":  # the fused kernel long segments use on CPU (and every segment on GPU)
        monkeypatch.setattr(pair_attention, "CPU_MATH_MAX_SCORES", 0)
    batch = packed_batch(cost)
    rows, length = batch["packed_input_ids"].shape
    g = torch.Generator().manual_seed(0)
    q = torch.randn(rows, 4, length, 8, generator=g, requires_grad=True)
    k = torch.randn(rows, 2, length, 8, generator=g, requires_grad=True)  # grouped queries
    v = torch.randn(rows, 2, length, 8, generator=g, requires_grad=True)
    got = segment_attention(q, k, v, spans_from_batch(batch), sliding_window=window)
    want = dense_reference(q, k, v, batch, window)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    weights = torch.randn(got.shape, generator=g)
    grads = torch.autograd.grad((got * weights).sum(), (q, k, v))
    want_grads = torch.autograd.grad((want * weights).sum(), (q, k, v))
    for a, b in zip(grads, want_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kernel", ["math", "sdpa"])
@pytest.mark.parametrize("window", [None, 3])
@pytest.mark.parametrize("cost", [None, float("inf")])
def test_segment_attention_equals_the_dense_mask_for_groups(monkeypatch, kernel, window, cost):
    """Groups of 1-6 responses: the tails 2..K of a block attend in one call under their own mask."""
    if kernel == "sdpa":
        monkeypatch.setattr(pair_attention, "CPU_MATH_MAX_SCORES", 0)
    batch = GroupCollator(pad_token_id=0, layout="packed", attention_cost_tokens=cost)(
        random_groups(9, seed=4)
    )
    assert max(int((span[3:] > 0).sum()) for span in batch["packed_spans"]) == 6  # some blocks have K = 6
    rows, length = batch["packed_input_ids"].shape
    g = torch.Generator().manual_seed(5)
    q = torch.randn(rows, 6, length, 8, generator=g, requires_grad=True)
    k = torch.randn(rows, 2, length, 8, generator=g, requires_grad=True)  # 3 query heads per key head
    v = torch.randn(rows, 2, length, 8, generator=g, requires_grad=True)
    got = segment_attention(q, k, v, spans_from_batch(batch), sliding_window=window)
    want = dense_reference(q, k, v, batch, window)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    weights = torch.randn(got.shape, generator=g)
    grads = torch.autograd.grad((got * weights).sum(), (q, k, v))
    want_grads = torch.autograd.grad((want * weights).sum(), (q, k, v))
    for a, b in zip(grads, want_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_reduced_precision_on_cpu_is_computed_in_float32():
    batch = packed_batch(float("inf"))
    rows, length = batch["packed_input_ids"].shape
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(rows, 2, length, 8, generator=g) for _ in range(3))
    spans = spans_from_batch(batch)
    low = segment_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), spans)
    assert low.dtype == torch.bfloat16
    exact = segment_attention(q.bfloat16().float(), k.bfloat16().float(), v.bfloat16().float(), spans)
    assert torch.equal(low, exact.bfloat16())


def test_spans_describe_the_blocks():
    rows = [{"chosen_ids": [5, 6, 7], "rejected_ids": [5, 6, 9, 9]}, {"chosen_ids": [3], "rejected_ids": [4]}]
    batch = PrefixSharedPairCollator(pad_token_id=0, pack=True)(rows)
    # (row, start, prefix, chosen tail, rejected tail); the packed rows are [5 6 7 9 9] and [3 4 pad pad pad].
    assert spans_from_batch(batch) == ((0, 0, 2, 1, 2), (1, 0, 0, 1, 1))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("arch", ARCHS)
def test_plain_forwards_are_unchanged_and_the_name_is_not_saved(tmp_path, arch, attn):
    model = make_model(arch, attn=attn)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits
        use_segment_attention(model)
        assert model.config._attn_implementation == f"reward_pairs_{attn}"
        after = model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(before, after)
    model.save_pretrained(tmp_path)
    assert "reward_pairs" not in json.dumps(json.loads((tmp_path / "config.json").read_text()))


def test_a_forward_with_spans_runs_segment_attention(monkeypatch):
    calls = []
    real = pair_attention.segment_attention
    monkeypatch.setattr(
        pair_attention, "segment_attention", lambda *a, **k: calls.append(a[3]) or real(*a, **k)
    )
    model = make_model("llama")
    use_segment_attention(model)
    batch = packed_batch(float("inf"))
    model(
        input_ids=batch["packed_input_ids"],
        position_ids=batch["packed_position_ids"],
        attention_mask=torch.ones(1, 1, 1, 1, dtype=torch.bool),
        **{SPANS_KWARG: spans_from_batch(batch)},
    )
    assert len(calls) == model.config.num_hidden_layers and calls[0] == spans_from_batch(batch)


def test_flex_attention_models_are_not_switched():
    model = make_model("llama")
    model.config._attn_implementation = "flex_attention"
    with pytest.raises(ValueError, match="flex_attention"):
        use_segment_attention(model)
