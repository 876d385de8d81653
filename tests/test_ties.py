"""Ties end to end: the Davidson loss against an independent computation, ``convert --ties`` on
UltraFeedback rows (tests/fixtures/ultrafeedback), scores as margins through nested fields, and
``reward-plugin train`` with each ``ties`` policy."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from dataset_formats import encode_rows
from reward_plugin.cli import main
from reward_plugin.loss import pairwise_loss
from reward_plugin.ties import (
    TieStrengthEstimator,
    davidson_loss,
    davidson_tie_mle,
    resolve_tie_strength,
    win_differences,
)

UF = Path(__file__).parent / "fixtures" / "ultrafeedback" / "ultrafeedback-binarized-slice.jsonl"
UF_ROWS = [json.loads(line) for line in UF.read_text(encoding="utf-8").splitlines()]
EQUAL = [r["metadata"]["score_chosen"] == r["metadata"]["score_rejected"] for r in UF_ROWS]
IDENTICAL = [r["chosen"].strip() == r["rejected"].strip() for r in UF_ROWS]


# the loss ----------------------------------------------------------------------------------------


def _davidson_reference(rc, rr, tie, nu, margin):
    """-mean log-likelihood from Davidson's probabilities on strengths pi = exp(r), in float64."""
    total = 0.0
    for a, b, t, m in zip(rc, rr, tie, margin):
        if t:
            pa, pb = math.exp(a), math.exp(b)
            total -= math.log(nu * math.sqrt(pa * pb) / (pa + pb + nu * math.sqrt(pa * pb)))
        else:
            pa, pb = math.exp(a - m), math.exp(b)  # the margin shifts the winner's log-strength
            total -= math.log(pa / (pa + pb + nu * math.sqrt(pa * pb)))
    return total / len(rc)


@pytest.mark.parametrize("nu", [0.05, 0.25, 1.0, 4.0])
def test_davidson_loss_matches_the_probabilities_of_the_model(nu):
    gen = np.random.default_rng(3)
    rc, rr = gen.normal(0, 3, 64), gen.normal(0, 3, 64)
    tie = gen.random(64) < 0.3
    margin = np.where(gen.random(64) < 0.5, gen.uniform(0, 2, 64), 0.0)
    got = davidson_loss(
        torch.tensor(rc), torch.tensor(rr), torch.tensor(tie), tie_strength=nu, margin=torch.tensor(margin)
    )
    assert got.dtype == torch.float32
    # float32 loss against a float64 reference: 1e-5 relative
    assert got.item() == pytest.approx(_davidson_reference(rc, rr, tie, nu, margin), rel=1e-5)


def test_davidson_probabilities_sum_to_one_and_small_nu_is_bradley_terry():
    rc, rr = torch.tensor([0.3, -1.0, 2.5]), torch.tensor([0.1, 0.7, -0.5])
    nu = 0.7
    ties, wins = torch.ones(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool)
    for i in range(3):
        p_tie = math.exp(
            -davidson_loss(rc[i : i + 1], rr[i : i + 1], ties[i : i + 1], tie_strength=nu).item()
        )
        p_win = math.exp(
            -davidson_loss(rc[i : i + 1], rr[i : i + 1], wins[i : i + 1], tie_strength=nu).item()
        )
        p_lose = math.exp(
            -davidson_loss(rr[i : i + 1], rc[i : i + 1], wins[i : i + 1], tie_strength=nu).item()
        )
        assert p_tie + p_win + p_lose == pytest.approx(1.0, abs=1e-6)
    # nu -> 0: the untied loss is the Bradley-Terry loss (tolerance: the nu*exp(-d/2) term, < 1e-6)
    bt = pairwise_loss(rc, rr, margin=torch.tensor([0.0, 0.5, 1.0]))
    dv = davidson_loss(rc, rr, wins, tie_strength=1e-7, margin=torch.tensor([0.0, 0.5, 1.0]))
    assert dv.item() == pytest.approx(bt.item(), abs=1e-5)


def test_davidson_gradient_pulls_tied_rewards_together():
    rc = torch.tensor([2.0], requires_grad=True)
    rr = torch.tensor([-1.0], requires_grad=True)
    davidson_loss(rc, rr, torch.tensor([True]), tie_strength=0.5).backward()
    assert rc.grad.item() > 0 > rr.grad.item()  # descending the loss moves them towards each other


