"""``reward-plugin score``: one output line per input row, in order, rewards as a plain forward gives them.

The model is the saved tiny Llama (no reward statistics, so rewards are raw, no length limit); the
reference for plain-text items is transformers alone (``AutoModelForSequenceClassification`` on
the full text, one unpadded sequence at a time). Tolerance: 1e-4 in float32.
"""

from __future__ import annotations

import gzip
import json

import pytest
import torch
from conftest import RM_BENCH, read_hh_rows, write_jsonl
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import dataset_formats as df
from reward_plugin import RewardScorer
from reward_plugin.cli import main

FP32_TOLERANCE = 1e-4


def plain(folder: str, texts: list[str]) -> list[float]:
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        return [model(**tok(t, return_tensors="pt")).logits[0, 0].item() for t in texts]


def run(*argv: str) -> int:
    return main(["score", *argv, "--device", "cpu", "--no-progress"])


def read(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_pairs_with_bad_rows_one_line_per_input_row(tmp_path, tiny_llama_dir, capsys):
    rows = [{"chosen": r["chosen"], "rejected": r["rejected"]} for r in read_hh_rows(5)]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows[:2])
    with data.open("a", encoding="utf-8") as f:
        f.write("{not json\n")
        f.write(json.dumps({"chosen": rows[2]["chosen"]}) + "\n")  # no rejected
        for r in rows[3:]:
            f.write(json.dumps(r) + "\n")
    out = tmp_path / "out" / "scores.jsonl"
    assert run("--model", tiny_llama_dir, "--data", str(data), "--format", "hh-rlhf", "-o", str(out)) == 0
    lines = read(out)
    assert [x["line"] for x in lines] == [1, 2, 3, 4, 5, 6]
    assert "error" in lines[2] and "error" in lines[3] and "line 4" in lines[3]["error"]
    err = capsys.readouterr()
    assert "line 3" in err.err and "line 4" in err.err and "scored 8 responses of 4 rows" in err.out
    good = [lines[k] for k in (0, 1, 4, 5)]
    expected = plain(tiny_llama_dir, [t for r in rows[:2] + rows[3:] for t in (r["chosen"], r["rejected"])])
    got = [v for x in good for v in (x["chosen_reward"], x["rejected_reward"])]
    assert got == pytest.approx(expected, abs=FP32_TOLERANCE)
    assert all(x["rewards"] == [x["chosen_reward"], x["rejected_reward"]] for x in good)
    assert not list(out.parent.glob(".*tmp"))  # the temporary file was renamed, nothing left behind


def test_completion_rows_and_best_of_n(tmp_path, tiny_llama_dir):
    hh = read_hh_rows(4)
    rows = [
        {"prompt": hh[0]["chosen"][:80], "completions": [" Yes.", " No, never.", hh[1]["chosen"][-40:]]},
        {"prompt": hh[2]["chosen"][:60], "completion": " I can help with that."},
    ]
    data = write_jsonl(tmp_path / "completions.jsonl", rows)
    out = tmp_path / "scores.jsonl"
    assert run("--model", tiny_llama_dir, "--data", str(data), "-o", str(out)) == 0  # format detected
    first, second = read(out)
    expected = plain(tiny_llama_dir, [rows[0]["prompt"] + c for c in rows[0]["completions"]])
    assert first["rewards"] == pytest.approx(expected, abs=FP32_TOLERANCE)
    assert first["best"] == max(range(3), key=expected.__getitem__)
    assert first["best_response"] == rows[0]["completions"][first["best"]]
    assert second["reward"] == pytest.approx(
        plain(tiny_llama_dir, [rows[1]["prompt"] + rows[1]["completion"]])[0], abs=FP32_TOLERANCE
    )


def test_rm_bench_groups_give_each_response_once_and_the_best(tmp_path, tiny_llama_dir):
    source = RM_BENCH / "chat_filtered.slice.json.gz"
    rows = json.loads(gzip.decompress(source.read_bytes()))[:3]
    data = tmp_path / "rm.json"
    data.write_text(json.dumps(rows), encoding="utf-8")
    out = tmp_path / "scores.jsonl"
    assert run("--model", tiny_llama_dir, "--data", str(data), "--format", "rm-bench", "-o", str(out)) == 0
    lines = read(out)
    assert [x["row"] for x in lines] == [0, 1, 2]
    scorer = RewardScorer.from_pretrained(tiny_llama_dir, device="cpu")
    adapter = df.get_format("rm-bench")
    for row, line in zip(rows, lines):
        pairs = adapter.to_pairs(row, adapter.make_options({}))
        responses = list(dict.fromkeys([p.chosen for p in pairs] + [p.rejected for p in pairs]))
        assert len(line["rewards"]) == len(responses) == 6
        expected = scorer.score([pairs[0].prompt] * 6, responses)
        assert line["rewards"] == pytest.approx(expected, abs=FP32_TOLERANCE)
        assert line["best_response"] == responses[line["best"]] and line["best"] == expected.index(
            max(expected)
        )


def test_a_failed_run_leaves_no_output(tmp_path, tiny_llama_dir, capsys):
    data = write_jsonl(tmp_path / "x.jsonl", [{"foo": 1}])
    out = tmp_path / "scores.jsonl"
    assert run("--model", tiny_llama_dir, "--data", str(data), "-o", str(out)) == 1
    assert "could not detect the format" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".*tmp"))
