"""Reward statistics (``reward_stats.json``) from rewards a run has already computed.

The mean and std of a trained model's rewards normalise them downstream. They come, in this
order of preference, from:

* ``evaluation``: the final evaluation of the eval set (the one a run reports anyway);
* ``training_forwards``: without an eval set, the rewards of the last
  :data:`RECENT_PAIRS` pairs the training forwards scored (no extra forward pass);
* ``pass``: a separate scoring pass over up to :data:`RECENT_PAIRS` train pairs with the final
  weights, only when ``RewardConfig.reward_stats_pass`` asks for it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..metrics import reward_metrics, reward_statistics

logger = logging.getLogger(__name__)

#: Pairs behind the statistics without an eval set: enough for a mean and std of the rewards
#: (standard error ~ std / 32), few enough that a separate pass, when asked for, stays short.
RECENT_PAIRS = 512

#: Where the rewards behind ``reward_stats.json`` came from (its ``source`` field).
SOURCES = ("evaluation", "training_forwards", "pass")


class RecentRewards:
    """The ``(chosen, rejected)`` rewards the training forwards scored: those since the last log
    (the train metrics) and those of the last ``capacity`` pairs (the statistics).

    Tensors stay where they were computed (no device sync per step; moved to the CPU once per log);
    old rows are dropped once the newer ones alone fill the capacity.
    """

    def __init__(self, capacity: int = RECENT_PAIRS):
        self.capacity = capacity
        self._chunks: list[tuple[torch.Tensor, int]] = []  # (rewards, optimizer step)
        self._rows = 0
        self._since_log: list[torch.Tensor] = []

    def log_metrics(self) -> dict[str, float]:
        """:func:`reward_metrics` of the pairs since the last call ({} when none)."""
        if not self._since_log:
            return {}
        rewards = torch.cat(self._since_log).cpu()
        self._since_log.clear()
        return reward_metrics(rewards[:, 0], rewards[:, 1])

    def add(self, pairs: torch.Tensor, step: int) -> None:
        """Record ``(n, 2)`` rewards scored while taking optimizer step ``step`` (1-based)."""
        self._since_log.append(pairs.detach())
        if pairs.shape[0] == 0:
            return
        self._chunks.append((pairs.detach(), step))
        self._rows += pairs.shape[0]
        while self._rows - self._chunks[0][0].shape[0] >= self.capacity:
            self._rows -= self._chunks.pop(0)[0].shape[0]

    @property
    def steps(self) -> list[int]:
        """``[first, last]`` optimizer step the kept rewards were scored in (empty when none)."""
        return [self._chunks[0][1], self._chunks[-1][1]] if self._chunks else []

    def __len__(self) -> int:
        return min(self._rows, self.capacity)

    def rewards(self) -> np.ndarray:
        """``(n, 2)`` float64 rewards of the last ``min(seen, capacity)`` pairs, oldest first."""
        if not self._chunks:
            return np.zeros((0, 2))
        rows = torch.cat([chunk for chunk, _ in self._chunks])[-self.capacity :]
        return rows.float().cpu().numpy().astype(np.float64)


def statistics_from(rewards: np.ndarray, *, split: str, source: str, **extra: Any) -> dict[str, Any]:
    """:func:`reward_statistics` of ``(n, 2)`` rewards, with where they came from."""
    stats = reward_statistics(rewards[:, 0], rewards[:, 1], split=split)
    stats["source"] = source
    stats.update(extra)
    return stats


@dataclass
class Evaluation:
    """The outcome of one evaluation of the trainer's own eval set, and the model state it saw."""

    metrics: dict[str, float]
    rewards: np.ndarray | None  # (pairs, 2): chosen, rejected
    model_state: tuple[int, int, int]


def model_state(trainer: Any) -> tuple[int, int, int]:
    """Changes whenever the weights may have: the step, the model object, the parameters' in-place versions.

    ``Tensor._version`` is torch's counter of in-place writes (what autograd checks saved tensors
    with); every optimizer step and every manual ``param.add_()`` bumps it.
    """
    versions = sum(p._version for p in trainer.model.parameters())
    return (trainer.state.global_step, id(trainer.model), versions)


