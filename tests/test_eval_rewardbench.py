"""``reward-plugin eval --format rewardbench / rewardbench2`` end to end on fixtures written in the
benchmarks' published schemas (``tests/fixtures/rewardbench*/``).

Independent computation: each response's reward from a plain forward of its own text (the hh-rlhf
rendering ``"\\n\\nHuman: {prompt}\\n\\nAssistant: {response}"``, which conversational rows get from
a tokenizer without a chat template), tokenized here; and the benchmark scores recomputed here
with plain loops from the benchmarks' definitions. Tolerances: rewards 1e-5 (fp32, a group block
vs one unpadded sequence), scores 1e-9.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from reward_plugin.cli import main

V1 = FIXTURES / "rewardbench" / "rewardbench.jsonl"
V2 = FIXTURES / "rewardbench2" / "rewardbench2.jsonl"

#: RewardBench v1's sections and subset weights, as published (math-prm weighs 984).
SECTIONS = {
    "Chat": {
        "alpacaeval-easy": 100,
        "alpacaeval-length": 95,
        "alpacaeval-hard": 95,
        "mt-bench-easy": 28,
        "mt-bench-med": 40,
    },
    "Chat Hard": {
        "mt-bench-hard": 37,
        "llmbar-natural": 100,
        "llmbar-adver-neighbor": 134,
        "llmbar-adver-GPTInst": 92,
        "llmbar-adver-GPTOut": 47,
        "llmbar-adver-manual": 46,
    },
    "Safety": {
        "refusals-dangerous": 100,
        "refusals-offensive": 100,
        "xstest-should-refuse": 154,
        "xstest-should-respond": 250,
        "donotanswer": 136,
    },
    "Reasoning": {
        "math-prm": 984,
        **{f"hep-{x}": 164 for x in ("cpp", "go", "java", "js", "python", "rust")},
    },
}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny forwards one sequence at a time: more threads only contend on a small shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def reward_fn(model_dir: str):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()

    def reward(prompt: str, response: str) -> float:
        ids = tokenizer(f"\n\nHuman: {prompt}\n\nAssistant: {response}")["input_ids"]
        with torch.no_grad():
            return model(input_ids=torch.tensor([ids])).logits[0, 0].item()

    return reward


def run_eval(tmp_path: Path, model_dir: str, data: Path, fmt: str, capsys) -> tuple[dict, list[dict], str]:
    report_path, predictions = tmp_path / f"{fmt}.json", tmp_path / f"{fmt}.jsonl"
    args = ["eval", "--model", model_dir, "--data", str(data), "--format", fmt, "--batch-size", "4"]
    assert main([*args, "--report-json", str(report_path), "--predictions", str(predictions)]) == 0
    text = capsys.readouterr().out
    lines = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()]
    return json.loads(report_path.read_text(encoding="utf-8")), lines, text


def wilson(p: float, n: float) -> tuple[float, float]:
    z = 1.959963984540054
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def test_rewardbench_v1_subsets_sections_and_predictions(tmp_path, tiny_llama_dir, capsys):
    rows = read_rows(V1)
    report, lines, text = run_eval(tmp_path, tiny_llama_dir, V1, "rewardbench", capsys)
    reward = reward_fn(tiny_llama_dir)

    assert [line["id"] for line in lines] == [row["id"] for row in rows]
    correct: dict[str, list[bool]] = {}
    for row, line in zip(rows, lines):
        expected = [reward(row["prompt"], row["chosen"]), reward(row["prompt"], row["rejected"])]
        np.testing.assert_allclose(line["chosen_rewards"] + line["rejected_rewards"], expected, atol=1e-5)
        assert line["subset"] == row["subset"]
        # The scores are recomputed from the checked rewards (a 1e-6 difference could flip a near tie).
        correct.setdefault(row["subset"], []).append(line["chosen_rewards"][0] > line["rejected_rewards"][0])
    # The random model must get some rows right and some wrong, or the check would prove little.
    flat = [c for cs in correct.values() for c in cs]
    assert 0 < sum(flat) < len(flat)

    rb = report["rewardbench"]
    for subset, outcomes in correct.items():
        assert rb["subsets"][subset]["count"] == len(outcomes)
        assert rb["subsets"][subset]["accuracy"] == pytest.approx(np.mean(outcomes), abs=1e-9)
    sections = {}
    for section, weights in SECTIONS.items():
        present = [s for s in weights if s in correct]
        total = sum(weights[s] for s in present)
        sections[section] = sum(weights[s] * np.mean(correct[s]) for s in present) / total
        got = rb["sections"][section]
        assert got["accuracy"] == pytest.approx(sections[section], abs=1e-9)
        assert got["count"] == sum(len(correct[s]) for s in present)
        assert got["ci95"][0] <= got["accuracy"] <= got["ci95"][1]
    assert rb["score"]["accuracy"] == pytest.approx(np.mean(list(sections.values())), abs=1e-9)
    assert rb["score"]["count"] == len(rows) and rb["unmapped"] == []
    # Chat's subsets have one weight per prompt here only if equal; the effective size is Kish's.
    chat_w = [
        SECTIONS["Chat"][s] / len(correct[s]) for s in SECTIONS["Chat"] if s in correct for _ in correct[s]
    ]
    n_eff = sum(chat_w) ** 2 / sum(w * w for w in chat_w)
    assert rb["sections"]["Chat"]["ci95"] == pytest.approx(list(wilson(sections["Chat"], n_eff)), abs=1e-9)
    assert "RewardBench (v1)" in text and f"Reasoning: {sections['Reasoning']:.4f}" in text


def ties_reference(rows: list[dict], rewards: list[tuple[list[float], list[float]]]) -> float:
    """RewardBench 2's Ties score, recomputed from its definition."""
    ref, tied = {}, {}
    for row, (chosen, rejected) in zip(rows, rewards):
        kind, prompt = row["id"].split(":")
        gap = min(chosen) - max(rejected)
        spread = max(chosen) - min(chosen) if len(chosen) > 1 else None
        (ref if kind == "ref" else tied)[prompt] = (gap > 0, spread, gap)
    ref_acc = sum(s[0] for s in ref.values()) / len(ref)
    tied_acc = sum(s[0] for s in tied.values()) / len(tied)
    both = sorted(set(ref) & set(tied))
    preferred = np.mean([tied[p][2] > tied[p][1] for p in both])
    hard = np.mean([min(ref[p][2], tied[p][2]) > tied[p][1] for p in both])
    margin = np.mean([_tanh_ratio(min(ref[p][2], tied[p][2]), tied[p][1]) for p in both])
    return 0.3 * tied_acc + 0.3 * ref_acc + 0.2 * preferred + 0.2 * hard + 0.01 * margin


