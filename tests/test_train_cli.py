"""``reward-plugin train`` and ``reward-plugin eval`` end to end through the CLI: the embedded
MiniLM default, a tiny causal model from a YAML config on raw hh-rlhf rows, --resume, and the
evaluation report checked against an independent per-pair forward pass."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import read_hh_rows, write_jsonl
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from reward_plugin.cli import main

METRIC_KEYS = {"accuracy", "margin", "rewards/chosen_mean", "rewards/rejected_mean"}


def log_history(folder: Path) -> list[dict]:
    states = sorted(
        folder.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1])
    )
    return json.loads(states[-1].read_text())["log_history"]


def changed_fraction(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, bool]:
    return {name: not torch.equal(before[name], after[name]) for name in before if name in after}


@pytest.mark.slow
def test_embedded_default_trains_minilm_on_the_bundled_sample(tmp_path, monkeypatch, minilm_path, capsys):
    monkeypatch.chdir(tmp_path)
    # The default saves no checkpoints; one here keeps the log history (trainer_state.json) to read.
    argv = [
        "train",
        "--max_steps",
        "2",
        "--logging_steps",
        "1",
        "--eval_size",
        "8",
        "--save_strategy",
        "steps",
    ]
    assert main([*argv, "--save_steps", "2"]) == 0
    out_dir = tmp_path / "outputs" / "reward-model"
    printed = capsys.readouterr().out
    assert f"saved the reward model to {Path('outputs/reward-model')}" in printed
    # Every printed accuracy carries its interval and pair count; the loss is shown next to chance.
    assert re.search(
        r"^eval accuracy \d\.\d{4} \(95% CI \d\.\d{4}-\d\.\d{4}, 8 pairs\), margin ", printed, re.MULTILINE
    )
    assert re.search(
        r"^train loss \d\.\d{4} \(mean over the run; chance is ln 2 = 0\.6931\)$", printed, re.MULTILINE
    )
    model = AutoModelForSequenceClassification.from_pretrained(out_dir)
    assert model.config.num_labels == 1
    stats = json.loads((out_dir / "reward_stats.json").read_text())
    assert {"mean", "std"} <= set(stats) and np.isfinite(stats["mean"])
    assert (out_dir / "README.md").is_file()
    logged = log_history(out_dir)
    assert METRIC_KEYS <= set(logged[0]) and "loss" in logged[0]
    assert any("eval_accuracy" in entry for entry in logged) or (out_dir / "eval_results.json").is_file()
    # every pretrained weight moved (the classifier head is new, so it is not compared)
    before = load_file(str(Path(minilm_path) / "model.safetensors"))
    after = {k.removeprefix("bert."): v for k, v in load_file(str(out_dir / "model.safetensors")).items()}
    before = {k.removeprefix("bert."): v for k, v in before.items() if "position_ids" not in k}
    moved = changed_fraction(before, after)
    assert moved and all(moved.values()), [k for k, v in moved.items() if not v]


@pytest.fixture(scope="module")
def hh_jsonl(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("hh") / "hh.jsonl", read_hh_rows(40))


@pytest.fixture(scope="module")
def trained_llama(tmp_path_factory, tiny_llama_dir, hh_jsonl) -> Path:
    root = tmp_path_factory.mktemp("run")
    config = root / "run.yaml"
    config.write_text(
        f"""\
