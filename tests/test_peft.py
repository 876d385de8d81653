"""PEFT: with a LoRA `peft_config` only the adapter and the head train, and the saved adapter reloads."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from conftest import tokenized_pairs

peft = pytest.importorskip("peft")

from reward_plugin import ConfigError, RewardConfig, RewardTrainer


def args(tmp_path, **overrides):
    kwargs = {
        "output_dir": str(tmp_path / "out"),
        "max_steps": 3,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-2,
        "logging_steps": 1,
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,
        "bf16": False,
    }
    kwargs.update(overrides)
    return RewardConfig(**kwargs)


def train_lora(tmp_path, model, tokenizer, target_modules, head, **overrides):
    base = copy.deepcopy(model)
    data = tokenized_pairs(tokenizer, n=8, max_length=24)
    trainer = RewardTrainer(
        model=model,
        args=args(tmp_path, **overrides),
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=peft.LoraConfig(r=4, lora_alpha=8, target_modules=target_modules),
    )
    assert isinstance(trainer.model, peft.PeftModel)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainable = {name for name, p in trainer.model.named_parameters() if p.requires_grad}
    # Exactly the LoRA matrices and the head's trainable copy.
    assert trainable == {n for n in before if "lora_" in n or f"{head}.modules_to_save" in n}
    assert any("lora_A" in n for n in trainable) and any("lora_B" in n for n in trainable)
    assert any(f"{head}.modules_to_save" in n for n in trainable)

    trainer.train()
    after = dict(trainer.model.named_parameters())
    changed = {name for name in before if not torch.equal(before[name], after[name].detach())}
    assert changed == trainable, (
        f"frozen but changed: {changed - trainable}; trainable but unchanged: {trainable - changed}"
    )
    assert [e for e in trainer.state.log_history if "loss" in e and "accuracy" in e]

    trainer.save_model()
    out = tmp_path / "out"
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    stats = json.loads((out / "reward_stats.json").read_text())
    assert stats == trainer.reward_stats and stats["num_pairs"] > 0
    assert "library_name: peft" in (out / "README.md").read_text()

    predicted = trainer.predict(data).predictions
    bare_base = copy.deepcopy(base)
    reloaded = peft.PeftModel.from_pretrained(base, str(out)).eval()
    reference = []
    with torch.no_grad():
        for row in data:
            reference.append(
                [
                    reloaded(input_ids=torch.tensor([row[f"input_ids_{s}"]])).logits[0, 0].item()
                    for s in ("chosen", "rejected")
                ]
            )
    np.testing.assert_allclose(predicted, reference, atol=1e-5, rtol=0)
    # ... and the adapter really matters: the bare base model scores differently.
    with torch.no_grad():
        bare = bare_base(input_ids=torch.tensor([data[0]["input_ids_chosen"]])).logits[0, 0].item()
    assert abs(bare - reference[0][0]) > 1e-4


def test_lora_on_tiny_llama(tmp_path, tiny_llama, bpe_tokenizer):
    train_lora(tmp_path, tiny_llama, bpe_tokenizer, ["q_proj", "v_proj"], head="score")


def test_lora_on_minilm(tmp_path, minilm_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=1)
    # The BERT head has a bias, which only the centring term moves (it cancels in r_chosen - r_rejected).
    train_lora(
        tmp_path, model, tokenizer, ["query", "value"], head="classifier", center_rewards_coefficient=0.01
    )


def test_peft_config_errors(tmp_path, tiny_llama, bpe_tokenizer):
    data = tokenized_pairs(bpe_tokenizer, n=2, max_length=8)
    with pytest.raises(ConfigError, match="`peft_config` must be a peft.PeftConfig"):
        RewardTrainer(
            model=tiny_llama,
            args=args(tmp_path),
            train_dataset=data,
            processing_class=bpe_tokenizer,
            peft_config={"r": 4},
        )
    with pytest.raises(ConfigError, match="task_type` is 'CAUSAL_LM'"):
        RewardTrainer(
            model=tiny_llama,
            args=args(tmp_path),
            train_dataset=data,
            processing_class=bpe_tokenizer,
            peft_config=peft.LoraConfig(task_type="CAUSAL_LM"),
        )
    wrapped = peft.get_peft_model(copy.deepcopy(tiny_llama), peft.LoraConfig(task_type="SEQ_CLS"))
    with pytest.raises(ConfigError, match="already a PeftModel"):
        RewardTrainer(
            model=wrapped,
            args=args(tmp_path),
            train_dataset=data,
            processing_class=bpe_tokenizer,
            peft_config=peft.LoraConfig(),
        )
