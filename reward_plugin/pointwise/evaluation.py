"""Evaluating a pointwise / multi-attribute model: per-attribute error and the combined reward's
pairwise accuracy (``reward-plugin eval --format pointwise``)."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import torch

from ..errors import DataError


def predict_outputs(model: Any, dataset: Any, pad_token_id: int, batch_size: int = 16) -> np.ndarray:
    """``(n, K)`` raw model outputs (standard units when trained with ``standardize``)."""
    from .training import PointwiseCollator

    collate = PointwiseCollator(pad_token_id)
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            out.append(logits.float().reshape(len(batch["input_ids"]), -1).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def pointwise_report(
    outputs: np.ndarray,
    labels: np.ndarray,
    prompt_ids: list[int],
    attributes: list[str],
    weights: list[float],
    means: list[float],
    stds: list[float],
) -> dict[str, Any]:
    """The report of predictions against the true scores.

    Args:
        outputs: ``(n, K)`` model outputs in standard units.
        labels: ``(n, K)`` true scores in the data's units, NaN where missing.
        prompt_ids: rows with the same prompt id are compared pairwise.
        attributes, weights, means, stds: from the model config.

    Returns:
        ``attributes``: per attribute ``count`` (rows rated on it), ``mae`` and ``rmse`` in the
        data's units; ``pairwise``: over every two responses to one prompt whose true combined
        scores differ (rows rated on every weighted attribute), ``pairs``, ``correct``,
        ``accuracy`` and its Wilson 95% interval ``ci_low``/``ci_high``; ``ties_in_truth``: the pairs
        left out because their true combined scores are equal.
    """
    from ..metrics import wilson_interval

    mean, std = np.asarray(means), np.asarray(stds)
    predicted = outputs * std + mean
    per_attribute = {}
    for k, name in enumerate(attributes):
        present = ~np.isnan(labels[:, k])
        err = predicted[present, k] - labels[present, k]
        per_attribute[name] = {
            "count": int(present.sum()),
            "mae": float(np.mean(np.abs(err))) if present.any() else math.nan,
            "rmse": float(np.sqrt(np.mean(err**2))) if present.any() else math.nan,
        }
    w = np.asarray(weights)
    used = w != 0
    true_std = (labels - mean) / std
    complete = ~np.isnan(true_std[:, used]).any(axis=1)
    true_combined = np.where(complete, np.nan_to_num(true_std[:, used]) @ w[used], np.nan)
    predicted_combined = outputs @ w
    groups: dict[int, list[int]] = defaultdict(list)
    for i, pid in enumerate(prompt_ids):
        if complete[i]:
            groups[pid].append(i)
    correct = total = tied = 0
    for members in groups.values():
        for a_pos, a in enumerate(members):
            for b in members[a_pos + 1 :]:
                if true_combined[a] == true_combined[b]:
                    tied += 1
                    continue
                better, worse = (a, b) if true_combined[a] > true_combined[b] else (b, a)
                total += 1
                correct += int(predicted_combined[better] > predicted_combined[worse])
    low, high = wilson_interval(correct / total if total else 0.0, total)
    return {
        "rows": len(labels),
        "attributes": per_attribute,
        "weights": dict(zip(attributes, map(float, weights))),
        "pairwise": {
            "pairs": total,
            "correct": correct,
            "accuracy": correct / total if total else math.nan,
            "ci_low": low,
            "ci_high": high,
        },
        "ties_in_truth": tied,
    }


def evaluate_pointwise(
    model_dir: str,
    data: Any,
    *,
    tokenizer: Any = None,
    max_length: int | None = None,
    truncation: str = "left",
    chat_template: str | None = None,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Load a saved pointwise model and report on rows in its attributes' layout (:mod:`.data`)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ..modeling import ensure_pad_token
    from .rows import encode_responses, read_responses

    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    cfg = model.config
    attributes = getattr(cfg, "reward_attributes", None)
    if not attributes:
        raise DataError(
            f"{model_dir}: the model config names no `reward_attributes`; `--format pointwise` evaluates models "
            "trained by the pointwise stage"
        )
    tok = AutoTokenizer.from_pretrained(tokenizer or model_dir)
    pad = ensure_pad_token(model, tok)
    rows = read_responses(data, attributes)
    dataset = encode_responses(
        rows, tok, max_length=max_length, truncation=truncation, chat_template=chat_template
    )
    outputs = predict_outputs(model, dataset, pad, batch_size)
    report = pointwise_report(
        outputs,
        np.asarray(dataset["labels"], dtype=np.float64),
        dataset["prompt_id"],
        list(attributes),
        list(cfg.reward_attribute_weights),
        list(cfg.reward_attribute_mean),
        list(cfg.reward_attribute_std),
    )
    report["model"], report["data"] = str(model_dir), str(data)
    return report


def format_pointwise_report(report: dict[str, Any]) -> str:
    """The report as a few lines of text."""
    lines = [f"{report['rows']} responses; per attribute (data units):"]
    width = max(len(a) for a in report["attributes"])
    for name, m in report["attributes"].items():
        lines.append(f"  {name:<{width}}  MAE {m['mae']:.4f}  RMSE {m['rmse']:.4f}  ({m['count']} rated)")
    p = report["pairwise"]
    weights = ", ".join(f"{k} {v:g}" for k, v in report["weights"].items())
    if p["pairs"]:
        lines.append(
            f"combined reward ({weights}): pairwise accuracy {p['accuracy']:.4f} (95% CI {p['ci_low']:.4f}-"
            f"{p['ci_high']:.4f}, {p['pairs']} pairs of responses to one prompt; {report['ties_in_truth']} tied "
            "pairs left out)"
        )
    else:
        lines.append(
            f"combined reward ({weights}): no pairs (no prompt has two responses with different scores)"
        )
    return "\n".join(lines)
