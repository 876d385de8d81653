"""Per-step training loss parity with TRL's RewardTrainer (the reference implementation).

TRL 1.16 no longer reads the legacy four columns: it takes tokenized ``chosen_ids``/
``rejected_ids`` (no masks; it pads chosen+rejected itself). Our trainer gets the four-column
table; TRL gets the same table with the id columns renamed and the masks dropped. The masks of
this data are all ones, so both see exactly the same tokens. Everything else is held equal:
the same initial weights (one model, deep-copied), fp32 (``bf16=False`` on both), dropout off
(the default of both), the same seed (hence the same shuffled order), optimizer, schedule,
batch size and gradient checkpointing, no length filter (``max_length=None``).
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tokenized_pairs

trl = pytest.importorskip("trl")

from reward_plugin import RewardConfig, RewardTrainer

STEPS = 10
COMMON = {
    "max_steps": STEPS,
    "per_device_train_batch_size": 4,
    "learning_rate": 1e-3,
    "logging_steps": 1,
    "seed": 7,
    "bf16": False,
    "max_length": None,
    "report_to": "none",
    "save_strategy": "no",
    "disable_tqdm": True,
    "gradient_checkpointing": True,
    "disable_dropout": True,
}


def losses(trainer) -> list[float]:
    trainer.train()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def run_both(tmp_path, model, tokenizer, dataset, **extra):
    ours = RewardTrainer(
        model=copy.deepcopy(model),
        args=RewardConfig(output_dir=str(tmp_path / "ours"), save_reward_stats=False, **{**COMMON, **extra}),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trl_data = dataset.rename_columns(
        {"input_ids_chosen": "chosen_ids", "input_ids_rejected": "rejected_ids"}
    )
    trl_data = trl_data.remove_columns(["attention_mask_chosen", "attention_mask_rejected"])
    reference = trl.RewardTrainer(
        model=copy.deepcopy(model),
        args=trl.RewardConfig(output_dir=str(tmp_path / "trl"), **{**COMMON, **extra}),
        train_dataset=trl_data,
        processing_class=tokenizer,
    )
    return losses(ours), losses(reference)


def assert_parity(ours: list[float], reference: list[float]) -> None:
    assert len(ours) == len(reference) == STEPS
    for step, (a, b) in enumerate(zip(ours, reference), start=1):
        assert abs(a - b) <= 1e-4, f"step {step}: ours {a!r} vs TRL {b!r}"
    # The run must actually train, or equal losses would prove little.
    assert len({round(x, 6) for x in ours}) > 1


def test_tiny_llama_matches_trl(tmp_path, tiny_llama, bpe_tokenizer):
    dataset = tokenized_pairs(bpe_tokenizer, n=24, max_length=40)
    assert all(
        all(m) for m in list(dataset["attention_mask_chosen"]) + list(dataset["attention_mask_rejected"])
    )
    assert_parity(*run_both(tmp_path, tiny_llama, bpe_tokenizer, dataset))


def test_tiny_llama_with_margin_and_centering_matches_trl(tmp_path, tiny_llama, bpe_tokenizer):
    dataset = tokenized_pairs(bpe_tokenizer, n=24, max_length=40, margin=True)
    assert_parity(*run_both(tmp_path, tiny_llama, bpe_tokenizer, dataset, center_rewards_coefficient=0.01))


@pytest.mark.slow  # a minute on two cores: the MiniLM encoder trained twice (ours and TRL's)
def test_minilm_matches_trl(tmp_path, minilm_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=1)
    dataset = tokenized_pairs(tokenizer, n=24, max_length=32)
    ours, reference = run_both(tmp_path, model, tokenizer, dataset, learning_rate=1e-4)
    assert_parity(ours, reference)
