"""Prefix-shared and packed pair layouts give the rewards, gradients and losses of the standard layout.

The reference is always the standard two-sequence forward: chosen and rejected as separate rows,
each scored at its last attended token. Tiny fp32 configs of every supported decoder family are
built here; GPT-2 has learned absolute positions and Mistral a sliding window shorter than the
sequences, so both the position ids and the window must be right for the numbers to agree.
"""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from conftest import tokenized_pairs
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    GemmaConfig,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
)

from reward_plugin import RewardConfig, RewardDataCollatorWithPadding, RewardTrainer, pairwise_loss
from reward_plugin.errors import UnsupportedModelError
from reward_plugin.pairs import packed_rewards, shared_prefix_length
from reward_plugin.pairs.collators import PrefixSharedPairCollator
from reward_plugin.scoring import ScoreReader

VOCAB = 64
SMALL = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


def make_config(arch: str, vocab_size: int = VOCAB, pad_token_id: int = 0):
    common = {"vocab_size": vocab_size, "num_labels": 1, "pad_token_id": pad_token_id}
    if arch == "llama":
        return LlamaConfig(**SMALL, **common)
    if arch == "qwen2":
        return Qwen2Config(**SMALL, **common)
    if arch == "mistral":
        return MistralConfig(**SMALL, sliding_window=6, **common)  # shorter than the sequences
    if arch == "gemma":
        return GemmaConfig(**SMALL, head_dim=8, **common)
    if arch == "gpt2":
        return GPT2Config(
            n_embd=32, n_layer=2, n_head=4, n_positions=256, bos_token_id=1, eos_token_id=2, **common
        )
    raise AssertionError(arch)


ARCHS = ("llama", "qwen2", "mistral", "gemma", "gpt2")


def make_model(arch: str, attn: str = "sdpa", **kwargs):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(
        make_config(arch, **kwargs), attn_implementation=attn
    )
    return model.eval()  # dropout off (GPT-2 has some)


def random_rows(n: int = 7, seed: int = 1) -> list[dict]:
    """Pairs with a shared prompt of 0-12 tokens and tails of 1-8 tokens, plus the edge cases."""
    g = torch.Generator().manual_seed(seed)

    def ids(k: int) -> list[int]:
        return torch.randint(3, VOCAB, (k,), generator=g).tolist()

    rows = []
    for _ in range(n):
        prompt = ids(int(torch.randint(0, 13, (1,), generator=g)))
        rows.append(
            {
                "chosen_ids": prompt + ids(int(torch.randint(1, 9, (1,), generator=g))),
                "rejected_ids": prompt + ids(int(torch.randint(1, 9, (1,), generator=g))),
            }
        )
    rows += [
        {"chosen_ids": [5, 6, 7], "rejected_ids": [5, 6, 7, 8, 9]},  # chosen is a prefix of rejected
        {"chosen_ids": [5, 6, 7, 8, 9], "rejected_ids": [5, 6]},  # rejected is a prefix of chosen
        {"chosen_ids": [10, 11, 12], "rejected_ids": [13, 11, 12]},  # no shared prefix
        {"chosen_ids": [20], "rejected_ids": [21]},  # one token each
        {"chosen_ids": [4, 4, 4, 30], "rejected_ids": [4, 4, 4, 31]},  # one-token tails
        {"chosen_ids": [7, 8, 9], "rejected_ids": [7, 8, 9]},  # identical: the cap keeps one token each
    ]
    return rows


def standard_rewards(model, rows):
    batch = RewardDataCollatorWithPadding(pad_token_id=0)(rows)
    ids = torch.cat([batch["input_ids_chosen"], batch["input_ids_rejected"]])
    mask = torch.cat([batch["attention_mask_chosen"], batch["attention_mask_rejected"]])
    return ScoreReader(model).rewards(model, ids, mask).chunk(2)


def fast_rewards(model, rows, pack: bool, segments: bool = True, **collator_options):
    batch = PrefixSharedPairCollator(pad_token_id=0, pack=pack, **collator_options)(rows)
    return packed_rewards(ScoreReader(model), model, batch, segments=segments)


def grads(model, rewards) -> dict[str, torch.Tensor]:
    model.zero_grad()
    pairwise_loss(*rewards).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_shared_prefix_length_caps_so_each_tail_keeps_a_token():
    assert shared_prefix_length([1, 2, 3, 4], [1, 2, 5]) == 2
    assert shared_prefix_length([1, 2], [1, 2, 3]) == 1
    assert shared_prefix_length([1, 2, 3], [1, 2, 3]) == 2
    assert shared_prefix_length([9], [9]) == 0
    assert shared_prefix_length([1, 2], [3, 2]) == 0


