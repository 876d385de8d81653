"""The evaluation report: accuracy, margins and reward distributions, plus the group metrics.

:func:`evaluate_model` scores the data (:mod:`.scoring`) and reports, over the preference pairs,
accuracy, margins and reward distributions (:func:`summarize_rewards`), and over the prompts
(:func:`group_report`) pairwise and best-of-N accuracy, RM-Bench's difficulty levels when every
prompt has 3 + 3 responses, and the length bias. :func:`format_report` is its text form.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..metrics import format_accuracy, wilson_interval
from .buckets import accuracy_by_bucket, format_number
from .length_bias import has_lengths, length_bias_report
from .prompts import PromptRewards, best_of_n_accuracy, pairwise_accuracy, write_predictions
from .rewardbench import BENCHMARK_REPORTS, format_rewardbench
from .rm_bench import is_rm_bench, rm_bench_report

#: Percentiles reported for the reward distributions.
PERCENTILES = (5, 25, 50, 75, 95)


def _distribution(values: np.ndarray) -> dict[str, float]:
    out = {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
    }
    for q, v in zip(PERCENTILES, np.percentile(values, PERCENTILES)):
        out[f"p{q}"] = float(v)
    return out


def summarize_rewards(
    chosen: Any, rejected: Any, data_margin: Any = None, units: Any = None
) -> dict[str, Any]:
    """The evaluation report of per-pair rewards.

    Args:
        chosen: ``(n,)`` rewards of the chosen responses.
        rejected: ``(n,)`` rewards of the rejected responses.
        data_margin: ``(n,)`` margins given by the data (how much better chosen is), or None.
        units: ``(n,)`` the prompt of each pair (the unit of the buckets' intervals), or None when
            every pair has its own prompt.

    Returns:
        ``num_pairs``, ``accuracy`` (ties count as wrong), ``ties``, ``margin`` (distribution of
        ``r_chosen - r_rejected``), ``rewards`` (``chosen``, ``rejected`` and ``all``
        distributions), ``accuracy_by_reward_gap`` (buckets of ``|r_chosen - r_rejected|``) and,
        with non-constant data margins, ``accuracy_by_data_margin``.
    """
    chosen = np.asarray(chosen, dtype=np.float64).reshape(-1)
    rejected = np.asarray(rejected, dtype=np.float64).reshape(-1)
    if chosen.size == 0:
        raise ConfigError("no pairs to evaluate; check the data file and --max-length")
    gap = chosen - rejected
    correct = gap > 0
    report: dict[str, Any] = {
        "num_pairs": int(chosen.size),
        "accuracy": float(correct.mean()),
        "accuracy_ci95": list(
            wilson_interval(float(correct.mean()) if correct.size else 0.0, int(correct.size))
        ),
        "ties": int((gap == 0).sum()),
        "margin": _distribution(gap),
        "rewards": {
            "chosen": _distribution(chosen),
            "rejected": _distribution(rejected),
            "all": _distribution(np.concatenate([chosen, rejected])),
        },
        "accuracy_by_reward_gap": accuracy_by_bucket(np.abs(gap), correct, units=units),
    }
    if data_margin is not None:
        margin = np.asarray(data_margin, dtype=np.float64).reshape(-1)
        if margin.size == chosen.size and np.ptp(margin) > 0:
            report["accuracy_by_data_margin"] = accuracy_by_bucket(margin, correct, units=units)
    return report


def group_report(groups: Sequence[PromptRewards], data_margin: Any = None) -> dict[str, Any]:
    """The whole evaluation report of scored prompts.

    Args:
        groups: the prompts with their rewards (and response lengths for the length bias).
        data_margin: the data's margin of each pair (in group order), or None.

    Returns:
        :func:`summarize_rewards` over all pairs, plus ``num_prompts``, ``pairwise_accuracy``,
        ``best_of_n_accuracy``, ``rm_bench`` (when every prompt has 3 chosen and 3 rejected
        responses) and ``length_bias`` (when lengths are known).
    """
    better = np.concatenate([g.rewards[g.pairs[:, 0]] for g in groups]) if groups else np.zeros(0)
    worse = np.concatenate([g.rewards[g.pairs[:, 1]] for g in groups]) if groups else np.zeros(0)
    units = np.concatenate([np.full(len(g.pairs), k) for k, g in enumerate(groups)]) if groups else None
    report = summarize_rewards(better, worse, data_margin, units=units)
    report["num_prompts"] = len(groups)
    report["pairwise_accuracy"] = pairwise_accuracy(groups)
    report["best_of_n_accuracy"] = best_of_n_accuracy(groups)
    if is_rm_bench(groups):
        report["rm_bench"] = rm_bench_report(groups)
    if has_lengths(groups):
        report["length_bias"] = length_bias_report(groups)
    return report


def evaluate_model(
    model_dir: str | os.PathLike,
    data: str | os.PathLike,
    *,
    format: str = "auto",
    tokenizer: str | os.PathLike | None = None,
    max_length: int | None = None,
    truncation: str = "left",
    chat_template: str | None = None,
    format_options: dict[str, Any] | None = None,
    batch_size: int = 16,
    plot: str | os.PathLike | None = None,
    predictions: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Score every prompt of ``data`` with the model in ``model_dir`` and report.

    Args:
        model_dir: a saved reward model (``AutoModelForSequenceClassification``, one output) or
            PEFT adapter folder, with its tokenizer.
        data: a tokenized table (pairs or groups: ``.parquet``/``.arrow``/``datasets`` folder) or
            raw preference data in a dataset-toolkit format (converted with the tokenizer).
        format: the format of raw data (``"auto"`` detects it); ``rewardbench`` and
            ``rewardbench2`` add the benchmark's scores (:mod:`.rewardbench`).
        tokenizer: the tokenizer folder or name (default: the model's).
        max_length: cut longer sequences (on the ``truncation`` side), as in training.
        truncation: ``"left"`` or ``"right"``.
        chat_template: chat template for conversational raw data.
        format_options: adapter options for raw data.
        batch_size: pairs (pair tables) or groups (raw and grouped data) per forward pass.
        plot: also write a PNG of the reward histograms, accuracy by reward gap and the length
            bias here.
        predictions: also write one JSON line per prompt with its rewards here.

    Returns:
        The :func:`group_report` plus ``model`` and ``data`` (and ``plot``/``predictions`` when
        written, and ``rewardbench``/``rewardbench2`` for those formats).

    Raises:
        ConfigError: the model folder is missing, no pairs, or ``plot`` without matplotlib.
        dataset_formats.DatasetFormatError: the data cannot be read or converted.
    """
    from .plot import plot_evaluation, require_matplotlib
    from .predict import EvalSettings, predict_groups

    if plot is not None:
        require_matplotlib()
    settings = EvalSettings(
        format, tokenizer, max_length, truncation, chat_template, format_options, batch_size
    )
    groups, margins = predict_groups(model_dir, data, settings)
    report: dict[str, Any] = {"model": str(model_dir), "data": str(data)}
    report.update(group_report(groups, margins))
    if format in BENCHMARK_REPORTS:  # RewardBench v1 / 2: the benchmark's own scores
        report[format] = BENCHMARK_REPORTS[format](groups)
    if predictions is not None:
        report["predictions"] = str(write_predictions(groups, predictions))
    if plot is not None:
        chosen = np.concatenate([g.chosen for g in groups])  # each response once
        rejected = np.concatenate([g.rejected for g in groups])
        rewards = np.concatenate([g.rewards for g in groups])
        lengths = np.concatenate([g.lengths for g in groups]) if has_lengths(groups) else None
        report["plot"] = str(plot_evaluation(chosen, rejected, report, plot, rewards, lengths))
    return report


def _estimate(e: dict[str, Any]) -> str:
    return f"{e['accuracy']:.4f} [{e['ci95'][0]:.3f}, {e['ci95'][1]:.3f}]"


def format_report(report: dict[str, Any]) -> str:
    """The human-readable text of an :func:`evaluate_model` report."""
    margin, rewards = report["margin"], report["rewards"]
    pairwise, best = report["pairwise_accuracy"], report["best_of_n_accuracy"]
    lines = [
        f"model: {report['model']}",
        f"data: {report['data']} ({report['num_pairs']} pairs, {report['num_prompts']} prompts)",
        f"accuracy: {format_accuracy(report['accuracy'], report['num_pairs'])} (ties: {report['ties']})",
        (
            f"pairwise accuracy: {_estimate(pairwise)} ({pairwise['count']} pairs, {pairwise['prompts']} prompts; "
            "95% Wilson interval over prompts)"
        ),
        f"best-of-N accuracy (N = {best['n']}): {_estimate(best)} ({best['count']} prompts)",
        (
            f"margin r_chosen - r_rejected: mean {margin['mean']:.4f}, std {margin['std']:.4f}, "
            f"median {margin['p50']:.4f}"
        ),
    ]
    for name in ("chosen", "rejected", "all"):
        d = rewards[name]
        lines.append(
            f"rewards {name}: mean {d['mean']:.4f}, std {d['std']:.4f}, min {d['min']:.4f}, max {d['max']:.4f}"
        )
    for key, title in (("accuracy_by_reward_gap", "reward gap"), ("accuracy_by_data_margin", "data margin")):
        if key in report:
            lines.append(f"accuracy by {title}:")
            for b in report[key]:
                lines.append(f"  {b['low']:.4g} .. {b['high']:.4g}: {_estimate(b)} ({b['count']} pairs)")
    if "rm_bench" in report:
        lines += _format_rm_bench(report["rm_bench"])
    for key in BENCHMARK_REPORTS:
        if key in report:
            lines += format_rewardbench(report[key], key)
    if "length_bias" in report:
        lines += _format_length_bias(report["length_bias"])
    for key in ("predictions", "plot"):
        if key in report:
            lines.append(f"{key}: {report[key]}")
    return "\n".join(lines)


def _format_rm_bench(rm: dict[str, Any]) -> list[str]:
    lines = ["RM-Bench (rows: chosen style, columns: rejected style; " + " / ".join(rm["styles"]) + "):"]
    for name, domain in rm["domains"].items():
        lines.append(f"  {name} ({domain['prompts']} prompts):")
        for row in domain["matrix"]:
            lines.append("    " + "  ".join(f"{v:.3f}" for v in row))
        levels = ", ".join(
            f"{level} {_estimate(domain[level])}" for level in ("easy", "normal", "hard", "average")
        )
        lines.append(f"    {levels}")
    levels = ", ".join(f"{level} {_estimate(rm[level])}" for level in ("easy", "normal", "hard", "average"))
    lines.append(f"  over domains ({rm['average']['prompts']} prompts): {levels}")
    return lines


def _format_length_bias(bias: dict[str, Any]) -> list[str]:
    corr, mean = bias["correlation"], bias["mean_length"]
    lines = [
        f"length bias (mean tokens: chosen {mean['chosen']:.1f}, rejected {mean['rejected']:.1f}):",
        "  "
        + ", ".join(
            f"{name.replace('_', ' ')} {_estimate(e)} ({e['count']} pairs)"
            for name, e in bias["by_sign"].items()
            if e["count"]
        ),
        (
            f"  reward vs length over {corr['responses']} responses: Pearson {format_number(corr['pearson'])}, "
            f"Spearman {format_number(corr['spearman'])}, within prompts {format_number(corr['within_prompt_pearson'])}"
        ),
        "  accuracy by len(chosen) - len(rejected):",
    ]
    for b in bias["by_length_difference"]:
        lines.append(f"    {b['low']:.4g} .. {b['high']:.4g}: {_estimate(b)} ({b['count']} pairs)")
    return lines
