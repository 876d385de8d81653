"""Training on groups: the all-pairs loss equals four-column training on the expanded pairs, and the
listwise losses equal independent formulas."""

from __future__ import annotations

import copy
import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from conftest import tiny_llama_config
from test_groups_data import rm_bench_rows
from test_groups_forward import sequence_rewards
from test_pair_batching import tiny_bert
from transformers import AutoModelForSequenceClassification

from dataset_formats.conversion import encode_rows
from dataset_formats.groups import expand_groups
from reward_plugin import RewardConfig, RewardTrainer
from reward_plugin.errors import ConfigError, DataError
from reward_plugin.loss import group_loss, pairwise_loss
from reward_plugin.pairs.groups import GroupCollator

FULL_BATCH = {
    "max_steps": 4,
    "learning_rate": 2e-3,
    "logging_steps": 1,
    "seed": 3,
    "bf16": False,
    "use_cpu": True,
    "report_to": "none",
    "save_strategy": "no",
    "disable_tqdm": True,
    "save_final_model": False,
    "save_reward_stats": False,
}


@pytest.fixture(scope="module")
def rm_bench_tables(bpe_tokenizer):
    """Six RM-Bench prompts (54 pairs) as a grouped table (cut to 64 tokens) and as its expanded pair table."""
    rows = rm_bench_rows(6)
    groups, stats = encode_rows(rows, format="rm-bench", tokenizer=bpe_tokenizer, max_length=64, groups=True)
    assert stats.groups_written == 6 and stats.pairs_written == 54  # cut once per group: no pair lost
    return datasets.Dataset(groups), datasets.Dataset(expand_groups(groups))


def make_llama(tokenizer):
    torch.manual_seed(0)
    config = tiny_llama_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    return AutoModelForSequenceClassification.from_config(config)