def test_collator_layout_and_mask_by_hand():
    from reward_plugin.pairs.masks import allowed_pairs

    rows = [{"chosen_ids": [5, 6, 7], "rejected_ids": [5, 6, 9, 9]}, {"chosen_ids": [3], "rejected_ids": [4]}]
    batch = PrefixSharedPairCollator(pad_token_id=0, pack=True)(rows)
    assert batch["packed_input_ids"].tolist() == [[5, 6, 7, 9, 9], [3, 4, 0, 0, 0]]
    assert batch["packed_position_ids"].tolist() == [[0, 1, 2, 2, 3], [0, 0, 0, 0, 0]]
    assert batch["packed_segments"].tolist() == [[0, 0, 1, 2, 2], [1, 2, -1, -1, -1]]
    assert batch["chosen_index"].tolist() == [2, 5] and batch["rejected_index"].tolist() == [4, 6]
    mask = allowed_pairs(batch)[:, 0].int().tolist()
    assert mask[0] == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 0, 1, 0], [1, 1, 0, 1, 1]]
    # Second row: the one-token pair (rejected does not see chosen), then padding that sees only itself.
    assert mask[1] == [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]]


def test_packing_fills_rows_up_to_the_longest_block():
    rows = [{"chosen_ids": [1] * n, "rejected_ids": [2] * n} for n in (5, 2, 3, 1, 1)]
    batch = PrefixSharedPairCollator(pad_token_id=0, pack=True)(rows)
    assert batch["packed_input_ids"].shape == (3, 10)  # blocks 10 | 6+4 | 2+2 (first fit decreasing)
    assert int((batch["packed_segments"] >= 0).sum()) == 2 * (5 + 2 + 3 + 1 + 1)


def test_packing_row_length_follows_the_attention_cost():
    rows = [
        {"chosen_ids": [1] * n, "rejected_ids": [2] * n} for n in (5, 2, 3, 1, 1)
    ]  # blocks 10, 4, 6, 2, 2
    cheap_attention = PrefixSharedPairCollator(pad_token_id=0, pack=True, attention_cost_tokens=1e9)(rows)
    rows_, width = cheap_attention["packed_input_ids"].shape
    assert rows_ * width == 24  # only the token count matters: no padding at all
    dear_attention = PrefixSharedPairCollator(pad_token_id=0, pack=True, attention_cost_tokens=1.0)(rows)
    # rows * T * (1 + T): one row 24*25 = 600, two rows (10+2 | 6+4+2) 2*12*13 = 312, three (10 | 6+4 | 2+2) 3*10*11 = 330
    assert dear_attention["packed_input_ids"].shape == (2, 12)


@pytest.mark.parametrize("attention", ["segments", "mask"])
@pytest.mark.parametrize("arch", ARCHS)
def test_rewards_and_gradients_equal_the_standard_forward(arch, attention):
    rows = random_rows()
    model = make_model(arch)
    reference = standard_rewards(model, rows)
    reference_grads = grads(model, reference)
    # Packed rows as short as the longest block (several rows, padding) and all pairs in one row.
    for pack, cost in ((False, None), (True, None), (True, float("inf"))):
        rewards = fast_rewards(
            model, rows, pack, segments=attention == "segments", attention_cost_tokens=cost
        )
        for got, want in zip(rewards, reference):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        fast_grads = grads(model, rewards)
        assert set(fast_grads) == set(reference_grads)
        for name, grad in fast_grads.items():
            want = reference_grads[name]
            scale = want.abs().max().clamp_min(1e-8)
            assert float((grad - want).abs().max() / scale) <= 1e-4, (
                f"{arch} {attention} pack={pack}: gradient of {name}"
            )


