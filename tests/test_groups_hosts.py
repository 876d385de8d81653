"""Grouped tables through the hosts: ``reward-plugin train`` on two processes, and Axolotl."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import launch_two_processes
from safetensors.torch import load_file
from test_axolotl_e2e import base_config, requires_axolotl, run_axolotl
from test_faults import _losses
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


def write_config(folder, model, data, out, *, batch, steps, lr=1e-3, loss="bradley_terry", extra=""):
    path = folder / f"{out.name}.yaml"
    path.write_text(
        TRAIN_YAML.format(model=model, data=data, out=out, batch=batch, steps=steps, lr=lr, loss=loss) + extra
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
    launch_two_processes(["reward_plugin", "train", str(config)])
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


#: Per eval group: which of its chosen and of its rejected responses (positions, taken modulo
#: their number: a group may have fewer distinct ones) the uneven eval set keeps.
UNEVEN_KEEP = [
    ((0,), (0,)),
    ((0, 1), (0, 1, 2)),
    ((2,), (1, 2)),
    ((0, 1, 2), (0,)),
    ((1,), (1,)),
    ((0, 1, 2), (0, 1, 2)),
    ((0,), (0, 2)),
]


def uneven_groups(grouped_parquet, path):
    """7 RM-Bench groups cut to 2-6 responses and 1-9 pairs, margins 0.5 in every other group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(grouped_parquet)
    rows = []
    for k, (row, (good, bad)) in enumerate(zip(table.to_pylist(), UNEVEN_KEEP)):
        chosen = sorted({p["better"] for p in row["pairs"]})
        rejected = sorted({p["worse"] for p in row["pairs"]})
        keep = sorted({chosen[i % len(chosen)] for i in good} | {rejected[i % len(rejected)] for i in bad})
        where = {old: new for new, old in enumerate(keep)}
        pairs = [
            {"better": where[p["better"]], "worse": where[p["worse"]], "margin": 0.5 if k % 2 else None}
            for p in row["pairs"]
            if p["better"] in where and p["worse"] in where
        ]
        responses = [row["response_ids"][i] for i in keep]
        scores = [row["scores"][i] for i in keep]
        rows.append({**row, "response_ids": responses, "pairs": pairs, "scores": scores})
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    return rows


def test_two_process_evaluation_of_uneven_groups_matches_one_process(
    tmp_path, tiny_llama_dir, grouped_parquet, capsys
):
    """7 eval groups of unequal sizes, 2 per device: two processes get 4 groups each (the sampler
    repeats group 0) and unequal numbers of pairs. Every pair counts once: the eval metrics equal
    one process's within 1e-5 and the formulas over rewards computed here one response at a time
    within 1e-4 (fp32; learning rate 0, so the model is the saved one)."""
    rows = uneven_groups(grouped_parquet, tmp_path / "eval.parquet")
    counts = [len(r["pairs"]) for r in rows]
    assert min(counts) >= 1 and len(set(counts)) >= 4, counts  # uneven, none empty
    extra = f"eval_data: {tmp_path / 'eval.parquet'}\neval_strategy: steps\neval_steps: 1\n"
    extra += "per_device_eval_batch_size: 2\n"
    runs = {}
    for name, batch in (("one", 4), ("two", 2)):
        out = tmp_path / name
        config = write_config(
            tmp_path, tiny_llama_dir, grouped_parquet, out, batch=batch, steps=1, lr=0.0, extra=extra
        )
        if name == "one":
            assert reward_main(["train", str(config)]) == 0
            capsys.readouterr()
        else:
            launch_two_processes(["reward_plugin", "train", str(config)])
        history = json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())["log_history"]
        (runs[name],) = [e for e in history if "eval_loss" in e]
        runs[name + "_stats"] = json.loads((out / "reward_stats.json").read_text())
    better, worse, margins = [], [], []
    for row, rewards in group_rewards_of(tiny_llama_dir, tmp_path / "eval.parquet"):
        for p in row["pairs"]:
            better.append(rewards[p["better"]])
            worse.append(rewards[p["worse"]])
            margins.append(p["margin"] or 0.0)
    better, worse, margins = map(np.array, (better, worse, margins))
    want = {
        "eval_num_pairs": sum(counts),
        "eval_accuracy": float(np.mean(better > worse)),
        "eval_loss": float(np.mean(np.logaddexp(0.0, -(better - worse - margins)))),
        "eval_margin": float(np.mean(better - worse)),
        "eval_rewards/chosen_mean": float(better.mean()),
        "eval_rewards/rejected_std": float(worse.std()),
    }
    for key, value in want.items():
        assert runs["one"][key] == pytest.approx(value, abs=1e-4), key
    for key, value in runs["one"].items():
        if key.startswith("eval_") and not key.endswith(("runtime", "_per_second", "preparation_time")):
            assert runs["two"][key] == pytest.approx(value, abs=1e-5), key
    for key in ("num_pairs", "mean", "std", "accuracy"):
        assert runs["two_stats"][key] == pytest.approx(runs["one_stats"][key], abs=1e-5), key
    assert runs["one_stats"]["num_pairs"] == sum(counts)


