"""The reward stage's export: the final model is saved once, and a merged LoRA export loads as a plain model."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import read_hh_rows, write_jsonl

from reward_plugin.hosts.runner import prepare_run, run_training
from reward_plugin.trainer import RewardTrainer


def _config(tmp_path, model_dir: str, **extra) -> dict:
    data = write_jsonl(tmp_path / "hh.jsonl", read_hh_rows(24))
    return {
        "model": model_dir,
        "train_data": {"path": str(data), "format": "hh-rlhf", "on_error": "skip"},
        "output_dir": str(tmp_path / "out"),
        "max_length": 48,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-2,
        "max_steps": 3,
        "save_strategy": "no",
        "report_to": "none",
        "bf16": False,
        "gradient_checkpointing": False,
        "disable_tqdm": True,
        **extra,
    }


def _count_saves(monkeypatch) -> list[str]:
    calls: list[str] = []
    original = RewardTrainer.save_model

    def counting(self, output_dir=None, _internal_call=False):
        calls.append(str(output_dir or self.args.output_dir))
        return original(self, output_dir, _internal_call)

    monkeypatch.setattr(RewardTrainer, "save_model", counting)
    return calls


def test_a_run_saves_the_final_model_once(tmp_path, tiny_llama_dir, monkeypatch):
    saves = _count_saves(monkeypatch)
    result = run_training(_config(tmp_path, tiny_llama_dir))
    assert saves == [str(result.output_dir)]
    assert (result.output_dir / "model.safetensors").is_file()
    stats = json.loads((result.output_dir / "reward_stats.json").read_text())
    config = json.loads((result.output_dir / "config.json").read_text())
    assert (config["reward_mean"], config["reward_std"]) == (stats["mean"], stats["std"]) and stats[
        "num_pairs"
    ] > 0


def _rewards(model, dataset) -> torch.Tensor:
    """Reward of every chosen/rejected sequence, one unpadded sequence at a time (last token's score)."""
    out = []
    model.eval()
    with torch.no_grad():
        for row in dataset:
            for side in ("chosen", "rejected"):
                ids = torch.tensor([row[f"input_ids_{side}"]])
                out.append(model(input_ids=ids).logits[0, 0].item())
    return torch.tensor(out)


def test_merged_lora_export_loads_as_a_plain_model_with_the_same_rewards(
    tmp_path, tiny_llama_dir, monkeypatch
):
    peft = pytest.importorskip("peft")  # installed: from_pretrained would prefer an adapter it finds
    from transformers import AutoModelForSequenceClassification

    saves = _count_saves(monkeypatch)
    config = _config(
        tmp_path, tiny_llama_dir, peft={"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    )
    config["merge_adapter"] = True
    stage, cfg = prepare_run(config)
    tokenizer = stage.build_tokenizer(cfg)
    data = stage.build_datasets(cfg, tokenizer)
    model = stage.build_model(cfg, tokenizer)
    trainer = stage.build_trainer(cfg, model, tokenizer, data)
    trainer.train()
    assert isinstance(trainer.model, peft.PeftModel)
    pairs = data["train"].select(range(6))
    trained = _rewards(trainer.model, pairs)

    out = stage.export(trainer, cfg)
    assert saves == []  # train() did not save the adapter first; the merged model is the only save
    assert not (out / "adapter_config.json").exists() and not (out / "adapter_model.safetensors").exists()
    loaded = AutoModelForSequenceClassification.from_pretrained(out)
    assert (
        not isinstance(loaded, peft.PeftModel) and type(loaded).__name__ == "LlamaForSequenceClassification"
    )
    torch.testing.assert_close(_rewards(loaded, pairs), trained, atol=1e-5, rtol=0)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_llama_dir)
    assert (_rewards(base, pairs) - trained).abs().max() > 1e-3  # the adapter (and head) changed the rewards