@pytest.mark.parametrize("attention", ["segments", "mask"])
@pytest.mark.parametrize("arch", ["llama", "mistral", "gpt2"])
def test_eager_attention_models(arch, attention):
    rows = random_rows(n=4, seed=3)
    model = make_model(arch, attn="eager")
    reference = standard_rewards(model, rows)
    for got, want in zip(fast_rewards(model, rows, pack=True, segments=attention == "segments"), reference):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_padding_in_the_rows_is_dropped_and_pad_equal_to_eos_is_read_correctly():
    # Left-padded rows (a tokenizer with padding_side="left"), pad id 2 == EOS id, every sequence ending in EOS.
    model = make_model("llama", pad_token_id=2)
    rows = [
        {"input_ids_chosen": [2, 2, 8, 9, 2], "attention_mask_chosen": [0, 0, 1, 1, 1],
         "input_ids_rejected": [8, 9, 10, 11, 2], "attention_mask_rejected": [1, 1, 1, 1, 1]},
        {"input_ids_chosen": [2, 8, 12, 2], "attention_mask_chosen": [0, 1, 1, 1],
         "input_ids_rejected": [2, 2, 8, 2], "attention_mask_rejected": [0, 0, 1, 1]},
    ]  # fmt: skip
    unpadded = [
        {"chosen_ids": [8, 9, 2], "rejected_ids": [8, 9, 10, 11, 2]},
        {"chosen_ids": [8, 12, 2], "rejected_ids": [8, 2]},
    ]
    reference = standard_rewards(model, unpadded)
    batch = PrefixSharedPairCollator(pad_token_id=2, pack=False)(rows)
    for got, want in zip(packed_rewards(ScoreReader(model), model, batch), reference):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_truncation_follows_the_standard_collator():
    rows = [{"chosen_ids": [1, 5, 6, 7, 8, 2], "rejected_ids": [1, 5, 6, 9, 2]}]
    for side in ("left", "right"):
        options = {"pad_token_id": 0, "max_length": 4, "truncation": side, "keep_token_ids": {1, 2}}
        standard = RewardDataCollatorWithPadding(**options)(rows)
        chosen = standard["input_ids_chosen"][0][standard["attention_mask_chosen"][0].bool()].tolist()
        rejected = standard["input_ids_rejected"][0][standard["attention_mask_rejected"][0].bool()].tolist()
        batch = PrefixSharedPairCollator(**options)(rows)
        ids, pos = batch["packed_input_ids"][0].tolist(), batch["packed_position_ids"][0].tolist()
        p = shared_prefix_length(chosen, rejected)
        assert ids == chosen + rejected[p:]
        assert pos == list(range(len(chosen))) + list(range(p, len(rejected)))


# ------------------------------------------------------------------ through the trainer

COMMON = {
    "max_steps": 10,
    "per_device_train_batch_size": 4,
    "per_device_eval_batch_size": 5,
    "learning_rate": 2e-3,
    "logging_steps": 1,
    "seed": 3,
    "bf16": False,
    "use_cpu": True,
    "report_to": "none",
    "save_strategy": "no",
    "disable_tqdm": True,
    "save_final_model": False,
    "save_reward_stats": False,
}


def train_losses(tmp_path, model, tokenizer, dataset, mode, **extra):
    trainer = RewardTrainer(
        model=copy.deepcopy(model),
        args=RewardConfig(output_dir=str(tmp_path / mode), pair_batching=mode, **{**COMMON, **extra}),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    return trainer, [e["loss"] for e in trainer.state.log_history if "loss" in e]


def assert_same_losses(got, want, label):
    assert len(got) == len(want) == 10
    for step, (a, b) in enumerate(zip(got, want), start=1):
        assert abs(a - b) <= 1e-4, f"{label} step {step}: {a!r} vs standard {b!r}"
    assert len({round(x, 5) for x in want}) > 1  # it trained


@pytest.mark.parametrize("arch", ARCHS)
def test_training_losses_equal_standard_mode(tmp_path, arch, bpe_tokenizer):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(
        make_config(arch, vocab_size=len(bpe_tokenizer), pad_token_id=bpe_tokenizer.pad_token_id)
    )
    dataset = tokenized_pairs(bpe_tokenizer, n=40, max_length=40, margin=arch == "llama")
    extra = {"max_length": 32} if arch == "qwen2" else {}  # cut pairs in the collator too
    _, want = train_losses(tmp_path, model, bpe_tokenizer, dataset, "standard", **extra)
    for mode, attention in (("prefix_shared", "segments"), ("packed", "segments"), ("packed", "mask")):
        trainer, got = train_losses(
            tmp_path, model, bpe_tokenizer, dataset, mode, pair_attention=attention, **extra
        )
        assert trainer.pair_batching == mode
        assert_same_losses(got, want, f"{arch} {mode} {attention}")


def test_grouping_peft_predict_and_eval_in_packed_mode(tmp_path, tiny_llama, bpe_tokenizer):
    from peft import LoraConfig

    dataset = tokenized_pairs(bpe_tokenizer, n=40, max_length=48, margin=True)
    eval_set = tokenized_pairs(bpe_tokenizer, n=12, max_length=48, offset=40)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    runs = {}
    for mode in ("standard", "packed"):
        trainer = RewardTrainer(
            model=copy.deepcopy(tiny_llama),
            args=RewardConfig(
                output_dir=str(tmp_path / mode), pair_batching=mode, group_by_length=True, **COMMON
            ),
            train_dataset=dataset,
            processing_class=bpe_tokenizer,
            peft_config=lora,
        )
        trainer.train()
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        accuracy = [e["accuracy"] for e in trainer.state.log_history if "accuracy" in e]
        runs[mode] = losses, accuracy, trainer.predict(eval_set), trainer.evaluate(eval_set)
    (losses, accuracy, prediction, metrics), (ref_losses, ref_accuracy, ref_prediction, ref_metrics) = (
        runs["packed"],
        runs["standard"],
    )
    assert_same_losses(losses, ref_losses, "packed+LoRA+grouping")
    assert accuracy == ref_accuracy
    assert prediction.predictions.shape == (12, 2)
    torch.testing.assert_close(
        torch.as_tensor(prediction.predictions),
        torch.as_tensor(ref_prediction.predictions),
        rtol=0,
        atol=1e-5,
    )
    assert metrics["eval_accuracy"] == ref_metrics["eval_accuracy"]
    assert abs(metrics["eval_loss"] - ref_metrics["eval_loss"]) <= 1e-5


def tiny_bert():
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_labels=1,
    )
    model = AutoModelForSequenceClassification.from_config(config)
    # BERT's own initialisation, written out (normal weights, zero biases, unit LayerNorms): in a full
    # suite run, a model built here after other tests came out of from_config degenerate (rewards equal
    # to 1e-7, no gradient through the saturated pooler), so nothing is left to from_config's init.
    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
            torch.nn.init.normal_(module.weight, std=config.initializer_range)
        if isinstance(module, torch.nn.Linear) and module.bias is not None:
            torch.nn.init.zeros_(module.bias)
        if isinstance(module, torch.nn.LayerNorm):
            torch.nn.init.ones_(module.weight)
            torch.nn.init.zeros_(module.bias)
    return model