def test_tie_strength_from_the_data_and_bad_values():
    import datasets

    table = datasets.Dataset.from_dict({"tie": [True] + [False] * 9})
    # p = 0.1: nu = 2p/(1-p), so that P(tie | equal rewards) = nu / (2 + nu) = p
    nu = resolve_tie_strength(None, table)
    assert nu == pytest.approx(2 * 0.1 / 0.9) and nu / (2 + nu) == pytest.approx(0.1)
    assert resolve_tie_strength(2.0, table) == 2.0
    from reward_plugin.errors import ConfigError

    with pytest.raises(ConfigError, match="tie_strength"):
        resolve_tie_strength(0.0, table)


# a learned nu -------------------------------------------------------------------------------------


def _nu_maximising_the_reference(rc, rr, tie, margin) -> float:
    """Golden-section search of ``log nu`` on :func:`_davidson_reference` (convex in ``log nu``)."""
    low, high = math.log(1e-4), math.log(1e4)
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(80):
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        if _davidson_reference(rc, rr, tie, math.exp(a), margin) < _davidson_reference(
            rc, rr, tie, math.exp(b), margin
        ):
            high = b
        else:
            low = a
    return math.exp((low + high) / 2)


@pytest.mark.parametrize("tie_rate", [0.1, 0.4])
def test_learned_nu_maximises_the_likelihood_of_the_model(tie_rate):
    gen = np.random.default_rng(5)
    rc, rr = gen.normal(0, 2, 80), gen.normal(0, 2, 80)
    tie = gen.random(80) < tie_rate
    margin = np.where(gen.random(80) < 0.5, gen.uniform(0, 1, 80), 0.0)
    diff = win_differences(torch.tensor(rc), torch.tensor(rr), torch.tensor(tie), torch.tensor(margin))
    got = davidson_tie_mle(diff, torch.tensor(tie))
    # bisection in float64 on the derivative against golden section on the probabilities: the
    # search's own resolution (about 1e-6 in log nu) and float32 differences, so 1e-4 relative
    assert got == pytest.approx(_nu_maximising_the_reference(rc, rr, tie, margin), rel=1e-4)
    best = _davidson_reference(rc, rr, tie, got, margin)
    assert best < _davidson_reference(rc, rr, tie, got * 1.05, margin)
    assert best < _davidson_reference(rc, rr, tie, got / 1.05, margin)


def test_learned_nu_recovers_the_nu_the_pairs_were_drawn_with():
    """Pairs drawn from Davidson's model with nu = 0.6 at known reward differences: the estimate is
    within 0.06 of it (its standard error at 20,000 pairs is about 0.015, so 4 standard errors)."""
    gen = np.random.default_rng(11)
    nu, n = 0.6, 20_000
    d = gen.normal(0, 1.5, n)  # r_a - r_b
    pa, pb, pt = np.exp(d / 2), np.exp(-d / 2), np.full(n, nu)  # strengths over sqrt(pi_a * pi_b)
    u = gen.random(n) * (pa + pb + pt)
    outcome = np.where(u < pa, 0, np.where(u < pa + pb, 1, 2))  # a wins, b wins, tie
    diff = np.where(outcome == 1, -d, d)  # the winner goes first, as "chosen"
    got = davidson_tie_mle(torch.tensor(diff), torch.tensor(outcome == 2))
    assert abs(got - nu) < 0.06


def test_learned_nu_needs_both_kinds_of_pair_and_keeps_a_window():
    diffs = torch.tensor([0.5, -0.2, 1.0])
    assert davidson_tie_mle(diffs, torch.tensor([False, False, False])) is None
    assert davidson_tie_mle(diffs, torch.tensor([True, True, True])) is None
    estimator = TieStrengthEstimator(0.3, window=4)
    assert estimator.add(diffs, torch.tensor([False, False, False])) == 0.3  # nothing to learn from yet
    nu = estimator.add(torch.tensor([0.0, 0.1]), torch.tensor([True, True]))
    kept, ties = estimator.pairs()
    assert kept.tolist() == pytest.approx([-0.2, 1.0, 0.0, 0.1]) and ties.tolist() == [
        False,
        False,
        True,
        True,
    ]
    assert nu == pytest.approx(davidson_tie_mle(kept, ties))
    with pytest.raises(ValueError, match="one value per pair"):
        davidson_tie_mle(diffs, torch.tensor([True]))


