"""End to end: ``axolotl train cfg.yml --launcher python`` with our RewardPlugin, in Axolotl's own venv.

Axolotl 0.19.0 pins other versions of transformers/datasets/peft than ours, so it lives in a
separate virtual environment (``.ci/install-axolotl.sh`` creates ``.venv-axolotl``); the test
runs the ``axolotl`` command of that venv in a subprocess, with this checkout first on
``PYTHONPATH``. Point ``REWARD_PLUGIN_AXOLOTL_PYTHON`` at another venv's ``python`` to use it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, read_hh_rows, write_jsonl

# Each test runs `axolotl train` (up to 300 s a run) once or twice.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

TRAIN_PAIRS, EVAL_PAIRS, STEPS = 32, 8, 4


def axolotl_command() -> Path | None:
    """The ``axolotl`` executable of the Axolotl venv, or None when Axolotl is not installed."""
    python = os.environ.get("REWARD_PLUGIN_AXOLOTL_PYTHON")
    command = Path(python).parent / "axolotl" if python else ROOT / ".venv-axolotl" / "bin" / "axolotl"
    return command if command.is_file() else None


AXOLOTL = axolotl_command()
requires_axolotl = pytest.mark.skipif(
    AXOLOTL is None,
    reason="Axolotl is not installed: run .ci/install-axolotl.sh (creates .venv-axolotl) or set "
    "REWARD_PLUGIN_AXOLOTL_PYTHON to the python of a venv with axolotl==0.19.0 and reward-plugin",
)


def run_axolotl(config: dict, workdir: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    path = workdir / "cfg.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return run_axolotl_file(path, workdir, timeout)


def run_axolotl_file(config: Path, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """``axolotl train CONFIG --launcher python`` in Axolotl's venv, offline, this checkout first on the path."""
    env = {
        **os.environ,
        "AXOLOTL_DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "WANDB_DISABLED": "true",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    return subprocess.run(
        [str(AXOLOTL), "train", str(config), "--launcher", "python"],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def base_config(model_dir: str, tmp_path: Path) -> dict:
    """An Axolotl reward-model run with the plugin on (CPU, fp32, a few steps)."""
    return {
        "base_model": model_dir,
        "plugins": ["reward_plugin.hosts.axolotl.RewardPlugin"],
        "reward_stage": "reward",
        "reward_dataset_format": "hh-rlhf",
        "reward_truncation": "left",
        "reward_center_rewards_coefficient": 0.01,
        "datasets": [{"path": str(tmp_path / "train.jsonl")}],
        "test_datasets": [{"path": str(tmp_path / "eval.jsonl")}],
        "sequence_len": 128,
        "micro_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "num_epochs": 1,
        "max_steps": STEPS,
        "learning_rate": 1e-3,
        "optimizer": "adamw_torch",
        "lr_scheduler": "constant",
        "logging_steps": 1,
        "eval_steps": 2,
        "save_steps": STEPS,
        "bf16": False,  # CPU: full precision (Axolotl would otherwise load fp16 weights)
        "fp16": False,
        "seed": 7,
        "output_dir": str(tmp_path / "out"),
    }


def independent_rewards(
    model_dir: Path | str, data_file: Path, fmt: str, tokenizer_dir: Path | str, *, adapter: bool = False
) -> tuple[list[float], list[float]]:
    """Rewards of a saved model on the pairs of ``data_file``: one unpadded forward per sequence, logits[0, 0]."""
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from dataset_formats import convert

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    table_path = data_file.with_suffix(".check.parquet")
    convert(data_file, table_path, format=fmt, tokenizer=tokenizer, max_length=128, progress=False)
    table = pq.read_table(table_path).to_pydict()
    if adapter:  # Axolotl's LoRA export: adapter files beside the base model's config.json
        from peft import AutoPeftModelForSequenceClassification

        model = AutoPeftModelForSequenceClassification.from_pretrained(model_dir, num_labels=1).eval()
    else:
        model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    chosen, rejected = [], []
    with torch.no_grad():
        for ids_c, ids_r in zip(table["input_ids_chosen"], table["input_ids_rejected"]):
            chosen.append(model(input_ids=torch.tensor([ids_c])).logits[0, 0].item())
            rejected.append(model(input_ids=torch.tensor([ids_r])).logits[0, 0].item())
    return chosen, rejected


@requires_axolotl
def test_axolotl_trains_with_our_trainer_and_exports_reward_stats(tmp_path, tiny_llama_dir):
    import numpy as np
    from transformers import AutoModelForSequenceClassification

    rows = read_hh_rows(TRAIN_PAIRS + EVAL_PAIRS)
    write_jsonl(tmp_path / "train.jsonl", rows[:TRAIN_PAIRS])
    eval_file = write_jsonl(tmp_path / "eval.jsonl", rows[TRAIN_PAIRS:])

    result = run_axolotl(base_config(tiny_llama_dir, tmp_path), tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    out = tmp_path / "out"

    # The logged loss came from our RewardTrainer: its reward metrics sit beside every train loss.
    state = json.loads((out / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    train_logs = [entry for entry in state["log_history"] if "loss" in entry]
    assert [entry["step"] for entry in train_logs] == list(range(1, STEPS + 1))
    for entry in train_logs:
        assert {"accuracy", "margin", "rewards/chosen_mean", "rewards/rejected_std"} <= entry.keys()
        assert np.isfinite(entry["loss"]) and 0 <= entry["accuracy"] <= 1
    eval_logs = [entry for entry in state["log_history"] if "eval_loss" in entry]
    assert eval_logs and {"eval_accuracy", "eval_margin"} <= eval_logs[-1].keys()

    # The export loads as a one-output sequence classifier and carries our reward statistics,
    # computed on the final weights: compare with an independent unpadded forward over the eval pairs.
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 1
    stats = json.loads((out / "reward_stats.json").read_text())
    assert stats["split"] == "eval" and stats["num_pairs"] == EVAL_PAIRS
    assert model.config.reward_mean == pytest.approx(stats["mean"], abs=1e-9)
    assert model.config.reward_std == pytest.approx(stats["std"], abs=1e-9)
    chosen, rejected = independent_rewards(out, eval_file, "hh-rlhf", tiny_llama_dir)
    both = np.array(chosen + rejected)
    assert stats["mean"] == pytest.approx(both.mean(), abs=1e-4)
    assert stats["std"] == pytest.approx(both.std(), abs=1e-4)
    assert stats["accuracy"] == pytest.approx(np.mean(np.array(chosen) > np.array(rejected)))
    assert "reward-plugin" in (out / "README.md").read_text()


@requires_axolotl
def test_axolotl_lora_adapter_trains_the_head_and_exports_stats(tmp_path, tiny_llama_dir):
    """``adapter: lora`` (Axolotl applies it; the plugin keeps the causal-LM-only LoRA kernels off)."""
    import numpy as np
    from safetensors.torch import load_file

    rows = read_hh_rows(TRAIN_PAIRS + EVAL_PAIRS)
    write_jsonl(tmp_path / "train.jsonl", rows[:TRAIN_PAIRS])
    eval_file = write_jsonl(tmp_path / "eval.jsonl", rows[TRAIN_PAIRS:])
    config = base_config(tiny_llama_dir, tmp_path)
    del config["eval_steps"]
    config.update(
        adapter="lora",
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        lora_target_modules=["q_proj", "v_proj"],
        lora_modules_to_save=["score"],
        gradient_checkpointing=False,
    )
    result = run_axolotl(config, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    out = tmp_path / "out"
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS" and "score" in adapter["modules_to_save"]
    weights = load_file(out / "adapter_model.safetensors")
    assert any("lora_A" in name for name in weights) and any("score" in name for name in weights)

    stats = json.loads((out / "reward_stats.json").read_text())
    saved = json.loads((out / "config.json").read_text())
    assert (saved["reward_mean"], saved["reward_std"]) == (stats["mean"], stats["std"])
    chosen, rejected = independent_rewards(out, eval_file, "hh-rlhf", tiny_llama_dir, adapter=True)
    both = np.array(chosen + rejected)
    assert stats["num_pairs"] == EVAL_PAIRS
    assert stats["mean"] == pytest.approx(both.mean(), abs=1e-4)
    assert stats["std"] == pytest.approx(both.std(), abs=1e-4)


@requires_axolotl
def test_axolotl_score_data_with_fixed_margin(tmp_path, tiny_llama_dir):
    """Score rows (per-dataset ``type: score-pair``) go through our adapter; ``reward_margin: 0.5``
    replaces the data's margin (5) in the loss."""
    import numpy as np

    rows = read_hh_rows(16)
    score_rows = [
        {
            "prompt": r["chosen"].rsplit("\n\nAssistant:", 1)[0] + "\n\nAssistant:",
            "chosen": r["chosen"].rsplit("\n\nAssistant:", 1)[1],
            "rejected": r["rejected"].rsplit("\n\nAssistant:", 1)[1],
            "score_chosen": 8.0,
            "score_rejected": 3.0,
        }
        for r in rows
    ]
    data = write_jsonl(tmp_path / "train.jsonl", score_rows)
    config = base_config(tiny_llama_dir, tmp_path)
    config["datasets"] = [{"path": str(data), "type": "score-pair"}]
    for key in ("test_datasets", "eval_steps"):
        del config[key]
    # Learning rate 0: every step sees the initial model, so one epoch of logged losses (4 equal
    # batches) averages to the loss over all 16 pairs, computed here independently.
    config.update(max_steps=4, save_steps=4, reward_margin=0.5, learning_rate=0.0)

    result = run_axolotl(config, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    state = json.loads((tmp_path / "out" / "checkpoint-4" / "trainer_state.json").read_text())
    logged = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert len(logged) == 4

    chosen, rejected = independent_rewards(tiny_llama_dir, data, "score-pair", tiny_llama_dir)
    rc, rr = np.array(chosen), np.array(rejected)
    with_fixed = np.mean(np.logaddexp(0.0, -(rc - rr - 0.5))) + 0.01 * np.mean((rc + rr) ** 2)
    with_data = np.mean(np.logaddexp(0.0, -(rc - rr - 5.0))) + 0.01 * np.mean((rc + rr) ** 2)
    assert np.mean(logged) == pytest.approx(with_fixed, abs=2e-3)
    assert abs(with_data - with_fixed) > 1.0  # the check tells the two margins apart


@requires_axolotl
def test_axolotl_rejects_rl_with_reward_stage(tmp_path, tiny_llama_dir):
    write_jsonl(tmp_path / "train.jsonl", read_hh_rows(4))
    config = base_config(tiny_llama_dir, tmp_path)
    config["rl"] = "dpo"
    del config["test_datasets"]
    result = run_axolotl(config, tmp_path)
    assert result.returncode != 0
    assert "`rl: dpo` and `reward_stage: reward` exclude each other" in result.stdout + result.stderr


OFF_CHECK = """
from axolotl.integrations.base import PluginManager
from axolotl.integrations.config import merge_input_args
from axolotl.utils.dict import DictDefault

name = "reward_plugin.hosts.axolotl.RewardPlugin"
manager = PluginManager.get_instance()
manager.register(name)
plugin = manager.plugins[name]
cfg = DictDefault({"base_model": "m", "adapter": "lora", "datasets": [{"path": "x.jsonl"}]})
before = cfg.to_dict()
plugin.register(cfg)
assert plugin.load_datasets(cfg) is None
assert plugin.get_trainer_cls(cfg) is None
plugin.post_trainer_create(cfg, object())
plugin.post_train(cfg, None)
plugin.post_train_unload(cfg)
assert cfg.to_dict() == before, cfg.to_dict()
_, schema = merge_input_args()
assert {"reward_stage", "reward_margin", "reward_truncation"} <= set(schema.model_fields)
print("plugin off: ok")
"""


@requires_axolotl
def test_axolotl_plugin_does_nothing_without_reward_stage(tmp_path):
    """Listed but not switched on, the plugin leaves the config and Axolotl's own loading and trainer alone."""
    python = AXOLOTL.parent / "python"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "AXOLOTL_DO_NOT_TRACK": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [str(python), "-c", OFF_CHECK],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0 and "plugin off: ok" in result.stdout, result.stderr[-4000:]