def run(tmp_path, model, tokenizer, dataset, batch, name, **extra):
    trainer = RewardTrainer(
        model=copy.deepcopy(model),
        args=RewardConfig(
            output_dir=str(tmp_path / name),
            per_device_train_batch_size=batch,
            per_device_eval_batch_size=batch,
            **{**FULL_BATCH, **extra},
        ),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    return trainer, [e["loss"] for e in trainer.state.log_history if "loss" in e]


@pytest.mark.parametrize("mode", ["packed", "standard"])
def test_all_pairs_group_training_equals_the_expanded_pairs(tmp_path, bpe_tokenizer, rm_bench_tables, mode):
    groups, pairs = rm_bench_tables
    model = make_llama(bpe_tokenizer)
    # One batch holds every group / every pair, so each step sees the same 54 pairs on both sides.
    _, want = run(tmp_path, model, bpe_tokenizer, pairs, len(pairs), "pairs", pair_batching="packed")
    trainer, got = run(tmp_path, model, bpe_tokenizer, groups, len(groups), "groups", pair_batching=mode)
    assert trainer.pair_batching == mode and isinstance(trainer.data_collator, GroupCollator)
    assert len(got) == len(want) == 4 and len({round(x, 6) for x in want}) > 1
    for step, (a, b) in enumerate(zip(got, want), start=1):
        assert abs(a - b) <= 1e-5, f"step {step}: groups {a!r} vs pairs {b!r}"
    # The trained model's rewards of every expanded pair: read from the groups, and from the pairs.
    from_groups = trainer.predict(groups).predictions
    from_pairs = trainer.predict(pairs).predictions
    assert from_groups.shape == from_pairs.shape == (54, 2)
    torch.testing.assert_close(torch.as_tensor(from_groups), torch.as_tensor(from_pairs), rtol=0, atol=1e-5)
    metrics = trainer.evaluate(groups)
    assert abs(metrics["eval_loss"] - trainer.evaluate(pairs)["eval_loss"]) <= 1e-5


@pytest.mark.parametrize("loss", ["bradley_terry", "plackett_luce"])
def test_group_evaluation_counts_every_pair_once_at_any_batch_size(
    tmp_path, bpe_tokenizer, rm_bench_tables, loss
):
    """Groups of 1 to 9 pairs: evaluating 4 groups per batch (the last batch holds 2), 1 per batch,
    or without concatenating the batches gives the metrics of the whole set in one batch (1e-6),
    every pair once, in table order; eval_loss is `group_loss` of the whole set."""
    groups, _ = rm_bench_tables
    keep = [1, 9, 3, 5, 2, 7]
    uneven = groups.map(
        lambda row, k: {"pairs": row["pairs"][: keep[k]]}, with_indices=True, features=groups.features
    )
    args = RewardConfig(output_dir=str(tmp_path), group_loss=loss, per_device_eval_batch_size=6, **FULL_BATCH)
    trainer = RewardTrainer(model=make_llama(bpe_tokenizer), args=args, processing_class=bpe_tokenizer)
    whole = trainer.evaluate(uneven)
    rewards = trainer.predict(uneven).predictions
    assert whole["eval_num_pairs"] == sum(keep) and rewards.shape == (sum(keep), 2)
    batch = GroupCollator(pad_token_id=bpe_tokenizer.pad_token_id, layout="standard")(list(uneven))
    with torch.no_grad():
        want = trainer.compute_loss(trainer.model, batch).item()
    assert whole["eval_loss"] == pytest.approx(want, abs=1e-6)
    for size, concat in ((4, True), (1, True), (4, False)):
        trainer.args.per_device_eval_batch_size, trainer.args.eval_do_concat_batches = size, concat
        got = trainer.evaluate(uneven)
        for key, value in whole.items():
            if key.startswith("eval_") and not key.endswith(("runtime", "_per_second", "preparation_time")):
                assert got[key] == pytest.approx(value, abs=1e-6), (size, concat, key)
        predicted = trainer.predict(uneven).predictions
        torch.testing.assert_close(torch.as_tensor(predicted), torch.as_tensor(rewards), rtol=0, atol=1e-6)
    trainer.args.batch_eval_metrics = True
    with pytest.raises(ConfigError, match="batch_eval_metrics is not supported with a grouped table"):
        trainer.evaluate(uneven)


ISOLATED = "REWARD_PLUGIN_TEST_ISOLATED"


def test_encoder_groups_in_the_standard_layout_equal_the_pairs(tmp_path, bpe_tokenizer, rm_bench_tables):
    # Run in a fresh interpreter: in a full suite run (never alone) the tiny BERT came out degenerate
    # (every loss ln 2 to 1e-7, no learning) after earlier in-process tests; the cause is not found yet.
    if not os.environ.get(ISOLATED):
        test = f"{Path(__file__).resolve()}::test_encoder_groups_in_the_standard_layout_equal_the_pairs"
        env = {**os.environ, ISOLATED: "1"}
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
            env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        return
    groups, pairs = rm_bench_tables
    torch.manual_seed(0)
    model = tiny_bert()
    model.resize_token_embeddings(len(bpe_tokenizer))
    # Plain SGD: Adam divides by the gradient's magnitude, which turns rounding noise in the ~0
    # gradients of BERT's padded batches (padded to other lengths on the two sides) into full steps.
    sgd = {"optim": "sgd", "learning_rate": 0.5}
    _, want = run(tmp_path, model, bpe_tokenizer, pairs, len(pairs), "pairs", **sgd)
    trainer, got = run(tmp_path, model, bpe_tokenizer, groups, len(groups), "groups", **sgd)
    assert trainer.pair_batching == "standard" and len(got) == 4 and len({round(x, 6) for x in want}) > 1
    for a, b in zip(got, want):
        assert abs(a - b) <= 1e-5


def plackett_luce_reference(
    rewards: list[float], scores: list[float], best_only: bool = False
) -> list[float]:
    """-log P of each choice, written out: response i is drawn from i and every response scored below it."""
    out = []
    for i, (r, s) in enumerate(zip(rewards, scores)):
        if best_only and s != max(scores):
            continue
        rest = [rewards[j] for j in range(len(rewards)) if scores[j] < s]
        if rest:
            out.append(-math.log(math.exp(r) / (math.exp(r) + sum(math.exp(x) for x in rest))))
    return out


def test_listwise_losses_equal_the_formulas():
    torch.manual_seed(1)
    rewards = torch.randn(9, dtype=torch.float64)
    scores = [3.0, 1.0, 2.0, 0.0, 5.0, 5.0, 1.0, 0.0, 2.0]  # a strict ranking of 4, then a tied group of 5
    owner = [0, 0, 0, 0, 1, 1, 1, 1, 1]
    pairs = [
        (a, b)
        for a, b in itertools.permutations(range(9), 2)
        if owner[a] == owner[b] and scores[a] > scores[b]
    ]
    better, worse = (torch.tensor(x) for x in zip(*pairs))
    args = {"scores": torch.tensor(scores), "groups": torch.tensor(owner)}
    for kind, best_only in (("plackett_luce", False), ("best_vs_rest", True)):
        terms = []
        for g in (0, 1):
            idx = [i for i in range(9) if owner[i] == g]
            terms += plackett_luce_reference(
                [float(rewards[i]) for i in idx], [scores[i] for i in idx], best_only
            )
        got = group_loss(rewards, better, worse, kind=kind, **args)
        assert abs(float(got) - sum(terms) / len(terms)) <= 1e-6, kind
    # A strict ranking of K=4: the full Plackett-Luce likelihood, log P(order) = sum of its 3 choices.
    r = [float(x) for x in rewards[:4]]
    order = sorted(range(4), key=lambda i: -scores[i])
    log_p = sum(r[order[k]] - math.log(sum(math.exp(r[j]) for j in order[k:])) for k in range(3))
    got = group_loss(
        rewards[:4],
        better[:6],
        worse[:6],
        kind="plackett_luce",
        scores=torch.tensor(scores[:4]),
        groups=torch.zeros(4, dtype=torch.long),
    )
    assert abs(float(got) + log_p / 3) <= 1e-6
    # K=2: Plackett-Luce and best-vs-rest are Bradley-Terry.
    two = rewards[:2]
    for kind in ("plackett_luce", "best_vs_rest", "bradley_terry"):
        got = group_loss(
            two,
            torch.tensor([0]),
            torch.tensor([1]),
            kind=kind,
            scores=torch.tensor([1.0, 0.0]),
            groups=torch.zeros(2, dtype=torch.long),
        )
        assert abs(float(got) - float(pairwise_loss(two[:1], two[1:]))) <= 1e-7
    with pytest.raises(DataError, match="has none"):
        group_loss(
            two,
            torch.tensor([0]),
            torch.tensor([1]),
            kind="plackett_luce",
            scores=torch.tensor([1.0, float("nan")]),
            groups=torch.zeros(2, dtype=torch.long),
        )


@pytest.mark.parametrize("kind", ["plackett_luce", "best_vs_rest"])
def test_listwise_training_starts_at_the_formula_and_trains_every_parameter(
    tmp_path, bpe_tokenizer, rm_bench_tables, kind
):
    groups, _ = rm_bench_tables
    model = make_llama(bpe_tokenizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # The untrained model's reward of every response, each sequence alone, and the formula over them.
    reference, scorer = [], copy.deepcopy(model).eval()
    for row in groups.to_list():
        sequences = [row["prompt_ids"] + r for r in row["response_ids"]]
        with torch.no_grad():
            rewards = sequence_rewards(scorer, sequences).tolist()
        reference += plackett_luce_reference(rewards, row["scores"], best_only=kind == "best_vs_rest")
    extra = {"group_loss": kind, "gradient_checkpointing": True, "max_steps": 2}
    trainer, losses = run(tmp_path, model, bpe_tokenizer, groups, len(groups), kind, **extra)
    assert abs(losses[0] - sum(reference) / len(reference)) <= 1e-5
    assert len(losses) == 2 and losses[1] < losses[0]
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert len(changed) == len(before)


def test_group_loss_is_checked():
    with pytest.raises(ConfigError, match="group_loss"):
        RewardConfig(output_dir="x", group_loss="listnet", use_cpu=True)