model: {tiny_llama_dir}
train_data: {{path: {hh_jsonl}, format: hh-rlhf, on_error: skip}}
eval_size: 8
output_dir: {root / "out"}
max_length: 128
per_device_train_batch_size: 4
learning_rate: 1.0e-3
max_steps: 4
save_strategy: steps
save_steps: 2
logging_steps: 1
bf16: false
gradient_checkpointing: false
seed: 7
""",
        encoding="utf-8",
    )
    assert main(["train", str(config)]) == 0
    return root


def test_tiny_llama_trains_from_yaml_and_every_parameter_changes(trained_llama, tiny_llama_dir):
    out_dir = trained_llama / "out"
    model = AutoModelForSequenceClassification.from_pretrained(out_dir)
    assert type(model).__name__ == "LlamaForSequenceClassification" and model.config.pad_token_id == 0
    before = load_file(str(Path(tiny_llama_dir) / "model.safetensors"))
    moved = changed_fraction(before, load_file(str(out_dir / "model.safetensors")))
    assert set(moved) == set(before) and all(moved.values()), [k for k, v in moved.items() if not v]
    logged = [entry for entry in log_history(out_dir) if "loss" in entry]
    assert [entry["step"] for entry in logged] == [1, 2, 3, 4]
    assert all(METRIC_KEYS <= set(entry) and np.isfinite(entry["loss"]) for entry in logged)
    assert json.loads((out_dir / "reward_stats.json").read_text())["num_pairs"] == 8


def test_resume_continues_from_the_last_checkpoint(trained_llama, capsys):
    config = trained_llama / "run.yaml"
    assert main(["train", str(config), "--resume", "--max_steps", "6"]) == 0
    state = json.loads((trained_llama / "out" / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert steps == [1, 2, 3, 4, 5, 6]  # steps 1-4 come from the first run's checkpoint


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, tiny_llama_dir, hh_jsonl, capsys):
    code = main(
        [
            "train",
            "--model",
            tiny_llama_dir,
            "--train_data",
            str(hh_jsonl),
            "--output_dir",
            str(tmp_path / "new"),
        ]
        + ["--resume", "--max_steps", "1"]
    )
    assert code == 1
    assert "--resume: no checkpoint-N folder in" in capsys.readouterr().err


def test_missing_train_data_is_one_line_naming_the_path(tmp_path, tiny_llama_dir, capsys):
    missing = tmp_path / "nope.parquet"
    args = [
        "train",
        "--model",
        tiny_llama_dir,
        "--train_data",
        str(missing),
        "--output_dir",
        str(tmp_path / "o"),
    ]
    assert main([*args, "--max_steps", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1] == f"error: {missing}: no such file or folder; check the data path (train_data / eval_data)"
    )
    assert not any("Traceback" in line for line in err)


def independent_rewards(model_dir: Path, table: Path) -> np.ndarray:
    """One unpadded forward per response with the plain transformers model: (n, 2) rewards."""
    import pyarrow.parquet as pq

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    rows = pq.read_table(table).to_pylist()
    out = []
    with torch.no_grad():
        for row in rows:
            out.append(
                [
                    model(input_ids=torch.tensor([row[f"input_ids_{side}"]])).logits[0, 0].item()
                    for side in ("chosen", "rejected")
                ]
            )
    return np.array(out)


def test_eval_report_matches_an_independent_forward(trained_llama, hh_jsonl, capsys):
    out_dir = trained_llama / "out"
    table = trained_llama / "pairs.parquet"
    convert = ["convert", str(hh_jsonl), "--format", "hh-rlhf", "--tokenizer", str(out_dir), "-o", str(table)]
    assert main([*convert, "--max-length", "128", "--on-error", "skip", "--no-progress"]) == 0
    capsys.readouterr()
    plot = trained_llama / "eval.png"
    assert main(["eval", "--model", str(out_dir), "--data", str(table), "--json", "--plot", str(plot)]) == 0
    report = json.loads(capsys.readouterr().out)
    rewards = independent_rewards(out_dir, table)
    gap = rewards[:, 0] - rewards[:, 1]
    assert report["num_pairs"] == len(rewards)
    assert report["accuracy"] == pytest.approx(float((gap > 0).mean()), abs=1e-12)
    # fp32, batched with padding vs one unpadded sequence at a time
    assert report["margin"]["mean"] == pytest.approx(gap.mean(), abs=1e-5)
    assert report["rewards"]["chosen"]["mean"] == pytest.approx(rewards[:, 0].mean(), abs=1e-5)
    assert report["rewards"]["rejected"]["std"] == pytest.approx(rewards[:, 1].std(), abs=1e-5)
    assert sum(b["count"] for b in report["accuracy_by_reward_gap"]) == len(rewards)
    # every pair is its own prompt: pairwise = best-of-2 = accuracy, intervals over the pairs
    for key in ("pairwise_accuracy", "best_of_n_accuracy"):
        assert report[key]["accuracy"] == report["accuracy"] and report[key]["prompts"] == len(rewards)
    assert report["length_bias"]["correlation"]["responses"] == 2 * len(rewards)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same numbers from raw data converted on the fly with the model's tokenizer, as text
    raw = [
        "eval",
        "--model",
        str(out_dir),
        "--data",
        str(hh_jsonl),
        "--format",
        "hh-rlhf",
        "--max-length",
        "128",
    ]
    assert main(raw) == 0
    text = capsys.readouterr().out
    assert f"accuracy: {report['accuracy']:.4f}" in text and f"({report['num_pairs']} pairs, " in text
    assert f"rewards chosen: mean {report['rewards']['chosen']['mean']:.4f}" in text


def test_llamafactory_rm_yaml_trains_with_lora(tmp_path, tiny_llama_dir, capsys):
    """A LLaMA-Factory `stage: rm` YAML runs as it stands: demo data via dataset_info.json, LoRA."""
    from test_runner import LLAMAFACTORY_YAML, llamafactory_dir

    data = llamafactory_dir(tmp_path)
    config = tmp_path / "llamafactory_rm.yaml"
    config.write_text(
        LLAMAFACTORY_YAML.format(model=tiny_llama_dir, dataset_dir=data, output_dir=tmp_path / "saves"),
        encoding="utf-8",
    )
    assert main(["train", str(config), "--max_steps", "3", "--save_strategy", "no"]) == 0
    saved = tmp_path / "saves"
    adapter = json.loads((saved / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["lora_alpha"] == 8 and adapter["task_type"] == "SEQ_CLS"
    model = AutoModelForSequenceClassification.from_pretrained(saved)  # peft installed: adapter + head
    assert model.config.num_labels == 1
    assert (saved / "reward_stats.json").is_file()


def test_command_line_data_replaces_the_embedded_defaults_eval_size(
    tmp_path, monkeypatch, minilm_path, capsys
):
    monkeypatch.chdir(tmp_path)
    rows = read_hh_rows(12)
    train, held_out = (
        write_jsonl(tmp_path / "train.jsonl", rows[:8]),
        write_jsonl(tmp_path / "eval.jsonl", rows[8:]),
    )
    argv = ["train", "--train_data", str(train), "--eval_data", str(held_out), "--max_steps", "1"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    # The user's eval_data wins over the default's eval_size (0.25), said once; every eval row is scored.
    assert err.count("the embedded default: --eval_data replaces `eval_size: 0.25`") == 1
    assert re.search(r"^eval accuracy \d\.\d{4} \(95% CI \d\.\d{4}-\d\.\d{4}, 4 pairs\)", out, re.MULTILINE)
    stats = json.loads((tmp_path / "outputs" / "reward-model" / "reward_stats.json").read_text())
    assert (stats["split"], stats["source"], stats["num_pairs"]) == ("eval", "evaluation", 4)
    # The same pair of keys given together without a config stays one clean error line.
    assert main(["train", "--eval_data", str(held_out), "--eval_size", "2", "--check"]) == 1
    assert capsys.readouterr().err.strip().endswith("give `eval_data` or `eval_size`, not both")
