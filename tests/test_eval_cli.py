"""``reward-plugin eval`` on RM-Bench rows end to end: the report JSON and predictions file of a
saved MiniLM reward model, checked against an independent forward pass per response and the
metrics recomputed here with plain loops."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import RM_BENCH, read_hh_rows
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from dataset_formats.conversion import encode_rows
from reward_plugin.cli import main

MAX_LENGTH = 64


def rm_bench_slice(n: int) -> list[dict]:
    """The first ``n`` (at most 3) prompts of the chat and of the safety-response file."""
    rows = []
    for name in ("chat_filtered", "safety-response_filtered"):
        with gzip.open(RM_BENCH / f"{name}.slice.json.gz", "rt", encoding="utf-8") as fh:
            rows += json.load(fh)[:n]
    return rows


@pytest.fixture(scope="module")
def minilm_dir(tmp_path_factory, minilm_path) -> Path:
    """MiniLM with a seeded reward head, saved (the bare package model has no head: a random one per load)."""
    folder = tmp_path_factory.mktemp("minilm-rm")
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=1).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return folder


def independent_rewards(model_dir: Path, rows: list[dict]) -> list[np.ndarray]:
    """Each response's reward from a plain forward of its own sequence, cut on the left to
    MAX_LENGTH keeping [CLS]: one array per prompt, chosen responses then rejected ones."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    table, _ = encode_rows(rows, format="rm-bench", tokenizer=tokenizer, groups=True)
    out = []
    with torch.no_grad():
        for group in table.to_pylist():
            rewards = []
            for response in group["response_ids"]:
                ids = group["prompt_ids"] + response
                if len(ids) > MAX_LENGTH:
                    ids = ids[:1] + ids[len(ids) - MAX_LENGTH + 1 :]
                rewards.append(model(input_ids=torch.tensor([ids])).logits[0, 0].item())
            out.append(np.array(rewards))
    return out


def test_eval_rm_bench_report_and_predictions(tmp_path, minilm_dir, capsys):
    rows = rm_bench_slice(3)
    data = tmp_path / "rm-bench.json"
    data.write_text(json.dumps(rows), encoding="utf-8")
    report_path, predictions = tmp_path / "R.json", tmp_path / "P.jsonl"
    args = ["eval", "--model", str(minilm_dir), "--data", str(data), "--format", "rm-bench"]
    args += ["--tokenizer", str(minilm_dir), "--max-length", str(MAX_LENGTH), "--batch-size", "4"]
    assert main([*args, "--report-json", str(report_path), "--predictions", str(predictions)]) == 0
    text = capsys.readouterr().out
    report = json.loads(report_path.read_text())

    lines = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert len(lines) == len(rows) == report["num_prompts"]
    assert [line["id"] for line in lines] == [row["id"] for row in rows]
    # The six responses of these prompts are distinct, so each gets its own sequence and reward.
    expected = independent_rewards(minilm_dir, rows)
    for line, rewards in zip(lines, expected):
        assert len(line["chosen_rewards"]) == len(line["rejected_rewards"]) == 3
        # fp32, a padded batch vs one sequence at a time
        np.testing.assert_allclose(line["chosen_rewards"] + line["rejected_rewards"], rewards, atol=1e-5)

    chosen = np.array([line["chosen_rewards"] for line in lines])
    rejected = np.array([line["rejected_rewards"] for line in lines])
    wins = [[[c[i] > r[j] for j in range(3)] for i in range(3)] for c, r in zip(chosen, rejected)]
    pairs = np.array(wins).reshape(len(rows), 9)
    assert report["pairwise_accuracy"]["count"] == 9 * len(rows)
    assert report["pairwise_accuracy"]["accuracy"] == pytest.approx(pairs.mean())
    best = [min(c) > max(r) for c, r in zip(chosen, rejected)]
    assert report["best_of_n_accuracy"]["count"] == len(rows)
    assert report["best_of_n_accuracy"]["accuracy"] == pytest.approx(np.mean(best))

    rm = report["rm_bench"]
    assert set(rm["domains"]) == {"chat", "safety"}
    for name, domain_rows in (("chat", slice(0, 3)), ("safety", slice(3, 6))):
        matrix = np.array(wins[domain_rows]).mean(axis=0)
        np.testing.assert_allclose(rm["domains"][name]["matrix"], matrix)
        hard = (matrix[0, 1] + matrix[0, 2] + matrix[1, 2]) / 3
        easy = (matrix[1, 0] + matrix[2, 0] + matrix[2, 1]) / 3
        assert rm["domains"][name]["hard"]["accuracy"] == pytest.approx(hard)
        assert rm["domains"][name]["easy"]["accuracy"] == pytest.approx(easy)
        assert rm["domains"][name]["normal"]["accuracy"] == pytest.approx(np.trace(matrix) / 3)
    for level in ("easy", "normal", "hard", "average"):
        estimate = rm[level]
        assert estimate["prompts"] == len(rows)
        assert estimate["count"] == (9 if level == "average" else 3) * len(rows)
        assert estimate["ci95"][0] <= estimate["accuracy"] <= estimate["ci95"][1]
    assert rm["average"]["accuracy"] == pytest.approx(
        np.mean([rm["domains"][d]["average"]["accuracy"] for d in rm["domains"]])
    )

    bias = report["length_bias"]
    assert sum(b["count"] for b in bias["by_length_difference"]) == 9 * len(rows)
    assert bias["correlation"]["responses"] == 6 * len(rows)
    assert f"pairwise accuracy: {report['pairwise_accuracy']['accuracy']:.4f}" in text
    assert "RM-Bench" in text and "length bias" in text


