"""Grouped tables through the hosts: ``reward-plugin train`` on two processes, and Axolotl."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT
from safetensors.torch import load_file
from test_axolotl_e2e import base_config, requires_axolotl, run_axolotl
from test_faults import _env, _free_port, _losses
from test_groups_data import rm_bench_rows
from test_groups_training import plackett_luce_reference

from dataset_formats import convert
from reward_plugin.cli import main as reward_main

pytestmark = pytest.mark.slow

TRAIN_YAML = """\
model: {model}
train_data: {data}
output_dir: {out}
max_length: 64
per_device_train_batch_size: {batch}
learning_rate: {lr}
max_steps: {steps}
save_strategy: steps
save_steps: {steps}
logging_steps: 1
bf16: false
gradient_checkpointing: false
dataloader_num_workers: 0
report_to: none
seed: 11
group_loss: {loss}
"""


@pytest.fixture(scope="module")
def grouped_parquet(tmp_path_factory, tiny_llama_dir):
    """8 RM-Bench prompts as a grouped table (9 pairs each), tokenized for the tiny Llama."""
    folder = tmp_path_factory.mktemp("groups")
    source = folder / "rm.json"
    source.write_text(json.dumps(rm_bench_rows(8)), encoding="utf-8")
    out = folder / "groups.parquet"
    stats = convert(
        source, out, format="rm-bench", tokenizer=tiny_llama_dir, max_length=64, groups=True, progress=False
    )
    assert (stats.groups_written, stats.pairs_written) == (8, 72)
    return out


def write_config(folder, model, data, out, *, batch, steps, lr=1e-3, loss="bradley_terry"):
    path = folder / f"{out.name}.yaml"
    path.write_text(
        TRAIN_YAML.format(model=model, data=data, out=out, batch=batch, steps=steps, lr=lr, loss=loss)
    )
    return path


def test_two_process_group_training_matches_one_process(tmp_path, tiny_llama_dir, grouped_parquet, capsys):
    """Every group has 9 pairs, so 2 groups on each of two processes are the batch of 4 groups on one."""
    pytest.importorskip("accelerate")
    steps = 2
    one, two = tmp_path / "one", tmp_path / "two"
    config = write_config(tmp_path, tiny_llama_dir, grouped_parquet, one, batch=4, steps=steps)
    assert reward_main(["train", str(config)]) == 0
    capsys.readouterr()
    config = write_config(tmp_path, tiny_llama_dir, grouped_parquet, two, batch=2, steps=steps)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["--main_process_port", str(_free_port()), "-m", "reward_plugin", "train", str(config)]
    env = _env(CUDA_VISIBLE_DEVICES="", ACCELERATE_USE_CPU="true")
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        pytest.fail(f"the two-process run did not finish in 600 s: {stderr[-4000:]}")
    assert proc.returncode == 0, stderr[-4000:]
    want = _losses(one / f"checkpoint-{steps}" / "trainer_state.json")
    got = _losses(two / f"checkpoint-{steps}" / "trainer_state.json")
    assert [s for s, _ in got] == [s for s, _ in want] == list(range(1, steps + 1))
    for (step, g), (_, w) in zip(got, want):
        assert abs(g - w) <= 1e-4, (step, g, w)
    state = json.loads((two / f"checkpoint-{steps}" / "trainer_state.json").read_text())
    assert all("accuracy" in e for e in state["log_history"] if "loss" in e)  # the gathered rewards
    ref, weights = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    for name, value in ref.items():
        torch.testing.assert_close(weights[name], value, atol=1e-4, rtol=0, msg=name)


@requires_axolotl
def test_axolotl_trains_groups_with_the_listwise_loss(tmp_path, tiny_llama_dir, grouped_parquet):
    """``reward_group_loss: plackett_luce`` on a grouped table; at learning rate 0 the logged losses
    average to the Plackett-Luce formula over the untrained model's rewards, computed here."""
    import pyarrow.parquet as pq
    from transformers import AutoModelForSequenceClassification

    config = base_config(tiny_llama_dir, tmp_path)
    config["datasets"] = [{"path": str(grouped_parquet)}]
    for key in ("test_datasets", "eval_steps", "reward_dataset_format", "reward_center_rewards_coefficient"):
        del config[key]
    # One batch holds all 8 groups, so every step's loss is the mean over all the choices.
    config.update(
        micro_batch_size=8, max_steps=2, save_steps=2, learning_rate=0.0, reward_group_loss="plackett_luce"
    )
    result = run_axolotl(config, tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    state = json.loads((tmp_path / "out" / "checkpoint-2" / "trainer_state.json").read_text())
    logged = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert len(logged) == 2
    model = AutoModelForSequenceClassification.from_pretrained(tiny_llama_dir).eval()
    per_group = []
    with torch.no_grad():
        for row in pq.read_table(grouped_parquet).to_pylist():
            rewards = [
                model(input_ids=torch.tensor([row["prompt_ids"] + r])).logits[0, 0].item()
                for r in row["response_ids"]
            ]
            terms = plackett_luce_reference(rewards, row["scores"])
            per_group.append(terms)
    want = np.mean([x for t in per_group for x in t])
    assert logged == pytest.approx([want, want], abs=1e-4)
