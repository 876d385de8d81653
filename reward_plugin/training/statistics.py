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

from typing import Any

import numpy as np
import torch

from ..metrics import reward_statistics

#: Pairs behind the statistics without an eval set: enough for a mean and std of the rewards
#: (standard error ~ std / 32), few enough that a separate pass, when asked for, stays short.
RECENT_PAIRS = 512

#: Where the rewards behind ``reward_stats.json`` came from (its ``source`` field).
SOURCES = ("evaluation", "training_forwards", "pass")


class RecentRewards:
    """The ``(chosen, rejected)`` rewards of the last ``capacity`` pairs the training forwards scored.

    Tensors stay where they were computed (no device sync per step); old rows are dropped once
    the newer ones alone fill the capacity.
    """

    def __init__(self, capacity: int = RECENT_PAIRS):
        self.capacity = capacity
        self._chunks: list[tuple[torch.Tensor, int]] = []  # (rewards, optimizer step)
        self._rows = 0

    def add(self, pairs: torch.Tensor, step: int) -> None:
        """Record ``(n, 2)`` rewards scored while taking optimizer step ``step`` (1-based)."""
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