def test_eval_unknown_tokenizer_is_one_error_line(tmp_path, minilm_dir, capsys):
    data = tmp_path / "rm-bench.json"
    data.write_text(json.dumps(rm_bench_slice(1)), encoding="utf-8")
    missing = tmp_path / "no-tokenizer"
    args = ["eval", "--model", str(minilm_dir), "--data", str(data), "--tokenizer", str(missing)]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    # (an earlier test in the session may have turned on the INFO log lines of `train`)
    assert [line for line in err if line.startswith("error")] == [
        (
            f"error: tokenizer {str(missing)!r} could not be loaded (no such folder); pass a local tokenizer "
            "folder (with tokenizer.json) or a hub name that is already cached"
        )
    ]
    assert err[-1].startswith("error") and not any("Traceback" in line for line in err)


def test_every_eval_flag_is_documented():
    from reward_plugin.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    flags = {s for a in subparsers.choices["eval"]._actions for s in a.option_strings if s.startswith("--")}
    docs = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text(encoding="utf-8")
    section = docs[docs.index("## `eval`") :]
    assert {"--model", "--tokenizer", "--report-json", "--predictions", "--plot"} <= flags
    assert sorted(f for f in flags - {"--help"} if f"`{f}" not in section) == []


def test_eval_scores_a_decoder_group_in_one_forward(tmp_path, tiny_llama_dir, capsys):
    """A causal model's group is one block [prompt | response 1 | ... | response 6]: each reward
    equals the response's own unpadded forward within 1e-5 (fp32)."""
    rows = rm_bench_slice(2)
    data = tmp_path / "rm-bench.json"
    data.write_text(json.dumps(rows), encoding="utf-8")
    predictions = tmp_path / "P.jsonl"
    args = ["eval", "--model", tiny_llama_dir, "--data", str(data), "--format", "rm-bench"]
    assert main([*args, "--max-length", "96", "--predictions", str(predictions), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    lines = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert len(lines) == len(rows) and report["rm_bench"]["average"]["prompts"] == len(rows)

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_llama_dir).eval()
    table, _ = encode_rows(rows, format="rm-bench", tokenizer=tokenizer, groups=True)
    with torch.no_grad():
        for line, group in zip(lines, table.to_pylist()):
            expected = []
            for response in group["response_ids"]:
                ids = (group["prompt_ids"] + response)[-96:]  # a left cut (no BOS in this tokenizer)
                expected.append(model(input_ids=torch.tensor([ids])).logits[0, 0].item())
            np.testing.assert_allclose(line["chosen_rewards"] + line["rejected_rewards"], expected, atol=1e-5)


@pytest.mark.parametrize("model", ["tiny_llama_dir", "minilm_dir"])
def test_eval_pairs_equal_a_plain_forward_without_a_trainer(tmp_path, model, request, monkeypatch, capsys):
    """`eval` on a pair table predicts through the model loader and the batch plan: each reward
    equals a plain AutoModelForSequenceClassification forward of that one sequence within 1e-4
    (fp32), for a decoder (fast layout) and an encoder (padded rows), and no Trainer is built."""
    import pyarrow.parquet as pq
    import transformers

    model_dir = str(request.getfixturevalue(model))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    table, _ = encode_rows(read_hh_rows(12), format="hh-rlhf", tokenizer=tokenizer, max_length=64)
    pq.write_table(table, tmp_path / "pairs.parquet")

    def no_trainer(self, *args, **kwargs):
        raise AssertionError("eval built a transformers.Trainer")

    monkeypatch.setattr(transformers.Trainer, "__init__", no_trainer)
    predictions = tmp_path / "P.jsonl"
    args = ["eval", "--model", model_dir, "--data", str(tmp_path / "pairs.parquet"), "--batch-size", "5"]
    assert main([*args, "--predictions", str(predictions), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    lines = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert report["num_pairs"] == len(lines) == table.num_rows

    reference = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    got, want = [], []
    with torch.no_grad():
        for line, row in zip(lines, table.to_pylist()):
            got += line["chosen_rewards"] + line["rejected_rewards"]
            for side in ("chosen", "rejected"):
                ids = torch.tensor([row[f"input_ids_{side}"]])
                want.append(reference(input_ids=ids).logits[0, 0].item())
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    gap = np.array(want[0::2]) - np.array(want[1::2])
    assert report["accuracy"] == pytest.approx(float((gap > 0).mean()), abs=1e-12)
