"""Pointwise and multi-attribute reward models: the masked loss against numpy, config and data
errors, and ``reward-plugin train`` (stage ``pointwise``) + ``reward-plugin eval --format pointwise``
on HelpSteer2-schema rows (tests/fixtures/helpsteer2), the report checked against an independent
per-row forward pass."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from reward_plugin.cli import main
from reward_plugin.errors import ConfigError, DataError
from reward_plugin.pointwise import HELPSTEER2_ATTRIBUTES, PointwiseConfig, pointwise_loss, read_responses

HS2 = Path(__file__).parent / "fixtures" / "helpsteer2" / "helpsteer2_rows.jsonl"
HS2_ROWS = [json.loads(line) for line in HS2.read_text(encoding="utf-8").splitlines()]


def test_pointwise_loss_is_the_masked_mean_squared_error():
    gen = np.random.default_rng(0)
    pred, target = gen.normal(size=(7, 5)), gen.normal(size=(7, 5))
    target[gen.random((7, 5)) < 0.3] = np.nan
    present = ~np.isnan(target)
    expected = np.sum((pred[present] - target[present]) ** 2) / present.sum()
    got = pointwise_loss(torch.tensor(pred), torch.tensor(target))
    assert got.item() == pytest.approx(expected, rel=1e-6)  # float32 against float64
    nothing = pointwise_loss(torch.zeros(2, 1, requires_grad=True), torch.full((2, 1), float("nan")))
    assert nothing.item() == 0.0


def test_config_checks_attributes_and_weights(tmp_path):
    cfg = PointwiseConfig(output_dir=str(tmp_path), attributes=["a", "b"])
    assert cfg.attribute_weights == [1.0, 0.0]
    with pytest.raises(ConfigError, match="one finite number per attribute"):
        PointwiseConfig(output_dir=str(tmp_path), attributes=["a", "b"], attribute_weights=[1.0])
    with pytest.raises(ConfigError, match="names a column twice"):
        PointwiseConfig(output_dir=str(tmp_path), attributes=["a", "a"])


def test_rows_are_read_with_missing_attributes_masked_and_bad_rows_named(tmp_path):
    rows = read_responses(HS2, HELPSTEER2_ATTRIBUTES)
    assert len(rows) == 28 and sum(math.isnan(s) for r in rows for s in r["scores"]) == 3
    assert [m["role"] for m in rows[24]["prompt"]] == ["user", "assistant", "user"]  # multi-turn prompt
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"prompt": "p", "response": "r", "helpfulness": 3})
        + "\n"
        + json.dumps({"prompt": "p", "response": "r", "helpfulness": "high"})
        + "\n"
    )
    with pytest.raises(
        DataError, match=r"bad.jsonl, row 1 \(0-based\), field 'helpfulness': expected a number"
    ):
        read_responses(bad, ["helpfulness"])
    bad.write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n")
    with pytest.raises(DataError, match="none of the attributes helpfulness"):
        read_responses(bad, ["helpfulness"])


def _independent_report(model_dir: Path):
    """Per-row forward passes (no padding) and the metrics computed from scratch."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from dataset_formats.adapters.scores import split_helpsteer_prompt
    from dataset_formats.rendering import _hh_render

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    cfg = model.config
    outs = []
    for row in HS2_ROWS:
        # no chat template in the tiny tokenizer: the plain hh-rlhf rendering
        msgs = [*split_helpsteer_prompt(row["prompt"]), {"role": "assistant", "content": row["response"]}]
        ids = tok(_hh_render(msgs, False))["input_ids"]
        with torch.no_grad():
            outs.append(model(input_ids=torch.tensor([ids])).logits[0].double().numpy())
    outs = np.array(outs)
    mean, std = np.array(cfg.reward_attribute_mean), np.array(cfg.reward_attribute_std)
    mae = {}
    for k, name in enumerate(HELPSTEER2_ATTRIBUTES):
        pairs = [
            (o[k] * std[k] + mean[k], r[name]) for o, r in zip(outs, HS2_ROWS) if r.get(name) is not None
        ]
        mae[name] = (np.mean([abs(p - t) for p, t in pairs]), len(pairs))
    w = np.array(cfg.reward_attribute_weights)
    correct = total = 0
    for i in range(0, len(HS2_ROWS), 2):  # the two responses of each prompt
        a, b = HS2_ROWS[i], HS2_ROWS[i + 1]
        weighted = [n for k, n in enumerate(HELPSTEER2_ATTRIBUTES) if w[k]]
        if any(r.get(n) is None for r in (a, b) for n in weighted):
            continue  # not rated on a weighted attribute: no true combined score
        ta = sum(w[k] * (a[n] - mean[k]) / std[k] for k, n in enumerate(HELPSTEER2_ATTRIBUTES) if w[k])
        tb = sum(w[k] * (b[n] - mean[k]) / std[k] for k, n in enumerate(HELPSTEER2_ATTRIBUTES) if w[k])
        if ta == tb:
            continue
        total += 1
        correct += int((outs[i] @ w > outs[i + 1] @ w) == (ta > tb))
    return mae, correct, total


@pytest.mark.slow
def test_train_and_eval_a_multi_attribute_model_through_the_cli(tmp_path, tiny_llama_dir, capsys):
    config = tmp_path / "pointwise.yaml"
    out = tmp_path / "out"
    config.write_text(
        f"""\
stage: pointwise
model: {tiny_llama_dir}
train_data: {HS2}
attributes: [{", ".join(HELPSTEER2_ATTRIBUTES)}]
attribute_weights: [0.5, 0.5, 0.25, 0.0, 0.0]
output_dir: {out}
max_length: 96
per_device_train_batch_size: 8
learning_rate: 1.0e-3
max_steps: 3
logging_steps: 1
save_strategy: "no"
use_cpu: true
""",
        encoding="utf-8",
    )
    assert main(["train", str(config)]) == 0
    assert f"saved the pointwise model to {out}" in capsys.readouterr().out
    saved = json.loads((out / "config.json").read_text())
    assert len(saved["id2label"]) == 5
    assert saved["id2label"] == {str(i): a for i, a in enumerate(HELPSTEER2_ATTRIBUTES)}
    assert saved["reward_attributes"] == list(HELPSTEER2_ATTRIBUTES)
    assert saved["reward_attribute_weights"] == [0.5, 0.5, 0.25, 0.0, 0.0]
    # standardisation statistics over the rated values only
    helpful = [r["helpfulness"] for r in HS2_ROWS]
    assert saved["reward_attribute_mean"][0] == pytest.approx(np.mean(helpful))
    assert saved["reward_attribute_std"][0] == pytest.approx(np.std(helpful))

    assert main(["eval", "--model", str(out), "--data", str(HS2), "--format", "pointwise", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    mae, correct, total = _independent_report(out)
    for name, (value, count) in mae.items():
        assert report["attributes"][name]["count"] == count
        assert report["attributes"][name]["mae"] == pytest.approx(
            value, abs=1e-4
        )  # padded vs unpadded forward
    p = report["pairwise"]
    assert (p["correct"], p["pairs"]) == (correct, total) and total >= 12
    assert p["ci_low"] <= p["accuracy"] <= p["ci_high"]
    assert main(["eval", "--model", str(out), "--data", str(HS2), "--format", "pointwise"]) == 0
    text = capsys.readouterr().out
    assert f"{total} pairs of responses to one prompt" in text and "MAE" in text