def train_sample(dataset: Any, pairs: int, seed: int) -> Any:
    """Up to ``pairs`` train pairs drawn with ``seed`` (all of them when there are fewer)."""
    if dataset is None:
        raise DataError("no dataset to compute reward statistics on: pass `train_dataset` or `eval_dataset`")
    if hasattr(dataset, "__len__") and len(dataset) > pairs and hasattr(dataset, "shuffle"):
        dataset = dataset.shuffle(seed=seed).select(range(pairs))
    logger.info(
        "reward statistics: scoring %s train pairs in a separate pass (reward_stats_pass)",
        len(dataset) if hasattr(dataset, "__len__") else "the",
    )
    return dataset


def gather_pairs(accelerator: Any, pairs: torch.Tensor, *, uneven: bool) -> torch.Tensor:
    """``(n, 2)`` rewards of this process, gathered from every process.

    ``uneven``: processes may hold different numbers of pairs (groups), which gather cannot
    take: rows are padded with a third column (1 = real) that is 0 on padding, dropped after.
    """
    if not uneven:
        return accelerator.gather(pairs)
    pairs = torch.cat([pairs, torch.ones_like(pairs[:, :1])], dim=1)
    pairs = accelerator.gather(accelerator.pad_across_processes(pairs, dim=0))
    return pairs[pairs[:, 2] == 1, :2]


def record_training_rewards(
    trainer: Any, inputs: dict[str, Any], chosen: torch.Tensor, rejected: torch.Tensor
) -> None:
    """Keep a training batch's rewards, gathered from every process, in ``trainer``'s
    :class:`RecentRewards` (groups give each process its own number of pairs)."""
    uneven = "pair_better" in inputs and trainer.args.world_size > 1
    pairs = torch.stack([chosen.detach(), rejected.detach()], 1)
    trainer._train_rewards.add(
        gather_pairs(trainer.accelerator, pairs, uneven=uneven).float(), trainer.state.global_step + 1
    )


def own_eval_set(trainer: Any) -> tuple[str, Any]:
    """``(split name, dataset)`` the statistics and the final evaluation use: the eval set, or its
    first entry when it is a dict (``(\"eval\", None)`` without one)."""
    dataset = trainer.eval_dataset
    if isinstance(dataset, dict):
        return next(iter(dataset.items())) if dataset else ("eval", None)
    return "eval", dataset


def is_own_eval_set(trainer: Any, eval_dataset: Any) -> bool:
    """Whether ``trainer.evaluate(eval_dataset)`` scores :func:`own_eval_set` (``Trainer.evaluate``
    calls itself once per key of a dict eval set, with the key as ``eval_dataset``)."""
    if isinstance(trainer.eval_dataset, dict):
        name, dataset = own_eval_set(trainer)
        return dataset is not None and isinstance(eval_dataset, str) and eval_dataset == name
    return eval_dataset is None and trainer.eval_dataset is not None


def compute_reward_stats(trainer: Any, pairs: int) -> dict[str, Any]:
    """The statistics of :mod:`this module <reward_plugin.training.statistics>` for ``trainer``'s model.

    With an eval set: from its final evaluation (``trainer.final_evaluation()``, reused when it saw
    the current weights). Without one: from the training forwards' last ``pairs`` pairs, or, when
    ``reward_stats_pass`` asks for it (or training scored nothing), from a separate pass over up to
    ``pairs`` train pairs with the final weights.
    """
    split, dataset = own_eval_set(trainer)
    recent = trainer._train_rewards
    if dataset is not None:
        trainer.final_evaluation()
        predictions = trainer._final_eval.rewards if trainer._final_eval is not None else None
        if predictions is None:  # a custom compute_metrics/prediction_loss_only run kept no rewards
            predictions = score_quietly(trainer, dataset)
        return statistics_from(predictions, split=split, source="evaluation")
    if len(recent) and not trainer.args.reward_stats_pass:
        return statistics_from(
            recent.rewards(), split="train", source="training_forwards", steps=recent.steps
        )
    sample = train_sample(trainer.train_dataset, pairs, trainer.args.seed)
    return statistics_from(score_quietly(trainer, sample), split="train", source="pass")


def score_quietly(trainer: Any, dataset: Any) -> np.ndarray:
    """``(n, 2)`` rewards of ``dataset`` through the eval loop (gathered across processes), not logged as a run."""
    from transformers import Trainer

    compute_metrics, trainer.compute_metrics = trainer.compute_metrics, None
    try:
        return np.asarray(Trainer.predict(trainer, dataset, metric_key_prefix="reward_stats").predictions)
    finally:
        trainer.compute_metrics = compute_metrics