# convert -----------------------------------------------------------------------------------------


def _convert(tmp_path, minilm_path, *extra, name="out") -> tuple[int, dict, Path]:
    out, stats = tmp_path / f"{name}.parquet", tmp_path / f"{name}.json"
    code = main(
        ["convert", str(UF), "-o", str(out), "--tokenizer", minilm_path, "--stats-json", str(stats)]
        + ["--max-length", "128", "--no-progress", *extra]
    )
    return code, json.loads(stats.read_text()) if stats.exists() else {}, out


def test_default_convert_of_ultrafeedback_rows_skips_ties_and_counts_them(tmp_path, minilm_path):
    code, stats, out = _convert(tmp_path, minilm_path)
    assert code == 0
    equal, identical = sum(EQUAL), sum(IDENTICAL)
    both = sum(e and i for e, i in zip(EQUAL, IDENTICAL))
    assert (equal, identical, both) == (11, 2, 1)
    assert stats["format"] == "preference" and stats["ties_policy"] == "skip"
    assert stats["ties"] == {
        "detected": equal + identical - both,
        "by_kind": {"equal_scores": equal - both, "identical_responses": identical},
        "skipped": equal + identical - both,
        "written_as_preferences": 0,
        "written_as_ties": 0,
    }
    assert stats["rows_written"] == len(UF_ROWS) - (equal + identical - both)
    assert stats["rejected_by_reason"] == {"identical_pair": identical, "tie": equal - both}
    assert stats["pairs_flagged"] == {"empty_response": 1}  # line 479: empty, scored 1.0
    table = pq.read_table(out)
    assert "tie" not in table.column_names  # a table without ties stays TRL-compatible
    kept = sorted(table.column("source_row").to_pylist())
    assert kept == [i for i in range(len(UF_ROWS)) if not (EQUAL[i] or IDENTICAL[i])]


def test_ties_keep_and_tie(tmp_path, minilm_path):
    untied = [i for i in range(len(UF_ROWS)) if not (EQUAL[i] or IDENTICAL[i])]
    tied = [i for i in range(len(UF_ROWS)) if EQUAL[i] and not IDENTICAL[i]]
    code, stats, out = _convert(tmp_path, minilm_path, "--ties", "keep", name="keep")
    assert code == 0 and stats["ties"]["written_as_preferences"] == len(tied)
    keep = pq.read_table(out)
    assert "tie" not in keep.column_names and sorted(keep.column("source_row").to_pylist()) == sorted(
        untied + tied
    )
    code, stats, out = _convert(tmp_path, minilm_path, "--ties", "tie", name="tie")
    assert code == 0 and stats["ties"]["written_as_ties"] == len(tied)
    table = pq.read_table(out)
    flags = dict(zip(table.column("source_row").to_pylist(), table.column("tie").to_pylist()))
    assert flags == {i: i in tied for i in untied + tied}
    assert table.schema.field("tie").type == "bool"


def test_scores_as_margins_through_nested_fields(tmp_path, minilm_path, capsys):
    code, _, _ = _convert(tmp_path, minilm_path, "--format", "score-pair", name="flat")
    assert code == 1
    err = capsys.readouterr().err
    assert "'metadata' holds it" in err and "chosen_score_field=metadata.score_chosen" in err
    code, stats, out = _convert(
        tmp_path,
        minilm_path,
        "--format",
        "score-pair",
        "--option",
        "chosen_score_field=metadata.score_chosen",
        "--option",
        "rejected_score_field=metadata.score_rejected",
        "--ties",
        "keep",
        name="nested",
    )
    assert code == 0 and stats["margin"]
    table = pq.read_table(out)
    for row, margin in zip(table.column("source_row").to_pylist(), table.column("margin").to_pylist()):
        m = UF_ROWS[row]["metadata"]
        assert margin == pytest.approx(m["score_chosen"] - m["score_rejected"])  # float32: 1e-6 relative


