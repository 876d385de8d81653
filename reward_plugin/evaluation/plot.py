"""The evaluation figure: reward histograms, accuracy by reward gap and, with lengths, the length bias.

Needs the optional ``matplotlib`` (``pip install 'reward-plugin[plot]'``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..metrics import format_accuracy
from .buckets import format_number


def require_matplotlib() -> None:
    """Raise a :class:`ConfigError` naming the fix when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "--plot needs matplotlib, which is not installed: pip install 'reward-plugin[plot]' (or matplotlib)"
        ) from exc


def _bucket_bars(axes: Any, buckets: list[dict[str, Any]], xlabel: str, title: str) -> None:
    """Accuracy bars of buckets with their 95% intervals as error bars."""
    labels = [f"{b['low']:.3g}..{b['high']:.3g}\n(n={b['count']})" for b in buckets]
    accuracy = np.array([b["accuracy"] for b in buckets])
    low = accuracy - np.array([b["ci95"][0] for b in buckets])
    high = np.array([b["ci95"][1] for b in buckets]) - accuracy
    axes.bar(range(len(buckets)), accuracy, yerr=[low, high], capsize=3)
    axes.set_xticks(range(len(buckets)), labels, fontsize=7)
    axes.set_ylim(0, 1)
    axes.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("accuracy (95% interval)")
    axes.set_title(title)


def plot_evaluation(
    chosen: Any,
    rejected: Any,
    report: dict[str, Any],
    path: str | os.PathLike,
    rewards: Any = None,
    lengths: Any = None,
) -> Path:
    """Write a PNG of an evaluation report.

    Panels: histogram of chosen vs rejected rewards; accuracy by reward-gap bucket; and, when the
    report has a ``length_bias`` section and ``rewards``/``lengths`` of every response are given,
    accuracy by length-difference bucket and reward against response length.

    Args:
        chosen: rewards of the chosen responses (each response once).
        rejected: rewards of the rejected responses.
        report: the :func:`~reward_plugin.evaluation.evaluate_model` report.
        path: where to write the PNG.
        rewards: every response's reward (for the scatter), or None.
        lengths: every response's length in tokens, or None.

    Raises:
        ConfigError: matplotlib is not installed.
    """
    require_matplotlib()
    from matplotlib.figure import Figure

    chosen, rejected = np.asarray(chosen, dtype=np.float64), np.asarray(rejected, dtype=np.float64)
    bias = report.get("length_bias") if rewards is not None and lengths is not None else None
    fig = Figure(figsize=(11, 8 if bias else 4), layout="constrained")
    axes = fig.subplots(2 if bias else 1, 2).reshape(-1)
    bins = np.histogram_bin_edges(np.concatenate([chosen, rejected]), bins=30)
    axes[0].hist(chosen, bins=bins, alpha=0.6, label=f"chosen (mean {chosen.mean():.3f})")
    axes[0].hist(rejected, bins=bins, alpha=0.6, label=f"rejected (mean {rejected.mean():.3f})")
    axes[0].set_xlabel("reward")
    axes[0].set_ylabel("responses")
    axes[0].set_title(f"accuracy {format_accuracy(report['accuracy'], report['num_pairs'])}")
    axes[0].legend()
    _bucket_bars(
        axes[1], report["accuracy_by_reward_gap"], "|r_chosen - r_rejected| bucket", "accuracy by reward gap"
    )
    if bias:
        _bucket_bars(
            axes[2],
            bias["by_length_difference"],
            "len(chosen) - len(rejected) bucket (tokens)",
            "accuracy by length difference",
        )
        corr = bias["correlation"]
        axes[3].scatter(np.asarray(lengths), np.asarray(rewards), s=6, alpha=0.5)
        axes[3].set_xlabel("response length (tokens)")
        axes[3].set_ylabel("reward")
        axes[3].set_title(
            f"reward vs length (n={corr['responses']}): Pearson {format_number(corr['pearson'])}, "
            f"Spearman {format_number(corr['spearman'])}",
            fontsize=10,
        )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out
