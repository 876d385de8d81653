"""Length bias: does the model prefer longer responses regardless of quality?

Two views, both from grouped rewards with response lengths in tokens (the prompt left out):

- accuracy by the length difference ``len(better) - len(worse)`` of each preference pair:
  by sign (chosen longer / same length / chosen shorter) and in equal-count buckets. A model
  that rewards length is right far more often when the chosen response is the longer one.
- the correlation of reward with response length over all responses (Pearson and Spearman),
  and within prompts (Pearson of rewards and lengths centred on their prompt's mean), which
  leaves out differences between prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..metrics import accuracy_estimate
from .buckets import accuracy_by_bucket
from .prompts import PromptRewards, pair_outcomes


def has_lengths(groups: Sequence[PromptRewards]) -> bool:
    """Whether every prompt knows its responses' lengths."""
    return bool(groups) and all(g.lengths is not None for g in groups)


def ranks(values: Any) -> np.ndarray:
    """1-based ranks of ``values``, ties given their average rank (as Spearman's rho needs)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], values.size]
    average = (starts + ends + 1) / 2.0  # mean of the 1-based positions start+1 .. end
    out = np.empty(values.size)
    out[order] = np.repeat(average, ends - starts)
    return out


def pearson(x: Any, y: Any) -> float:
    """Pearson's correlation, NaN when either side is constant."""
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    y = np.asarray(y, dtype=np.float64) - np.mean(y)
    denominator = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denominator) if denominator > 0 else float("nan")


def _accuracy(correct: np.ndarray, prompt: np.ndarray) -> dict[str, Any]:
    if correct.size == 0:  # no such pairs: null, so that the report stays strict JSON
        return {"accuracy": None, "count": 0, "prompts": 0, "ci95": None}
    return accuracy_estimate(correct.mean(), correct.size, np.unique(prompt).size)


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None


def length_bias_report(groups: Sequence[PromptRewards], buckets: int = 5) -> dict[str, Any]:
    """Accuracy by length difference and the reward-length correlation.

    Args:
        groups: prompts with rewards and response lengths.
        buckets: the most equal-count buckets of the length difference.

    Returns:
        ``{"by_sign": {"chosen_longer", "same_length", "chosen_shorter"}`` (each an
        :func:`~reward_plugin.metrics.accuracy_estimate`, interval over the prompts it holds;
        ``accuracy`` and ``ci95`` null when no pair is of that kind),
        ``"by_length_difference"`` (buckets ``{"low", "high", "count", "prompts", "accuracy",
        "ci95"}``), ``"correlation": {"pearson", "spearman", "within_prompt_pearson",
        "responses"}`` (null when rewards or lengths are constant), ``"mean_length": {"chosen",
        "rejected"}``}.

    Raises:
        ConfigError: no prompts, or some without lengths.
    """
    if not has_lengths(groups):
        raise ConfigError("the length-bias report needs the response lengths of every prompt")
    correct, prompt = pair_outcomes(groups)
    difference = np.concatenate([g.length_differences() for g in groups])
    by_sign = {
        "chosen_longer": _accuracy(correct[difference > 0], prompt[difference > 0]),
        "same_length": _accuracy(correct[difference == 0], prompt[difference == 0]),
        "chosen_shorter": _accuracy(correct[difference < 0], prompt[difference < 0]),
    }
    per_prompt = [(g.rewards, g.lengths.astype(np.float64)) for g in groups]
    rewards = np.concatenate([r for r, _ in per_prompt])
    lengths = np.concatenate([n for _, n in per_prompt])
    centred_rewards = np.concatenate([r - r.mean() for r, _ in per_prompt])
    centred_lengths = np.concatenate([n - n.mean() for _, n in per_prompt])
    return {
        "by_sign": by_sign,
        "by_length_difference": accuracy_by_bucket(difference, correct, buckets, units=prompt),
        "correlation": {
            "pearson": _finite(pearson(rewards, lengths)),
            "spearman": _finite(pearson(ranks(rewards), ranks(lengths))),
            "within_prompt_pearson": _finite(pearson(centred_rewards, centred_lengths)),
            "responses": int(rewards.size),
        },
        "mean_length": {
            "chosen": float(np.mean(np.concatenate([g.lengths[g.chosen_index] for g in groups]))),
            "rejected": float(np.mean(np.concatenate([g.lengths[g.rejected_index] for g in groups]))),
        },
    }