def test_encode_rows_takes_ties_and_rejects_a_bad_choice(minilm_path):
    rows = [
        {"prompt": "Colour?", "chosen": "Blue.", "rejected": "Green.", "tie": True},
        {"prompt": "Colour?", "chosen": "Red.", "rejected": "Grey."},
    ]
    table, stats = encode_rows(rows, format="preference", tokenizer=minilm_path, ties="tie")
    assert table.column("tie").to_pylist() == [True, False] and stats.ties["by_kind"] == {"tie_label": 1}
    from dataset_formats.errors import OptionError

    with pytest.raises(OptionError, match="`ties` must be one of skip, keep, tie"):
        encode_rows(rows, format="preference", tokenizer=minilm_path, ties="drop")


# train -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ties", [pytest.param(None, marks=pytest.mark.slow), pytest.param("keep", marks=pytest.mark.slow), "tie"]
)
def test_train_on_ultrafeedback_rows_with_each_ties_policy(tmp_path, tiny_llama_dir, ties, capsys):
    source = f"{{path: {UF}" + (f", ties: {ties}" if ties else "") + "}"
    config = tmp_path / "run.yaml"
    config.write_text(
        f"""\
model: {tiny_llama_dir}
train_data: {source}
output_dir: {tmp_path / "out"}
max_length: 96
per_device_train_batch_size: 8
learning_rate: 1.0e-3
max_steps: 2
logging_steps: 1
save_strategy: "no"
bf16: false
gradient_checkpointing: false
"""
        + ("learn_tie_strength: true\n" if ties == "tie" else ""),
        encoding="utf-8",
    )
    assert main(["train", str(config)]) == 0
    printed = capsys.readouterr().out
    loss = float(printed.split("train loss ", 1)[1].split()[0])
    assert math.isfinite(loss)
    summary = next((tmp_path / "out" / "_prepared_data").glob("train-*.stats.json"))
    stats = json.loads(summary.read_text())
    assert stats["ties_policy"] == (ties or "skip")
    written = {"skip": "skipped", "keep": "written_as_preferences", "tie": "written_as_ties"}[ties or "skip"]
    assert stats["ties"][written] >= sum(EQUAL) - 1
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    if ties == "tie":  # learned from the data's value (nu = 2p / (1 - p)), saved with the model
        p = stats["ties"]["written_as_ties"] / stats["pairs_written"]
        assert saved["tie_strength"] > 0 and saved["tie_strength"] != pytest.approx(2 * p / (1 - p))
    else:
        assert "tie_strength" not in saved


