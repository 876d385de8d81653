"""The varlen pair-attention backend equals the dense pair mask: kernels, models, groups and training.

References: ``scaled_dot_product_attention`` under the boolean 4D mask of
:func:`reward_plugin.pairs.masks.allowed_pairs` (itself checked against the standard two-sequence
forward in test_pair_batching.py), the model's ``pair_attention='mask'`` forward, and the
``segments`` training run. Every backend runnable on this machine is checked: the portable
reference kernel (forward and backward) and flex attention (forward: torch has no flex backward
on CPU). All in float32, 1e-5.
"""

from __future__ import annotations

import copy
import functools
import gzip
import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from test_groups_forward import random_groups
from test_pair_attention import dense_reference
from test_pair_batching import ARCHS, COMMON, make_config, make_model, random_rows
from transformers import AutoModelForSequenceClassification

from reward_plugin import RewardConfig, RewardTrainer, pairwise_loss
from reward_plugin.pairs.attention import spans_from_batch
from reward_plugin.pairs.collators import PrefixSharedPairCollator
from reward_plugin.pairs.forward import packed_rewards
from reward_plugin.pairs.groups import GroupCollator, group_rewards
from reward_plugin.pairs.varlen import reference_varlen_attention, varlen_pair_attention, varlen_plan
from reward_plugin.scoring import ScoreReader

warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")


def qkv(batch, heads=4, kv_heads=2, dim=8, seed=0, grad=True):
    rows, length = batch["packed_input_ids"].shape
    g = torch.Generator().manual_seed(seed)
    return tuple(
        torch.randn(rows, h, length, dim, generator=g).requires_grad_(grad)
        for h in (heads, kv_heads, kv_heads)
    )


def pair_batch(cost, rows=None):
    return PrefixSharedPairCollator(pad_token_id=0, pack=True, attention_cost_tokens=cost)(
        rows or random_rows()
    )


def group_batch(cost):
    return GroupCollator(pad_token_id=0, layout="packed", attention_cost_tokens=cost)(random_groups())


BATCHES = {
    # several padded rows (padding gaps) / one padding-free row; pairs with length-1 tails, prompts
    # longer and shorter than the tails, no shared prompt; groups of 1-6 responses.
    "pairs, padded rows": lambda: pair_batch(None),
    "pairs, one row": lambda: pair_batch(float("inf")),
    "groups, padded rows": lambda: group_batch(None),
    "groups, one row": lambda: group_batch(float("inf")),
}


def real_tokens(batch):
    return (batch["packed_segments"] >= 0)[:, :, None, None]


