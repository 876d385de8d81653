"""Reward metrics and statistics against hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from transformers import EvalPrediction

from reward_plugin.metrics import (
    compute_reward_metrics,
    format_accuracy,
    read_reward_stats,
    reward_metrics,
    reward_statistics,
    wilson_interval,
    write_reward_stats,
)


def test_accuracy_counts_ties_as_wrong():
    m = reward_metrics([1.0, 2.0, 0.5, 3.0], [0.0, 2.0, 1.0, 1.0])
    assert m["accuracy"] == 0.5  # pair 2 is a tie, pair 3 is wrong
    assert m["margin"] == pytest.approx((1 + 0 - 0.5 + 2) / 4)
    assert m["rewards/chosen_mean"] == pytest.approx(1.625)
    assert m["rewards/chosen_std"] == pytest.approx(
        math.sqrt(np.mean((np.array([1, 2, 0.5, 3]) - 1.625) ** 2))
    )
    assert m["rewards/rejected_mean"] == pytest.approx(1.0)
    assert m["rewards/rejected_std"] == pytest.approx(math.sqrt(0.5))


def test_accepts_bf16_tensors_and_eval_predictions():
    rc = torch.tensor([1.0, -1.0], dtype=torch.bfloat16)
    rr = torch.tensor([0.5, 0.0], dtype=torch.bfloat16)
    assert reward_metrics(rc, rr)["accuracy"] == 0.5
    pred = EvalPrediction(predictions=np.array([[1.0, 0.5], [-1.0, 0.0]]), label_ids=np.zeros(2))
    assert compute_reward_metrics(pred) == reward_metrics([1.0, -1.0], [0.5, 0.0])


def test_predictions_must_be_pairs():
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        compute_reward_metrics(EvalPrediction(predictions=np.zeros((3, 1)), label_ids=None))


def test_statistics_pool_chosen_and_rejected(tmp_path):
    stats = reward_statistics([1.0, 3.0], [0.0, 0.0], split="eval")
    assert stats["mean"] == pytest.approx(1.0)
    assert stats["std"] == pytest.approx(math.sqrt((0 + 4 + 1 + 1) / 4))
    assert stats["num_pairs"] == 2 and stats["split"] == "eval" and stats["accuracy"] == 1.0
    path = write_reward_stats(stats, tmp_path)
    assert json.loads(path.read_text()) == stats == read_reward_stats(tmp_path)
    assert read_reward_stats(tmp_path / "missing") is None


def test_wilson_interval_of_counts():
    # 95% Wilson intervals worked out by hand: 0/10 -> upper 1.96^2 / (10 + 1.96^2); 5/10 -> 0.5 -+ 0.2634.
    assert wilson_interval(0 / 10, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5 / 10, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    low, high = wilson_interval(63 / 100, 100)
    assert (1 - high, 1 - low) == pytest.approx(wilson_interval(37 / 100, 100), abs=1e-12)
    assert all(math.isnan(v) for v in wilson_interval(0.0, 0))
    assert format_accuracy(0.63, 100) == "0.6300 (95% CI 0.5322-0.7182, 100 pairs)"


def test_metrics_carry_the_pair_count_and_interval():
    m = reward_metrics([1.0, 2.0, 0.5, 3.0], [0.0, 2.0, 1.0, 1.0])
    assert m["num_pairs"] == 4 and (m["accuracy_ci_low"], m["accuracy_ci_high"]) == wilson_interval(2 / 4, 4)
