"""Pairwise reward metrics and the reward statistics saved with a trained model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

#: File written next to the model weights; downstream RLHF normalises rewards with it.
REWARD_STATS_FILE = "reward_stats.json"
#: ``z`` of a two-sided 95% normal interval.
Z_95 = 1.959963984540054


def _as_array(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # torch tensor (bf16 has no numpy dtype)
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


def format_accuracy(accuracy: float, num_pairs: int) -> str:
    """``"0.6150 (95% CI 0.5459-0.6797, 200 pairs)"``: an accuracy with its interval and count."""
    if not num_pairs or math.isnan(accuracy):
        return f"nan ({num_pairs} pairs)"
    low, high = wilson_interval(accuracy, num_pairs)
    return f"{accuracy:.4f} (95% CI {low:.4f}-{high:.4f}, {num_pairs} pairs)"


def reward_metrics(rewards_chosen: Any, rewards_rejected: Any) -> dict[str, float]:
    """Accuracy, mean reward margin and the mean/std of chosen and rejected rewards.

    A pair counts as correct only when the chosen reward is strictly higher, so ties count as
    wrong. Standard deviations are population ones (``ddof=0``).

    Args:
        rewards_chosen: ``(n,)`` rewards of the preferred responses (tensor, array or list).
        rewards_rejected: ``(n,)`` rewards of the dispreferred responses.

    Returns:
        ``{"accuracy", "accuracy_ci_low", "accuracy_ci_high", "num_pairs", "margin",
        "rewards/chosen_mean", "rewards/chosen_std", "rewards/rejected_mean",
        "rewards/rejected_std"}`` as floats (NaN for no pairs); the interval is the 95% Wilson
        interval (:func:`wilson_interval`).
    """
    chosen, rejected = _as_array(rewards_chosen), _as_array(rewards_rejected)
    if chosen.shape != rejected.shape:
        raise ValueError(
            f"{chosen.size} chosen rewards but {rejected.size} rejected rewards; they come in pairs"
        )
    if chosen.size == 0:
        return {**dict.fromkeys(_METRIC_KEYS, float("nan")), "num_pairs": 0}
    correct = int(np.sum(chosen > rejected))
    low, high = wilson_interval(correct / chosen.size, chosen.size)
    return {
        "accuracy": correct / chosen.size,
        "accuracy_ci_low": low,
        "accuracy_ci_high": high,
        "num_pairs": int(chosen.size),
        "margin": float(np.mean(chosen - rejected)),
        "rewards/chosen_mean": float(chosen.mean()),
        "rewards/chosen_std": float(chosen.std()),
        "rewards/rejected_mean": float(rejected.mean()),
        "rewards/rejected_std": float(rejected.std()),
    }


_METRIC_KEYS = (
    "accuracy",
    "accuracy_ci_low",
    "accuracy_ci_high",
    "margin",
    "rewards/chosen_mean",
    "rewards/chosen_std",
    "rewards/rejected_mean",
    "rewards/rejected_std",
)


def compute_reward_metrics(eval_pred: Any) -> dict[str, float]:
    """The trainer's default ``compute_metrics``: :func:`reward_metrics` over an ``EvalPrediction``.

    Args:
        eval_pred: its ``predictions`` have shape ``(n, 2)``: column 0 the chosen rewards, column 1
            the rejected ones.

    Returns:
        The :func:`reward_metrics` dictionary.
    """
    predictions = eval_pred.predictions if hasattr(eval_pred, "predictions") else eval_pred[0]
    predictions = np.asarray(predictions, dtype=np.float64)
    if predictions.ndim != 2 or predictions.shape[1] != 2:
        raise ValueError(
            f"reward predictions must have shape (n, 2) (chosen, rejected), got {predictions.shape}"
        )
    return reward_metrics(predictions[:, 0], predictions[:, 1])


def reward_statistics(rewards_chosen: Any, rewards_rejected: Any, split: str) -> dict[str, Any]:
    """Statistics of a model's rewards for normalising them downstream (``(r - mean) / std``).

    ``mean`` and ``std`` are taken over all responses, chosen and rejected together.

    Args:
        rewards_chosen: ``(n,)`` rewards of the preferred responses.
        rewards_rejected: ``(n,)`` rewards of the dispreferred responses.
        split: which data they come from (``"eval"`` or ``"train"``), recorded in the result.

    Returns:
        ``{"mean", "std", "num_pairs", "split", "accuracy", "margin", "chosen_mean", ...}``.
    """
    chosen, rejected = _as_array(rewards_chosen), _as_array(rewards_rejected)
    both = np.concatenate([chosen, rejected])
    metrics = reward_metrics(chosen, rejected)
    return {
        "mean": float(both.mean()) if both.size else math.nan,
        "std": float(both.std()) if both.size else math.nan,
        "num_pairs": int(chosen.size),
        "split": split,
        "accuracy": metrics["accuracy"],
        "accuracy_ci_low": metrics["accuracy_ci_low"],
        "accuracy_ci_high": metrics["accuracy_ci_high"],
        "margin": metrics["margin"],
        "chosen_mean": metrics["rewards/chosen_mean"],
        "chosen_std": metrics["rewards/chosen_std"],
        "rejected_mean": metrics["rewards/rejected_mean"],
        "rejected_std": metrics["rewards/rejected_std"],
    }


def write_reward_stats(stats: dict[str, Any], output_dir: str | Path) -> Path:
    """Write ``stats`` as ``reward_stats.json`` in ``output_dir`` and return the file's path."""
    path = Path(output_dir) / REWARD_STATS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_reward_stats(model_dir: str | Path) -> dict[str, Any] | None:
    """The ``reward_stats.json`` of a saved model folder, or ``None`` when it has none."""
    path = Path(model_dir) / REWARD_STATS_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def wilson_interval(accuracy: float, units: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of an accuracy observed over ``units`` units.

    Every interval the evaluation reports comes from here. ``units`` is the number of
    independent units (prompts): comparisons of one prompt share its text and are not
    independent. For a mean of per-unit fractions in ``[0, 1]`` (a prompt's share of won
    comparisons) the variance is at most ``p(1 - p)``, so the Bernoulli interval is conservative.

    Args:
        accuracy: the observed proportion in ``[0, 1]``.
        units: how many independent units it is the mean over.
        z: the normal quantile (1.96 for 95%).

    Returns:
        ``(low, high)``, NaNs when ``units`` is 0.
    """
    if units <= 0:
        return math.nan, math.nan
    p = min(max(float(accuracy), 0.0), 1.0)
    z2n = z * z / units
    centre = (p + z2n / 2) / (1 + z2n)
    half = z * math.sqrt(p * (1 - p) / units + z2n / (4 * units)) / (1 + z2n)
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_estimate(accuracy: float, count: int, units: int) -> dict[str, Any]:
    """An accuracy with its count and 95% interval, as every report shows one.

    Args:
        accuracy: the proportion of comparisons won.
        count: the number of comparisons it is taken over.
        units: the number of independent prompts behind them (the interval's ``n``).

    Returns:
        ``{"accuracy", "count", "prompts", "ci95": [low, high]}``.
    """
    low, high = wilson_interval(accuracy, units)
    return {"accuracy": float(accuracy), "count": int(count), "prompts": int(units), "ci95": [low, high]}