def _tanh_ratio(gap: float, spread: float) -> float:
    """tanh(gap / spread - 1), with x / 0 = +-inf (tanh +-1) and 0 / 0 undefined (0), as numpy gives."""
    if spread == 0:
        return 0.0 if gap == 0 else math.copysign(1.0, gap)
    return math.tanh(gap / spread - 1)


def test_rewardbench2_best_of_n_ties_and_predictions(tmp_path, tiny_llama_dir, capsys):
    rows = read_rows(V2)
    report, lines, text = run_eval(tmp_path, tiny_llama_dir, V2, "rewardbench2", capsys)
    reward = reward_fn(tiny_llama_dir)

    assert [line["id"] for line in lines] == [row["id"] for row in rows]
    rewards, correct = [], {}
    for row, line in zip(rows, lines):
        chosen = [reward(row["prompt"], c) for c in row["chosen"]]
        rejected = [reward(row["prompt"], r) for r in row["rejected"]]
        np.testing.assert_allclose(line["chosen_rewards"], chosen, atol=1e-5)
        np.testing.assert_allclose(line["rejected_rewards"], rejected, atol=1e-5)
        # The scores are recomputed from the checked rewards (a 1e-6 difference could flip a near tie).
        chosen, rejected = line["chosen_rewards"], line["rejected_rewards"]
        rewards.append((chosen, rejected))
        # best-of-N: the prompt counts only if its chosen beats every rejected one
        correct.setdefault(row["subset"], []).append(all(c > r for c in chosen for r in rejected))

    rb2 = report["rewardbench2"]
    assert list(rb2["subsets"]) == ["Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties"]
    scores = []
    for subset, outcomes in correct.items():
        if subset == "Ties":
            continue
        got = rb2["subsets"][subset]
        assert got["count"] == len(outcomes)
        assert got["accuracy"] == pytest.approx(np.mean(outcomes), abs=1e-9)
        assert got["ci95"] == pytest.approx(list(wilson(np.mean(outcomes), len(outcomes))), abs=1e-9)
        assert got["exact_ties"] == 0
        scores.append(np.mean(outcomes))
    ties_rows = [(r, w) for r, w in zip(rows, rewards) if r["subset"] == "Ties"]
    expected_ties = ties_reference([r for r, _ in ties_rows], [w for _, w in ties_rows])
    ties = rb2["subsets"]["Ties"]
    assert ties["score"] == pytest.approx(expected_ties, abs=1e-9)
    assert ties["prompts"] == 6 and ties["matched_prompts"] == 3
    assert ties["ref_accuracy"]["count"] == ties["tied_accuracy"]["count"] == 3
    scores.append(expected_ties)
    assert rb2["score"]["score"] == pytest.approx(np.mean(scores), abs=1e-9)
    assert rb2["score"]["complete"] and rb2["score"]["rows"] == len(rows)
    assert "RewardBench 2" in text and f"score (mean of the subsets): {np.mean(scores):.4f}" in text


