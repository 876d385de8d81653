"""Evaluating grouped sets: one prediction row per group, so that sharding and gathering stay exact.

``transformers``' evaluation loop counts *samples*, and a sample of a grouped table is a group:
the distributed sampler gives every process the same number of groups (padding the last round
with groups from the start of the set), ``gather_for_metrics`` gathers one row per group and cuts
the padding off by counting groups. Per-pair outputs break all three: processes hold different
numbers of pairs (the gather needs equal shapes) and the cut counts groups, not pairs. So a
group batch predicts one row per group, its pairs padded to a common width, and
:func:`finish_group_output` unpacks the gathered rows into the ``(n_pairs, 2)`` rewards in table
order once the loop is done. Every pair of the set then counts once: the pairwise accuracy is the
mean over all pairs, whatever the split into batches and processes, and the eval loss is the
loss of the whole set as one batch (:func:`~reward_plugin.loss.group_loss_sums`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from transformers.trainer_utils import EvalLoopOutput, EvalPrediction, denumpify_detensorize

from .errors import ConfigError
from .loss import group_loss_sums, loss_from_sums

#: Columns of a group's pair slots: the better and worse rewards, 1.0 for a real pair, its margin.
SLOT_COLUMNS = ("better", "worse", "real", "margin")


def group_rows(
    inputs: dict[str, torch.Tensor], rewards: torch.Tensor, kind: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The prediction rows of a group batch: ``(g, P, 4)`` pair slots and ``(g, 4)`` loss sums.

    Args:
        inputs: a :class:`~reward_plugin.pairs.groups.GroupCollator` batch.
        rewards: ``(m,)`` the reward of each response (:func:`~reward_plugin.pairs.groups.group_rewards`).
        kind: ``RewardConfig.group_loss``.

    Returns:
        ``(slots, sums)``: ``slots[k, j]`` is pair ``j`` of group ``k`` as :data:`SLOT_COLUMNS`
        (zeros past the group's pairs, ``P`` the most pairs of a group in the batch); ``sums`` the
        group's :func:`~reward_plugin.loss.group_loss_sums`.
    """
    better, worse, owner = inputs["pair_better"], inputs["pair_worse"], inputs["response_group"]
    groups = int(owner.max()) + 1
    rewards = rewards.reshape(-1).float()
    sums = group_loss_sums(
        rewards,
        better,
        worse,
        kind=kind,
        margin=inputs["pair_margin"],
        scores=inputs["response_scores"],
        groups=owner,
        num_groups=groups,
    )
    pair_group = owner[better]  # non-decreasing: the collator lists the pairs group by group
    counts = torch.bincount(pair_group, minlength=groups)
    slot = torch.arange(len(better), device=better.device) - (torch.cumsum(counts, 0) - counts)[pair_group]
    slots = torch.zeros(groups, int(counts.max()), 4, dtype=torch.float32, device=rewards.device)
    values = [
        rewards[better],
        rewards[worse],
        torch.ones_like(rewards[better]),
        inputs["pair_margin"].float(),
    ]
    slots[pair_group, slot] = torch.stack(values, dim=1)
    return slots, sums


def group_prediction_step(
    trainer: Any, model: Any, inputs: dict[str, torch.Tensor]
) -> tuple[None, Any, None]:
    """``prediction_step`` of a group batch: one prediction row per group (:func:`group_rows`), unpacked
    into pairs after the loop (:func:`grouped_evaluation`); no loss, no labels."""
    with torch.no_grad(), trainer.compute_loss_context_manager():
        rewards = trainer.plan.response_rewards(trainer._score_reader, model, inputs)
    return None, group_rows(inputs, rewards, trainer.args.group_loss), None


def _unpack(predictions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(rewards (n, 2), margins (n,), loss sums (g, 4))`` of gathered group rows; None for pair outputs."""
    parts = predictions if isinstance(predictions, list) else [predictions]  # eval_do_concat_batches=False
    if not parts or not all(isinstance(p, tuple) and len(p) == 2 for p in parts):
        return None
    pairs, sums = [], []
    for slots, group_sums in parts:
        slots = np.asarray(slots, dtype=np.float64)
        pairs.append(slots[slots[..., 2] == 1.0])  # padding (ours 0, transformers' -100) is never 1
        sums.append(np.asarray(group_sums, dtype=np.float64).reshape(-1, 4))
    pairs_all = np.concatenate(pairs) if pairs else np.zeros((0, 4))
    return pairs_all[:, :2], pairs_all[:, 3], np.concatenate(sums)


def finish_group_output(
    output: EvalLoopOutput,
    compute_metrics: Callable[..., dict[str, float]] | None,
    *,
    prefix: str,
    center_rewards_coefficient: float | None,
    prediction_loss_only: bool,
) -> EvalLoopOutput:
    """The evaluation loop's output with group rows unpacked into pairs, and its metrics.

    Args:
        output: what ``Trainer.evaluation_loop`` returned with ``compute_metrics`` switched off.
        compute_metrics: the trainer's ``compute_metrics``, applied to the ``(n, 2)`` rewards and
            the margins (``label_ids``) as for pairs.
        prefix: the metric key prefix (``eval``, ``test``, ...).
        center_rewards_coefficient: as in the loss.
        prediction_loss_only: keep only the loss (no predictions, no metrics).

    Returns:
        An ``EvalLoopOutput`` whose ``predictions`` are ``(n_pairs, 2)`` (better, worse) and
        ``label_ids`` the pair margins (0.0 where none), in table order.
    """
    unpacked = _unpack(output.predictions)
    metrics = dict(output.metrics or {})
    predictions, labels = output.predictions, output.label_ids
    if unpacked is not None:
        predictions, labels, sums = unpacked
        metrics[f"{prefix}_loss"] = loss_from_sums(sums, center_rewards_coefficient)
    if prediction_loss_only:
        predictions = labels = None
    elif compute_metrics is not None and predictions is not None and labels is not None:
        computed = denumpify_detensorize(
            compute_metrics(EvalPrediction(predictions=predictions, label_ids=labels))
        )
        metrics.update({k if k.startswith(f"{prefix}_") else f"{prefix}_{k}": v for k, v in computed.items()})
    return EvalLoopOutput(
        predictions=predictions, label_ids=labels, metrics=metrics, num_samples=output.num_samples
    )


def grouped_evaluation(
    trainer: Any, loop: Callable[[], EvalLoopOutput], prefix: str, prediction_loss_only: bool | None
) -> EvalLoopOutput:
    """Run ``Trainer.evaluation_loop`` (``loop``) on group batches and unpack its output into pairs.

    The trainer's ``compute_metrics`` is switched off during the loop (it would see group rows)
    and applied by :func:`finish_group_output` to the pairs.

    Raises:
        ConfigError: ``batch_eval_metrics`` is on (per-batch metrics would be per-batch means).
    """
    if trainer.args.batch_eval_metrics:
        raise ConfigError(
            "batch_eval_metrics is not supported with a grouped table (its metrics are taken over all pairs "
            "once the groups are gathered); set batch_eval_metrics=False"
        )
    compute, trainer.compute_metrics = trainer.compute_metrics, None
    try:
        output = loop()
    finally:
        trainer.compute_metrics = compute
    return finish_group_output(
        output,
        compute,
        prefix=prefix,
        center_rewards_coefficient=trainer.args.center_rewards_coefficient,
        prediction_loss_only=trainer.args.prediction_loss_only
        if prediction_loss_only is None
        else prediction_loss_only,
    )
