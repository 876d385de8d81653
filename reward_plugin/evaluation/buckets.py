"""Accuracy within equal-count buckets of a per-pair key (reward gap, data margin, length difference),
and the number format the report's text uses for values that may be missing."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..metrics import accuracy_estimate

#: Number of equal-count buckets of the accuracy-by-key tables.
NUM_BUCKETS = 5


def accuracy_by_bucket(
    keys: Any, correct: Any, buckets: int = NUM_BUCKETS, units: Any = None
) -> list[dict[str, Any]]:
    """Accuracy within (about) equal-count buckets of ``keys``, split at their quantiles.

    Args:
        keys: one value per pair to bucket by (a reward gap, a data margin, a length difference).
        correct: whether each pair was ranked right.
        buckets: the most buckets to make.
        units: the prompt of each pair (pairs of one prompt are one unit of the interval), or
            None when every pair is its own prompt.

    Returns:
        ``[{"low", "high", "count", "accuracy", "prompts", "ci95"}, ...]`` in ascending key
        order; ``low``/``high`` are the smallest and largest key in the bucket, equal keys share
        a bucket; ``ci95`` is the Wilson interval over the bucket's prompts.
    """
    keys = np.asarray(keys, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    units = np.arange(keys.size) if units is None else np.asarray(units)
    inner = np.unique(np.quantile(keys, np.linspace(0, 1, buckets + 1))[1:-1])
    index = np.searchsorted(inner, keys, side="right")  # bucket b holds inner[b-1] <= key < inner[b]
    rows = []
    for b in range(len(inner) + 1):
        selected = index == b
        if selected.any():
            row = {"low": float(keys[selected].min()), "high": float(keys[selected].max())}
            row.update(
                accuracy_estimate(correct[selected].mean(), selected.sum(), np.unique(units[selected]).size)
            )
            rows.append(row)
    return rows


def format_number(value: float | None) -> str:
    """``value`` with three decimals, ``n/a`` for None (a correlation of constant values)."""
    return "n/a" if value is None else f"{value:.3f}"