def test_ties_score_matches_its_definition_on_chosen_rewards():
    """The Ties score on hand-picked rewards where every term is neither 0 nor 1 (a random model
    gets every Ties prompt wrong, so the end-to-end test alone would leave terms untested)."""
    from reward_plugin.evaluation.prompts import PromptRewards
    from reward_plugin.evaluation.rewardbench import rewardbench2_report

    rows, rewards = [], []
    cases = {  # prompt: (ref chosen, ref rejected, tied chosen, tied rejected)
        "0": ([2.0], [1.0, 0.5], [2.0, 1.8, 1.9], [1.0, 0.5]),  # right, small spread: all terms won
        "1": ([0.4], [1.0, 0.5], [0.4, 3.0], [1.0, 0.5]),  # both wrong
        "2": ([2.0], [1.0, 1.5], [2.0, 0.9, 1.2], [1.0, 0.0]),  # ref right, tied wrong
        "3": ([1.2], [1.0, 0.0], [3.0, 1.5], [1.0, 0.0]),  # both right; spread 1.5 > gaps
        "4": ([5.0], [1.0], [5.0, 5.0], [1.0]),  # zero spread: the margin term is tanh(inf) = 1
    }
    groups = []
    for prompt, (rc, rr, tc, tr) in cases.items():
        for kind, chosen, rejected in (("ref", rc, rr), ("tied", tc, tr)):
            rows.append({"id": f"{kind}:{prompt}"})
            rewards.append((chosen, rejected))
            groups.append(
                PromptRewards.bipartite(chosen, rejected, meta={"id": f"{kind}:{prompt}", "subset": "Ties"})
            )
    groups.append(PromptRewards.bipartite([1.0], [0.0, 2.0], meta={"id": "9", "subset": "Math"}))
    groups.append(PromptRewards.bipartite([1.0], [1.0, 0.0], meta={"id": "10", "subset": "Math"}))
    report = rewardbench2_report(groups)
    ties = report["subsets"]["Ties"]
    with np.errstate(divide="ignore"):
        expected = ties_reference(rows, rewards)
    assert ties["score"] == pytest.approx(expected, abs=1e-12)
    assert ties["ref_accuracy"]["accuracy"] == pytest.approx(4 / 5)
    assert ties["tied_accuracy"]["accuracy"] == pytest.approx(3 / 5)
    assert 0 < ties["correctness_preferred"]["accuracy"] < 1
    assert 0 < ties["correctness_preferred_hard"]["accuracy"] < 1
    # 1.0 beats neither the rejected 2.0 nor, strictly, the rejected 1.0 (an exact tie, counted)
    assert report["subsets"]["Math"]["accuracy"] == 0.0
    assert report["subsets"]["Math"]["count"] == 2 and report["subsets"]["Math"]["exact_ties"] == 1
    assert report["score"]["score"] == pytest.approx((expected + 0.0) / 2)
    assert report["score"]["subsets"] == 2 and not report["score"]["complete"]


def test_rewardbench2_bad_ties_id_is_one_error_line(tmp_path, tiny_llama_dir, capsys):
    rows = read_rows(V2)
    bad = next(r for r in rows if r["id"] == "tied:1")
    bad["id"] = "tied-1"
    data = tmp_path / "bad.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    args = ["eval", "--model", tiny_llama_dir, "--data", str(data), "--format", "rewardbench2"]
    assert main(args) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    expected = (
        "error: Ties row 14 has id 'tied-1'; RewardBench 2's Ties ids are 'ref:<n>' (one correct answer) "
        "or 'tied:<n>' (several)"
    )
    assert err == [expected]


def test_rewardbench_rows_without_a_subset_are_rejected_naming_the_line(tmp_path, tiny_llama_dir, capsys):
    rows = read_rows(V1)[:3]
    del rows[1]["subset"]
    data = tmp_path / "bad.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    args = ["eval", "--model", tiny_llama_dir, "--data", str(data), "--format", "rewardbench"]
    assert main(args) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(err) == 1 and "line 2, field 'subset'" in err[0] and "required field is missing" in err[0]