def test_trainer_uses_the_davidson_loss_for_a_table_with_a_tie_column(tmp_path, tiny_llama_dir, minilm_path):
    import datasets

    from reward_plugin import RewardConfig, RewardTrainer

    rows = [
        {"prompt": "Colour of the sky?", "chosen": "Blue.", "rejected": "Green.", "tie": i % 3 == 0}
        for i in range(6)
    ]
    rows = [{**r, "chosen": f"{r['chosen']} {i}"} for i, r in enumerate(rows)]
    table, _ = encode_rows(rows, format="preference", tokenizer=tiny_llama_dir, ties="tie")
    args = RewardConfig(
        output_dir=str(tmp_path), max_length=32, bf16=False, gradient_checkpointing=False, tie_strength=0.5
    )
    trainer = RewardTrainer(model=tiny_llama_dir, args=args, train_dataset=datasets.Dataset(table))
    assert "tie" in trainer.train_dataset.column_names
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(6)]))
    assert batch["tie"].tolist() == [True, False, False, True, False, False]
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
        rc, rr = trainer.compute_rewards(trainer.model, batch)
    expected = _davidson_reference(
        rc.double().tolist(), rr.double().tolist(), batch["tie"].tolist(), 0.5, [0.0] * 6
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def _tie_table(tokenizer, n=24):
    rows = [
        {
            "prompt": f"Question {i}?",
            "chosen": f"A good answer {i}.",
            "rejected": f"No {i}.",
            "tie": i % 3 == 0,
        }
        for i in range(n)
    ]
    return encode_rows(rows, format="preference", tokenizer=tokenizer, ties="tie")[0]


def test_trainer_learns_nu_and_saves_it(tmp_path, tiny_llama_dir):
    import datasets

    from reward_plugin import RewardConfig, RewardTrainer

    args = RewardConfig(
        output_dir=str(tmp_path),
        max_length=32,
        bf16=False,
        gradient_checkpointing=False,
        per_device_train_batch_size=6,
        learning_rate=1e-3,
        max_steps=4,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        learn_tie_strength=True,
    )
    table = _tie_table(tiny_llama_dir)
    trainer = RewardTrainer(model=tiny_llama_dir, args=args, train_dataset=datasets.Dataset(table))
    start = resolve_tie_strength(None, trainer.train_dataset)  # 8 ties of 24 pairs: nu = 1.0
    assert start == pytest.approx(1.0)
    trainer.train()
    logged = [entry["tie_strength"] for entry in trainer.state.log_history if "tie_strength" in entry]
    assert len(logged) == 4 and logged[-1] != pytest.approx(start)
    # the final nu is the likelihood's maximum over the 24 pairs the 4 steps scored, found independently
    diffs, ties = trainer._tie_estimator.pairs()
    assert len(diffs) == 24 and int(ties.sum()) == 8
    expected = _nu_maximising_the_reference(diffs.tolist(), [0.0] * 24, ties.tolist(), [0.0] * 24)
    assert trainer._tie_strength == pytest.approx(expected, rel=1e-4)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["tie_strength"] == pytest.approx(trainer._tie_strength) == pytest.approx(logged[-1])
    card = (tmp_path / "README.md").read_text()
    assert "Davidson" in card and f"nu = {trainer._tie_strength:.4g} (learned" in card
    assert "-logsigmoid" not in card


def test_learn_tie_strength_without_a_tie_column_is_a_clear_error(tmp_path, tiny_llama_dir):
    import datasets

    from reward_plugin import RewardConfig, RewardTrainer
    from reward_plugin.errors import ConfigError

    table = _tie_table(tiny_llama_dir).drop_columns(["tie"])
    args = RewardConfig(
        output_dir=str(tmp_path), max_length=32, bf16=False, report_to=[], learn_tie_strength=True
    )
    trainer = RewardTrainer(model=tiny_llama_dir, args=args, train_dataset=datasets.Dataset(table))
    with pytest.raises(ConfigError, match="learn_tie_strength.*tie"):
        trainer.train()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_processes_learn_the_same_nu_as_one(tmp_path, tiny_llama_dir, capsys):
    """accelerate launch, two gloo processes with batch 4 against one with batch 8 (the same global
    batches): the pairs are gathered before nu is re-estimated, so every step logs the same nu and
    loss (within 1e-4: gloo's reduction order) and the saved nu agrees."""
    from conftest import launch_two_processes

    def run(out: Path, batch: int) -> Path:
        config = tmp_path / f"{out.name}.yaml"
        config.write_text(
            f"""\
model: {tiny_llama_dir}
train_data: {{path: {UF}, ties: tie}}
output_dir: {out}
max_length: 96
per_device_train_batch_size: {batch}
learning_rate: 1.0e-3
max_steps: 4
logging_steps: 1
save_strategy: steps
save_steps: 4
bf16: false
gradient_checkpointing: false
learn_tie_strength: true
""",
            encoding="utf-8",
        )
        return config

    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["train", str(run(one, 8))]) == 0
    capsys.readouterr()
    launch_two_processes(["reward_plugin", "train", str(run(two, 4))], timeout=600)

    def logged(out: Path) -> list[tuple[int, float, float]]:
        history = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
        return [(e["step"], e["loss"], e["tie_strength"]) for e in history if "tie_strength" in e]

    want, got = logged(one), logged(two)
    assert [s for s, _, _ in got] == [s for s, _, _ in want] == [1, 2, 3, 4]
    assert len({nu for _, _, nu in want}) > 1  # nu moved during the run: something was learned
    for (step, loss_g, nu_g), (_, loss_w, nu_w) in zip(got, want):
        assert abs(loss_g - loss_w) <= 1e-4 and nu_g == pytest.approx(nu_w, rel=1e-4), (step, got, want)
    saved = [json.loads((out / "config.json").read_text())["tie_strength"] for out in (one, two)]
    assert saved[1] == pytest.approx(saved[0], rel=1e-4)