@requires_axolotl
def test_axolotl_trains_groups_with_the_listwise_loss(tmp_path, tiny_llama_dir, grouped_parquet):
    """``reward_group_loss: plackett_luce`` on a grouped table; at learning rate 0 the logged losses
    average to the Plackett-Luce formula over the untrained model's rewards, computed here."""

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
    per_group = [
        plackett_luce_reference(rewards, row["scores"])
        for row, rewards in group_rewards_of(tiny_llama_dir, grouped_parquet)
    ]
    want = np.mean([x for t in per_group for x in t])
    assert logged == pytest.approx([want, want], abs=1e-4)


def group_rewards_of(model_dir, parquet):
    """``(row, rewards of its responses)`` per row of a grouped table, one forward per response (fp32)."""
    import pyarrow.parquet as pq
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    out = []
    with torch.no_grad():
        for row in pq.read_table(parquet).to_pylist():
            rewards = [
                model(input_ids=torch.tensor([row["prompt_ids"] + r])).logits[0, 0].item()
                for r in row["response_ids"]
            ]
            out.append((row, rewards))
    return out


@requires_axolotl
def test_axolotl_reward_margin_applies_to_the_pairs_of_groups(tmp_path, tiny_llama_dir, grouped_parquet):
    """``reward_margin: 0.5`` on a grouped table (RM-Bench: no margins of its own) is the margin of
    every pair inside the groups: at learning rate 0 the logged loss is the margin-0.5 Bradley-Terry
    loss over all 72 pairs, computed here, and far from the loss without a margin."""
    config = base_config(tiny_llama_dir, tmp_path)
    config["datasets"] = [{"path": str(grouped_parquet)}]
    for key in ("test_datasets", "eval_steps", "reward_dataset_format", "reward_center_rewards_coefficient"):
        del config[key]
    config.update(micro_batch_size=8, max_steps=1, save_steps=1, learning_rate=0.0, reward_margin=0.5)
    result = run_axolotl(config, tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    state = json.loads((tmp_path / "out" / "checkpoint-1" / "trainer_state.json").read_text())
    logged = [e["loss"] for e in state["log_history"] if "loss" in e]
    diffs = np.array(
        [
            rewards[p["better"]] - rewards[p["worse"]]
            for row, rewards in group_rewards_of(tiny_llama_dir, grouped_parquet)
            for p in row["pairs"]
        ]
    )
    assert len(diffs) == 72
    with_margin = float(np.mean(np.logaddexp(0.0, -(diffs - 0.5))))
    without = float(np.mean(np.logaddexp(0.0, -diffs)))
    assert logged == pytest.approx([with_margin], abs=1e-4)
    assert abs(with_margin - without) > 0.1  # the check tells the two apart
