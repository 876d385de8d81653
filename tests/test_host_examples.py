"""The hosts' own public reward-model examples run with only the model path, data path and step
count changed: LLaMA-Factory's ``llama3_lora_reward.yaml`` and ``qwen3_lora_reward.yaml`` through
``reward-plugin train`` (a subprocess, as a user runs it), and Axolotl's
``examples/qwen2/reward-model.yaml`` with our one plugin line through ``axolotl train`` (skipped,
saying why, where Axolotl is not installed); tiny local models of each family and the shortest
rows of LLaMA-Factory's own ``dpo_en_demo`` data. The saved adapter or model loads and was trained.

The example files are fixtures, byte for byte as published (``tests/fixtures/hosts/README.md``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, LLAMAFACTORY_DEMO, ROOT
from test_axolotl_e2e import requires_axolotl, run_axolotl_file

from reward_plugin.hosts.hardware import detect_machine

pytestmark = pytest.mark.slow

EXAMPLES = FIXTURES / "hosts"
CHAT_TEMPLATES = FIXTURES / "chat_templates"
STEPS = 2
PAIRS = 16  # two steps of the examples' 1 x 8 accumulated pairs


def edited_example(source: Path, replace: dict[str, str], add: dict[str, str]) -> str:
    """The example's text with the values of the keys in ``replace`` changed and ``add`` appended;
    every other line is the published one."""
    lines = source.read_text(encoding="utf-8").splitlines()
    changed = 0
    for i, line in enumerate(lines):
        key = line.split(":", 1)[0]
        if key in replace:
            lines[i] = f"{key}: {replace[key]}"
            changed += 1
    assert changed == len(replace), "a key to change is not in the example"
    lines += ["", "### changed for the test"] + [f"{key}: {value}" for key, value in add.items()]
    return "\n".join(lines) + "\n"


def tiny_model(folder: Path, family: str, tokenizer_dir: str) -> Path:
    """A 2-layer random model of ``family`` with the BPE test tokenizer and the family's real chat template."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, LlamaConfig, Qwen3Config

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    template = {"llama": "llama3.jinja", "qwen3": "qwen3_instruct_2507.jinja"}[family]
    tokenizer.chat_template = (CHAT_TEMPLATES / template).read_text(encoding="utf-8")
    common = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "num_labels": 1,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = LlamaConfig(**common) if family == "llama" else Qwen3Config(head_dim=8, **common)
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def llamafactory_data(folder: Path, rows: int = PAIRS) -> Path:
    """LLaMA-Factory's data folder layout: dpo_en_demo.json (its ``rows`` shortest rows, to keep the
    test fast on two shared cores) and the dataset_info.json entry of LLaMA-Factory's own file."""
    folder.mkdir()
    demo = json.loads(Path(LLAMAFACTORY_DEMO).read_text(encoding="utf-8"))
    demo = sorted(demo, key=lambda row: len(json.dumps(row)))[:rows]
    (folder / "dpo_en_demo.json").write_text(json.dumps(demo), encoding="utf-8")
    shutil.copyfile(EXAMPLES / "llamafactory" / "dataset_info.json", folder / "dataset_info.json")
    return folder