def test_encoder_falls_back_under_auto_with_one_warning(tmp_path, caplog, bpe_tokenizer):
    import datasets

    data = datasets.Dataset.from_list(random_rows(n=4))
    args = RewardConfig(output_dir=str(tmp_path), pair_batching="auto", **COMMON)
    with caplog.at_level(logging.WARNING, logger="reward_plugin.pairs.layout"):
        trainer = RewardTrainer(
            model=tiny_bert(), args=args, train_dataset=data, processing_class=bpe_tokenizer
        )
    warnings = [r.getMessage() for r in caplog.records if r.name == "reward_plugin.pairs.layout"]
    assert len(warnings) == 1 and "BertForSequenceClassification" in warnings[0] and "standard" in warnings[0]
    assert trainer.pair_batching == "standard"
    assert isinstance(trainer.data_collator, RewardDataCollatorWithPadding)
    assert not isinstance(trainer.data_collator, PrefixSharedPairCollator)


@pytest.mark.parametrize("mode", ["prefix_shared", "packed"])
def test_explicit_fast_mode_on_an_encoder_raises(tmp_path, mode, bpe_tokenizer):
    args = RewardConfig(output_dir=str(tmp_path), pair_batching=mode, **COMMON)
    with pytest.raises(
        UnsupportedModelError,
        match=rf"pair_batching='{mode}' cannot be exact.*BertForSequenceClassification.*'standard'",
    ):
        RewardTrainer(model=tiny_bert(), args=args, processing_class=bpe_tokenizer)


def test_auto_picks_packed_for_a_decoder_and_refuses_flash_attention(tmp_path, bpe_tokenizer):
    args = RewardConfig(output_dir=str(tmp_path), pair_batching="auto", **COMMON)
    trainer = RewardTrainer(model=make_model("llama"), args=args, processing_class=bpe_tokenizer)
    assert trainer.pair_batching == "packed" and trainer.data_collator.pack is True
    model = make_model("llama")
    model.config._attn_implementation = "flash_attention_2"  # ignores custom 4D masks
    args = RewardConfig(output_dir=str(tmp_path), pair_batching="packed", **COMMON)
    with pytest.raises(UnsupportedModelError, match="flash_attention_2"):
        RewardTrainer(model=model, args=args, processing_class=bpe_tokenizer)


def test_docstring_examples():
    import doctest

    import dataset_formats.prefix
    import reward_plugin.pairs.collators

    for module in (dataset_formats.prefix, reward_plugin.pairs.collators):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0


def test_model_init_models_get_the_layout_too(tmp_path, bpe_tokenizer):
    dataset = tokenized_pairs(bpe_tokenizer, n=8, max_length=24)
    config = make_config("llama", vocab_size=len(bpe_tokenizer), pad_token_id=bpe_tokenizer.pad_token_id)
    args = RewardConfig(output_dir=str(tmp_path), **{**COMMON, "max_steps": 2})
    trainer = RewardTrainer(
        model_init=lambda *_: AutoModelForSequenceClassification.from_config(config),
        args=args,
        train_dataset=dataset,
        processing_class=bpe_tokenizer,
    )
    assert trainer.pair_batching == "packed"  # the `auto` default, resolved once the model exists
    assert isinstance(trainer.data_collator, PrefixSharedPairCollator) and trainer.data_collator.pack
    assert trainer.data_collator.attention_cost_tokens > 1
    trainer.train()
    assert all(e["loss"] > 0 for e in trainer.state.log_history if "loss" in e)
