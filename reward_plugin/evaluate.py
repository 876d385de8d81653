"""Evaluate a trained reward model on preference pairs: accuracy, margins, reward distribution.

:func:`evaluate_model` scores every pair with the same code path as training (the
``RewardTrainer``'s collator and last-token score reader), so the numbers match the ``eval_*``
metrics logged during training. :func:`plot_evaluation` draws a histogram of chosen vs rejected
rewards and the accuracy by reward-gap bucket (needs the optional ``matplotlib``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError
from .metrics import accuracy_interval, format_accuracy

#: Percentiles reported for the reward distributions.
PERCENTILES = (5, 25, 50, 75, 95)
#: Number of equal-count buckets of the accuracy-by-margin tables.
NUM_BUCKETS = 5


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


def accuracy_by_bucket(
    keys: np.ndarray, correct: np.ndarray, buckets: int = NUM_BUCKETS
) -> list[dict[str, Any]]:
    """Accuracy within (about) equal-count buckets of ``keys``, split at their quantiles.

    Args:
        keys: one value per pair to bucket by (a reward gap or a data margin).
        correct: whether each pair was ranked right.
        buckets: the most buckets to make.

    Returns:
        ``[{"low", "high", "count", "accuracy"}, ...]`` in ascending key order; ``low``/``high``
        are the smallest and largest key in the bucket, equal keys share a bucket.
    """
    keys = np.asarray(keys, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    inner = np.unique(np.quantile(keys, np.linspace(0, 1, buckets + 1))[1:-1])
    index = np.searchsorted(inner, keys, side="right")  # bucket b holds inner[b-1] <= key < inner[b]
    rows = []
    for b in range(len(inner) + 1):
        selected = index == b
        if selected.any():
            rows.append(
                {
                    "low": float(keys[selected].min()),
                    "high": float(keys[selected].max()),
                    "count": int(selected.sum()),
                    "accuracy": float(correct[selected].mean()),
                }
            )
    return rows


def summarize_rewards(chosen: Any, rejected: Any, data_margin: Any = None) -> dict[str, Any]:
    """The evaluation report of per-pair rewards.

    Args:
        chosen: ``(n,)`` rewards of the chosen responses.
        rejected: ``(n,)`` rewards of the rejected responses.
        data_margin: ``(n,)`` margins given by the data (how much better chosen is), or None.

    Returns:
        ``num_pairs``, ``accuracy`` (ties count as wrong), ``accuracy_ci95`` (its 95% Wilson
        interval, ``[low, high]``), ``ties``, ``margin`` (distribution of
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
        "accuracy_ci95": list(accuracy_interval(int(correct.sum()), int(chosen.size))),
        "ties": int((gap == 0).sum()),
        "margin": _distribution(gap),
        "rewards": {
            "chosen": _distribution(chosen),
            "rejected": _distribution(rejected),
            "all": _distribution(np.concatenate([chosen, rejected])),
        },
        "accuracy_by_reward_gap": accuracy_by_bucket(np.abs(gap), correct),
    }
    if data_margin is not None:
        margin = np.asarray(data_margin, dtype=np.float64).reshape(-1)
        if margin.size == chosen.size and np.ptp(margin) > 0:
            report["accuracy_by_data_margin"] = accuracy_by_bucket(margin, correct)
    return report