def reward_plugin_train(config: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "reward_plugin", "train", str(config)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.mark.parametrize(
    ("example", "family", "template_line"),
    [
        ("llama3_lora_reward.yaml", "llama", "'llama3': using the shipped 'llama3' template"),
        ("qwen3_lora_reward.yaml", "qwen3", "'qwen3_nothink': using the shipped 'chatml' template"),
    ],
)
def test_llamafactory_example_trains_unchanged(tmp_path, bpe_tokenizer_path, example, family, template_line):
    from peft import AutoPeftModelForSequenceClassification
    from safetensors.torch import load_file

    model_dir = tiny_model(tmp_path / "model", family, bpe_tokenizer_path)
    data = llamafactory_data(tmp_path / "data")
    config = tmp_path / example
    config.write_text(
        edited_example(
            EXAMPLES / "llamafactory" / example,
            replace={"model_name_or_path": str(model_dir)},
            add={"dataset_dir": str(data), "max_steps": str(STEPS)},
        ),
        encoding="utf-8",
    )
    result = reward_plugin_train(config, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]

    # The notices: each once, at the start, before any training output.
    err = result.stderr
    assert err.count("LLaMA-Factory keys without effect here: ") == 1
    assert err.count(template_line) == 1
    assert "Traceback" not in err
    # Both families are proven exact on the fast layouts (docs/models.md): no fallback to the padded one.
    assert "uses the standard layout" not in err
    if os.cpu_count() and os.cpu_count() < 16:
        assert err.count("more workers than the") == 1 and "preprocessing_num_workers 16 ->" in err

    # Written where the example says (relative to the working directory), as a LoRA adapter that
    # loads and was trained: LoRA B matrices start at zero, so a nonzero one moved.
    saved = tmp_path / edited_example_value(config, "output_dir")
    assert f"saved the reward model to {Path(edited_example_value(config, 'output_dir'))}" in result.stdout
    adapter = json.loads((saved / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and adapter["lora_alpha"] == 16 and adapter["task_type"] == "SEQ_CLS"
    weights = load_file(saved / "adapter_model.safetensors")
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and any(w.abs().sum() > 0 for w in lora_b)
    model = AutoPeftModelForSequenceClassification.from_pretrained(saved, num_labels=1).eval()
    stats = json.loads((saved / "reward_stats.json").read_text())
    # Every pair, none dropped, from the training forwards: no scoring pass after the steps.
    assert (stats["num_pairs"], stats["source"]) == (PAIRS, "training_forwards")
    import torch

    with torch.no_grad():
        reward = model(input_ids=torch.tensor([[5, 6, 7]])).logits
    assert reward.shape == (1, 1) and torch.isfinite(reward).all()


def edited_example_value(config: Path, key: str) -> str:
    for line in config.read_text(encoding="utf-8").splitlines():
        if line.startswith(f"{key}:"):
            return line.split(":", 1)[1].strip()
    raise KeyError(key)


def bradley_terry_rows(n: int = PAIRS) -> list[dict]:
    """Rows in the layout of Axolotl's ``bradley_terry.chat_template`` (``system?``, ``input``,
    ``chosen``, ``rejected``): the shortest single-turn rows of LLaMA-Factory's dpo_en_demo."""
    demo = json.loads(Path(LLAMAFACTORY_DEMO).read_text(encoding="utf-8"))
    rows = [
        {
            "input": row["conversations"][0]["value"],
            "chosen": row["chosen"]["value"],
            "rejected": row["rejected"]["value"],
        }
        for row in demo
        if len(row["conversations"]) == 1 and row["conversations"][0]["from"] == "human"
    ]
    return sorted(rows, key=lambda row: len(json.dumps(row)))[:n]


@requires_axolotl
def test_axolotl_reward_model_example_trains_with_our_one_line(tmp_path, bpe_tokenizer_path):
    """Axolotl's ``examples/qwen2/reward-model.yaml`` plus our plugin line, written for a GPU
    (bf16, tf32, adamw_bnb_8bit, flash_attention_2), runs on this machine through ``axolotl train``."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Qwen2Config

    model_dir = tmp_path / "model"
    tokenizer = AutoTokenizer.from_pretrained(bpe_tokenizer_path)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    initial = AutoModelForSequenceClassification.from_config(config)
    initial.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in bradley_terry_rows()), encoding="utf-8")
    cfg = tmp_path / "reward-model.yaml"
    cfg.write_text(
        edited_example(
            EXAMPLES / "axolotl" / "reward-model.yaml",
            replace={"base_model": str(model_dir), "  - path": str(data)},
            add={"max_steps": str(STEPS)},
        ),
        encoding="utf-8",
    )
    result = run_axolotl_file(cfg, tmp_path, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    logs = result.stdout + result.stderr
    assert "Axolotl chat_template 'qwen_25': conversations are rendered with the template Axolotl" in logs
    if detect_machine().accelerator is None:
        assert logs.count("no GPU here: the config asks for bf16, tf32; training in fp32 on the CPU") == 1
        assert (
            "optimizer adamw_bnb_8bit -> adamw_torch, attn_implementation flash_attention_2 -> sdpa" in logs
        )

    out = tmp_path / "outputs" / "out"  # the example's output_dir, relative to the working directory
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert model.config.num_labels == 1
    trained = dict(model.named_parameters())
    assert any(not torch.equal(p, trained[name]) for name, p in initial.named_parameters())
    stats = json.loads((out / "reward_stats.json").read_text())
    assert stats["split"] == "train" and stats["num_pairs"] == PAIRS
    assert model.config.reward_mean == pytest.approx(stats["mean"], abs=1e-9)