@pytest.mark.parametrize("heads", [(4, 4), (4, 2), (6, 1)])  # multi-head, grouped, multi-query
@pytest.mark.parametrize("window", [None, 1, 5])
@pytest.mark.parametrize("layout", list(BATCHES))
def test_reference_kernel_outputs_and_gradients_equal_the_dense_mask(layout, window, heads):
    batch = BATCHES[layout]()
    q, k, v = qkv(batch, *heads)
    rows, length = batch["packed_input_ids"].shape
    plan = varlen_plan(spans_from_batch(batch), rows, length, "cpu", "reference")
    real = real_tokens(batch)
    got = varlen_pair_attention(q, k, v, plan, sliding_window=window) * real  # padding outputs are unread
    want = dense_reference(q, k, v, batch, window)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    weights = torch.randn(got.shape, generator=torch.Generator().manual_seed(5))
    for a, b in zip(
        torch.autograd.grad((got * weights).sum(), (q, k, v)),
        torch.autograd.grad((want * weights).sum(), (q, k, v)),
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("window", [None, 5])
@pytest.mark.parametrize("layout", list(BATCHES))
def test_flex_kernel_forward_equals_the_dense_mask(layout, window):
    batch = BATCHES[layout]()
    q, k, v = qkv(batch, grad=False)
    rows, length = batch["packed_input_ids"].shape
    plan = varlen_plan(spans_from_batch(batch), rows, length, "cpu", "flex")
    got = varlen_pair_attention(q, k, v, plan, sliding_window=window) * real_tokens(batch)
    torch.testing.assert_close(got, dense_reference(q, k, v, batch, window), rtol=0, atol=1e-5)


def test_the_plan_by_hand():
    # Row 0: [5 6 | 7 | 9 9] (prefix 2, chosen 1, rejected 2); row 1: [3 | 4] then 3 padding tokens.
    rows = [{"chosen_ids": [5, 6, 7], "rejected_ids": [5, 6, 9, 9]}, {"chosen_ids": [3], "rejected_ids": [4]}]
    batch = PrefixSharedPairCollator(pad_token_id=0, pack=True)(rows)
    plan = varlen_plan(spans_from_batch(batch), 2, 5, "cpu", "reference")
    # Sequences: [5 6 7], [9 9] against [5 6 9 9], [3], [4] against [4], the padding gap.
    assert plan.cu_q.tolist() == [0, 3, 5, 6, 7, 10]
    assert plan.cu_k.tolist() == [0, 3, 7, 8, 9, 12]
    assert plan.gather.tolist() == [0, 1, 2, 0, 1, 3, 4, 5, 6, 7, 8, 9]
    assert (plan.max_q, plan.max_k) == (3, 4)


@pytest.mark.parametrize("window", [None, 3])
def test_reference_alignment_is_the_documented_cuda_alignment(window):
    """Queries aligned to the END of their keys (flash-attn's and varlen_attn's causal rule for fewer queries than keys).

    The independent reference is torch's documented lower-right causal bias
    (``torch.nn.attention.bias.causal_lower_right``: "the causal mask is aligned to the bottom right
    of the attention matrix"), applied with ``scaled_dot_product_attention``, one sequence at a time.
    """
    from torch.nn.attention.bias import causal_lower_right

    g = torch.Generator().manual_seed(3)
    q_lens, k_lens = [1, 4, 3, 7], [1, 9, 3, 12]
    q = torch.randn(sum(q_lens), 2, 8, generator=g)
    k = torch.randn(sum(k_lens), 2, 8, generator=g)
    v = torch.randn(sum(k_lens), 2, 8, generator=g)
    cu_q = torch.tensor([0, *q_lens]).cumsum(0).int()
    cu_k = torch.tensor([0, *k_lens]).cumsum(0).int()
    got = reference_varlen_attention(q, k, v, cu_q, cu_k, window=window)
    for i, (n, m) in enumerate(zip(q_lens, k_lens)):
        qs, ks, vs = (t[c[i] : c[i + 1]].transpose(0, 1) for t, c in ((q, cu_q), (k, cu_k), (v, cu_k)))
        if window is None:
            want = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=causal_lower_right(n, m))
        else:  # the window as flash-attn's window_size=(window - 1, 0): keys j with i' - j < window
            seen = torch.ones(n, m, dtype=torch.bool).tril(m - n) & ~torch.ones(n, m, dtype=torch.bool).tril(
                m - n - window
            )
            want = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=seen)
        torch.testing.assert_close(got[cu_q[i] : cu_q[i + 1]], want.transpose(0, 1), rtol=0, atol=1e-6)


def model_grads(model, loss):
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_grads_close(got, want, label):
    assert set(got) == set(want)
    for name, grad in got.items():
        # 1e-5 of the largest entry (absolute 1e-5 for gradients of order one).
        bound = 1e-5 * max(1.0, float(want[name].abs().max()))
        assert float((grad - want[name]).abs().max()) <= bound, f"{label}: gradient of {name}"


@pytest.mark.parametrize("arch", ARCHS)
def test_model_rewards_and_gradients_equal_the_mask_backend(arch):
    model = make_model(arch)  # mistral: a sliding window shorter than the sequences; qwen2/llama: GQA
    for cost in (None, float("inf")):
        batch = PrefixSharedPairCollator(pad_token_id=0, pack=True, attention_cost_tokens=cost)(random_rows())
        want = packed_rewards(ScoreReader(model), model, batch, attention="mask")
        want_grads = model_grads(model, pairwise_loss(*want))
        got = packed_rewards(ScoreReader(model), model, batch, attention="varlen")
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
        assert_grads_close(model_grads(model, pairwise_loss(*got)), want_grads, f"{arch} cost={cost}")
        with torch.no_grad():
            flex = packed_rewards(ScoreReader(model), model, batch, attention="flex")
        for a, b in zip(flex, want):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_group_rewards_and_gradients_equal_the_mask_backend(arch):
    model = make_model(arch)
    batch = GroupCollator(pad_token_id=0, layout="packed")(random_groups())
    weights = torch.linspace(0.5, 1.5, len(batch["response_index"]))
    want = group_rewards(ScoreReader(model), model, batch, attention="mask")
    want_grads = model_grads(model, (want * weights).sum())
    got = group_rewards(ScoreReader(model), model, batch, attention="varlen")
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert_grads_close(model_grads(model, (got * weights).sum()), want_grads, arch)