def predict_rewards(
    model_dir: str | os.PathLike,
    data: str | os.PathLike,
    *,
    format: str = "auto",
    max_length: int | None = None,
    truncation: str = "left",
    chat_template: str | None = None,
    format_options: dict[str, Any] | None = None,
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-pair rewards of a saved reward model: ``(rewards (n, 2) [chosen, rejected], data margins or None)``.

    Args: as in :func:`evaluate_model`.
    """
    from .config import RewardConfig
    from .model_sources import SHORT_NAMES, is_gguf_path
    from .stages.sources import DataSource, load_sources
    from .trainer import RewardTrainer

    if not (Path(model_dir).is_dir() or is_gguf_path(model_dir) or str(model_dir).lower() in SHORT_NAMES):
        raise ConfigError(
            f"--model {str(model_dir)!r} is not a folder; pass a trained model's output folder (or a .gguf file)"
        )
    with tempfile.TemporaryDirectory(prefix="reward-plugin-eval-") as tmp:
        args = RewardConfig(
            output_dir=tmp,
            per_device_eval_batch_size=batch_size,
            max_length=max_length,
            truncation=truncation,
            dataset_format=format,
            chat_template=chat_template,
            bf16=False,  # evaluation numbers should not depend on the hardware's precision
            gradient_checkpointing=False,
            report_to="none",
            disable_tqdm=True,
            save_reward_stats=False,
        )
        trainer = RewardTrainer(model=str(model_dir), args=args)
        dataset = load_sources(
            [DataSource([str(data)], format=None, options=dict(format_options or {}))],
            tokenizer=trainer.processing_class,
            dataset_format=format,
            chat_template=chat_template,
            max_length=max_length,
            truncation=truncation,
            name="eval",
        )
        output = trainer.predict(dataset)
    margins = dataset["margin"] if "margin" in dataset.column_names else None
    return np.asarray(output.predictions, dtype=np.float64), (
        np.asarray(margins) if margins is not None else None
    )


def evaluate_model(
    model_dir: str | os.PathLike,
    data: str | os.PathLike,
    *,
    format: str = "auto",
    max_length: int | None = None,
    truncation: str = "left",
    chat_template: str | None = None,
    format_options: dict[str, Any] | None = None,
    batch_size: int = 16,
    plot: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Score every pair of ``data`` with the model in ``model_dir`` and summarise the rewards.

    Args:
        model_dir: a saved reward model (``AutoModelForSequenceClassification``, one output) or
            PEFT adapter folder, with its tokenizer.
        data: a tokenized table (``.parquet``/``.arrow``/``datasets`` folder) or raw preference data
            in a dataset-toolkit format (converted with the model's tokenizer).
        format: the format of raw data (``"auto"`` detects it).
        max_length: cut longer sequences (on the ``truncation`` side), as in training.
        truncation: ``"left"`` or ``"right"``.
        chat_template: chat template for conversational raw data.
        format_options: adapter options for raw data.
        batch_size: pairs per forward pass.
        plot: also write a PNG of the reward histograms and accuracy by reward gap here.

    Returns:
        The :func:`summarize_rewards` report plus ``model`` and ``data`` (and ``plot`` when written).

    Raises:
        ConfigError: the model folder is missing, no pairs, or ``plot`` without matplotlib.
        dataset_formats.DatasetFormatError: the data cannot be read or converted.
    """
    if plot is not None:
        _require_matplotlib()
    rewards, margins = predict_rewards(
        model_dir,
        data,
        format=format,
        max_length=max_length,
        truncation=truncation,
        chat_template=chat_template,
        format_options=format_options,
        batch_size=batch_size,
    )
    report = {"model": str(model_dir), "data": str(data)}
    report.update(summarize_rewards(rewards[:, 0], rewards[:, 1], margins))
    if plot is not None:
        report["plot"] = str(plot_evaluation(rewards[:, 0], rewards[:, 1], report, plot))
    return report


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "--plot needs matplotlib, which is not installed: pip install 'reward-plugin[plot]' (or matplotlib)"
        ) from exc


def plot_evaluation(chosen: Any, rejected: Any, report: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a PNG: histogram of chosen vs rejected rewards, and accuracy by reward-gap bucket.

    Raises:
        ConfigError: matplotlib is not installed.
    """
    _require_matplotlib()
    from matplotlib.figure import Figure

    chosen, rejected = np.asarray(chosen, dtype=np.float64), np.asarray(rejected, dtype=np.float64)
    fig = Figure(figsize=(10, 4), layout="constrained")
    hist, acc = fig.subplots(1, 2)
    bins = np.histogram_bin_edges(np.concatenate([chosen, rejected]), bins=30)
    hist.hist(chosen, bins=bins, alpha=0.6, label=f"chosen (mean {chosen.mean():.3f})")
    hist.hist(rejected, bins=bins, alpha=0.6, label=f"rejected (mean {rejected.mean():.3f})")
    hist.set_xlabel("reward")
    hist.set_ylabel("responses")
    hist.set_title(f"accuracy {format_accuracy(report['accuracy'], report['num_pairs'])}")
    hist.legend()
    buckets = report["accuracy_by_reward_gap"]
    labels = [f"{b['low']:.2g}-{b['high']:.2g}\n(n={b['count']})" for b in buckets]
    acc.bar(range(len(buckets)), [b["accuracy"] for b in buckets])
    acc.set_xticks(range(len(buckets)), labels, fontsize=8)
    acc.set_ylim(0, 1)
    acc.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    acc.set_xlabel("|r_chosen - r_rejected| bucket")
    acc.set_ylabel("accuracy")
    acc.set_title("accuracy by reward gap")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def format_report(report: dict[str, Any]) -> str:
    """The human-readable text of an :func:`evaluate_model` report."""
    margin, rewards = report["margin"], report["rewards"]
    lines = [
        f"model: {report['model']}",
        f"data: {report['data']} ({report['num_pairs']} pairs)",
        f"accuracy: {format_accuracy(report['accuracy'], report['num_pairs'])} (ties: {report['ties']})",
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
                lines.append(f"  {b['low']:.4g} .. {b['high']:.4g}: {b['accuracy']:.3f} ({b['count']} pairs)")
    if "plot" in report:
        lines.append(f"plot: {report['plot']}")
    return "\n".join(lines)
