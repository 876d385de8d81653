"""TRL's GRPOTrainer trains a tiny policy for two steps on CPU with ``reward_funcs=[RewardScorer]``."""

from __future__ import annotations

import datasets
import pytest
import torch
from conftest import read_hh_rows

from reward_plugin import RewardScorer

pytest.importorskip("trl")

pytestmark = pytest.mark.slow  # two GRPO steps with generation: ~40 s on two cores


def test_grpo_trains_two_steps_with_the_scorer_as_reward_function(tmp_path, tiny_llama_dir, bpe_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    policy = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(bpe_tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
            pad_token_id=bpe_tokenizer.pad_token_id,
            eos_token_id=bpe_tokenizer.eos_token_id,
            bos_token_id=bpe_tokenizer.bos_token_id,
        )
    )
    prompts = [r["chosen"][:40] for r in read_hh_rows(8)]
    scorer = RewardScorer.from_pretrained(tiny_llama_dir, device="cpu")
    seen: list[tuple[list, list, list[float]]] = []

    def reward_model(prompts, completions, **kwargs):
        rewards = scorer(prompts=prompts, completions=completions, **kwargs)
        seen.append((list(prompts), list(completions), rewards))
        return rewards

    args = GRPOConfig(
        output_dir=str(tmp_path / "grpo"),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        max_steps=2,
        learning_rate=1e-3,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = GRPOTrainer(
        model=policy,
        reward_funcs=[reward_model],
        args=args,
        train_dataset=datasets.Dataset.from_dict({"prompt": prompts}),
        processing_class=bpe_tokenizer,
    )
    trainer.train()
    assert trainer.state.global_step == 2
    assert len(seen) >= 2 and all(len(r) == len(c) for _, c, r in seen)
    # The rewards TRL logged are the scorer's, and they equal a direct call on the same texts.
    logged = [
        e["rewards/reward_model/mean"] for e in trainer.state.log_history if "rewards/reward_model/mean" in e
    ]
    assert len(logged) == 2
    batch_means = [sum(r) / len(r) for _, _, r in seen]
    assert logged[0] == pytest.approx(batch_means[0], abs=1e-4)
    p, c, r = seen[-1]
    assert scorer(prompts=p, completions=c) == pytest.approx(r, abs=1e-5)
    # A bare scorer is accepted as reward function too (TRL names it by __name__).
    GRPOTrainer(
        model=policy,
        reward_funcs=[scorer],
        args=args,
        train_dataset=datasets.Dataset.from_dict({"prompt": prompts}),
        processing_class=bpe_tokenizer,
    )