def bundled_pairs(tokenizer, n=40, max_length=40):
    """The first ``n`` pairs of the bundled hh-rlhf sample, tokenized (the end of each transcript kept)."""
    import datasets
    from conftest import ROOT

    with gzip.open(ROOT / "reward_plugin" / "sample_data" / "hh_rlhf_sample.jsonl.gz", "rt") as fh:
        rows = [json.loads(line) for _, line in zip(range(n), fh)]
    tokenizer.truncation_side = "left"
    chosen = tokenizer([r["chosen"] for r in rows], truncation=True, max_length=max_length)
    rejected = tokenizer([r["rejected"] for r in rows], truncation=True, max_length=max_length)
    return datasets.Dataset.from_dict(
        {"chosen_ids": chosen["input_ids"], "rejected_ids": rejected["input_ids"]}
    )


@pytest.mark.parametrize(
    "arch",
    ["llama", pytest.param("mistral", marks=pytest.mark.slow)],  # mistral: a sliding window
)
def test_training_the_bundled_data_with_varlen_gives_the_segment_losses(tmp_path, arch, bpe_tokenizer):
    torch.manual_seed(0)
    config = make_config(arch, vocab_size=len(bpe_tokenizer), pad_token_id=bpe_tokenizer.pad_token_id)
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa")
    dataset = bundled_pairs(bpe_tokenizer)
    losses = {}
    for attention in ("segments", "varlen"):
        trainer = RewardTrainer(
            model=copy.deepcopy(model),
            args=RewardConfig(
                output_dir=str(tmp_path / attention),
                pair_batching="packed",
                pair_attention=attention,
                **COMMON,
            ),
            train_dataset=dataset,
            processing_class=bpe_tokenizer,
        )
        trainer.train()
        losses[attention] = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses["varlen"]) == len(losses["segments"]) == 10
    for step, (a, b) in enumerate(zip(losses["varlen"], losses["segments"]), start=1):
        assert abs(a - b) <= 1e-5, f"{arch} step {step}: varlen {a!r} vs segments {b!r}"
    assert len({round(x, 5) for x in losses["segments"]}) > 1  # it trained


def documented_kernel(q, k, v, cu_q, cu_k, *, scale, left, gqa):
    """What the CUDA kernels document, computed by the reference: causal, queries at the end of their keys,
    keys at most ``left`` positions back (``-1``: no limit), KV heads shared by query groups only when asked."""
    if not gqa:
        assert k.shape[1] == q.shape[1], "KV heads must be repeated for a kernel without grouped queries"
    return reference_varlen_attention(q, k, v, cu_q, cu_k, scale=scale, window=None if left < 0 else left + 1)


@pytest.mark.parametrize("signature", ["torch 2.13 (enable_gqa)", "torch 2.11 (no enable_gqa)"])
def test_torch_varlen_attn_is_called_as_documented(monkeypatch, signature):
    """The CUDA call's arguments (int32 offsets, window_size=(window - 1, 0), GQA or repeated heads) on a stand-in."""
    import torch.nn.attention.varlen as torch_varlen

    from reward_plugin.pairs import varlen

    calls = []

    def varlen_attn(
        query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None, window_size=(-1, -1), **kw
    ):
        assert cu_seq_q.dtype == cu_seq_k.dtype == torch.int32 and window_size[1] == 0
        assert max_q == int((cu_seq_q[1:] - cu_seq_q[:-1]).max()) and max_k == int(
            (cu_seq_k[1:] - cu_seq_k[:-1]).max()
        )
        calls.append(kw)
        return documented_kernel(
            query, key, value, cu_seq_q, cu_seq_k, scale=scale, left=window_size[0], gqa=bool(kw)
        )

    if signature.startswith("torch 2.11"):
        stand_in = varlen_attn
    else:

        def stand_in(
            query,
            key,
            value,
            cu_seq_q,
            cu_seq_k,
            max_q,
            max_k,
            *,
            scale=None,
            window_size=(-1, -1),
            enable_gqa=False,
        ):
            kw = {"enable_gqa": True} if enable_gqa else {}
            return varlen_attn(
                query,
                key,
                value,
                cu_seq_q,
                cu_seq_k,
                max_q,
                max_k,
                scale=scale,
                window_size=window_size,
                **kw,
            )

    monkeypatch.setattr(torch_varlen, "varlen_attn", stand_in)
    monkeypatch.setattr(varlen, "HALF_PRECISION_KERNELS", ())  # the stand-in computes in float32
    varlen._torch_varlen_has_gqa.cache_clear()
    monkeypatch.setattr(
        varlen, "_torch_varlen_has_gqa", functools.cache(varlen._torch_varlen_has_gqa.__wrapped__)
    )
    batch = pair_batch(None)
    q, k, v = qkv(batch, 6, 2)
    rows, length = batch["packed_input_ids"].shape
    plan = varlen_plan(spans_from_batch(batch), rows, length, "cpu", "torch")
    for window in (None, 4):
        got = varlen_pair_attention(q, k, v, plan, sliding_window=window) * real_tokens(batch)
        torch.testing.assert_close(got, dense_reference(q, k, v, batch, window), rtol=0, atol=1e-5)
    assert calls and all(
        c == ({} if signature.startswith("torch 2.11") else {"enable_gqa": True}) for c in calls
    )


def test_flash_attn_varlen_func_is_called_as_documented(monkeypatch):
    """flash-attn's call (causal=True, window_size=(window - 1, window - 1), native GQA) on a stand-in module."""
    import sys
    import types

    def flash_attn_varlen_func(q, k, v, cu_q, cu_k, max_q, max_k, dropout_p=0.0, softmax_scale=None, causal=False,
                               window_size=(-1, -1)):  # fmt: skip
        assert causal and dropout_p == 0.0
        calls.append(window_size)
        return documented_kernel(q, k, v, cu_q, cu_k, scale=softmax_scale, left=window_size[0], gqa=True)

    from reward_plugin.pairs import varlen

    calls = []
    monkeypatch.setitem(
        sys.modules, "flash_attn", types.SimpleNamespace(flash_attn_varlen_func=flash_attn_varlen_func)
    )
    monkeypatch.setattr(varlen, "HALF_PRECISION_KERNELS", ())  # the stand-in computes in float32
    batch = group_batch(None)
    q, k, v = qkv(batch, 4, 1)
    rows, length = batch["packed_input_ids"].shape
    plan = varlen_plan(spans_from_batch(batch), rows, length, "cpu", "flash_attn_2")
    for window in (None, 3):
        got = varlen_pair_attention(q, k, v, plan, sliding_window=window) * real_tokens(batch)
        torch.testing.assert_close(got, dense_reference(q, k, v, batch, window), rtol=0, atol=1e-5)
    assert calls == [(-1, -1), (2, 2)]


def test_float32_under_a_half_precision_kernel_runs_the_reference_kernel(monkeypatch):
    import torch.nn.attention.varlen as torch_varlen

    def refuse(*args, **kwargs):
        raise AssertionError("varlen_attn takes float16/bfloat16 only")

    monkeypatch.setattr(torch_varlen, "varlen_attn", refuse)
    batch = pair_batch(None)
    q, k, v = qkv(batch)
    rows, length = batch["packed_input_ids"].shape
    plan = varlen_plan(spans_from_batch(batch), rows, length, "cpu", "torch")
    got = varlen_pair_attention(q, k, v, plan) * real_tokens(batch)
    torch.testing.assert_close(got, dense_reference(q, k, v, batch), rtol=0, atol=1e-5)


def test_dropout_under_a_kernel_without_it_is_a_one_line_error():
    from reward_plugin.errors import UnsupportedModelError

    batch = pair_batch(None)
    q, k, v = qkv(batch)
    rows, length = batch["packed_input_ids"].shape
    plan = varlen_plan(spans_from_batch(batch), rows, length, "cpu", "reference")
    with pytest.raises(UnsupportedModelError, match="no attention dropout"):
        varlen_pair_attention(q, k, v, plan, dropout=0.1)
