"""Rewards grouped by prompt, and the accuracies defined on them: pairwise and best-of-N.

A prompt has K responses and the preference pairs among them, as the grouped table stores it:
a plain pair is K = 2 with one pair; an RM-Bench prompt has three chosen and three rejected
responses and nine pairs (every chosen above every rejected). Ties count as wrong everywhere,
as in training's accuracy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..metrics import accuracy_estimate


@dataclass
class PromptRewards:
    """The rewards of one prompt's responses (input order) and its preference pairs.

    Attributes:
        rewards: ``(K,)`` one reward per response.
        pairs: ``(P, 2)`` ``(better, worse)`` response indices, one row per preference pair.
        lengths: ``(K,)`` response lengths in tokens (without the prompt), or None.
        meta: what the data says about the prompt (``id``, ``subset``, ``domain``, ...).

    The *chosen* and *rejected* responses, in input order: when the pairs are every chosen x
    every rejected in chosen-major order (a plain pair, RM-Bench's 3 x 3, best-vs-rest; see
    :func:`cross_product_sides`) the two sides of that product, a response listed twice when the
    data has the same text twice; otherwise the responses never on the worse side of a pair and
    the rest.
    """

    rewards: np.ndarray
    pairs: np.ndarray
    lengths: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rewards = np.asarray(self.rewards, dtype=np.float64).reshape(-1)
        self.pairs = np.asarray(self.pairs, dtype=np.int64).reshape(-1, 2)
        if self.lengths is not None:
            self.lengths = np.asarray(self.lengths, dtype=np.int64).reshape(-1)
        if self.pairs.size == 0:
            raise ConfigError(f"prompt {self.meta.get('id')!r}: a group needs at least one preference pair")
        sides = cross_product_sides(self.pairs)
        if sides is None:
            worse = np.zeros(self.rewards.size, dtype=bool)
            worse[self.pairs[:, 1]] = True
            sides = np.flatnonzero(~worse), np.flatnonzero(worse)
        self.chosen_index, self.rejected_index = sides

    @classmethod
    def bipartite(
        cls,
        chosen: Any,
        rejected: Any,
        chosen_lengths: Any = None,
        rejected_lengths: Any = None,
        meta: dict[str, Any] | None = None,
    ) -> PromptRewards:
        """A prompt whose every chosen response is preferred to every rejected one."""
        chosen = np.asarray(chosen, dtype=np.float64).reshape(-1)
        rejected = np.asarray(rejected, dtype=np.float64).reshape(-1)
        pairs = [(i, chosen.size + j) for i in range(chosen.size) for j in range(rejected.size)]
        lengths = None if chosen_lengths is None else np.r_[chosen_lengths, rejected_lengths]
        return cls(np.r_[chosen, rejected], np.array(pairs), lengths, dict(meta or {}))

    @property
    def chosen(self) -> np.ndarray:
        return self.rewards[self.chosen_index]

    @property
    def rejected(self) -> np.ndarray:
        return self.rewards[self.rejected_index]

    def wins(self) -> np.ndarray:
        """``(P,)`` booleans: the better response of each pair scored strictly higher."""
        return self.rewards[self.pairs[:, 0]] > self.rewards[self.pairs[:, 1]]

    def length_differences(self) -> np.ndarray:
        """``(P,)`` ``len(better) - len(worse)`` of each pair (needs ``lengths``)."""
        return self.lengths[self.pairs[:, 0]] - self.lengths[self.pairs[:, 1]]


def cross_product_sides(pairs: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """``(a, b)`` when ``pairs`` is ``[(a[i], b[j]) for i in range(C) for j in range(R)]``, else None.

    Groups store each distinct response once, so a side that repeats a text repeats an index
    (RM-Bench has prompts whose concise and detailed answers coincide). Several shapes can then
    fit; the squarest one wins, which for RM-Bench's nine pairs is 3 x 3.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    total = len(pairs)
    shapes = sorted(
        ((c, total // c) for c in range(1, total + 1) if total % c == 0),
        key=lambda cr: (abs(cr[0] - cr[1]), cr[0]),
    )
    for c, r in shapes:
        a, b = pairs[::r, 0], pairs[:r, 1]
        if np.array_equal(pairs[:, 0], np.repeat(a, r)) and np.array_equal(pairs[:, 1], np.tile(b, c)):
            return a, b
    return None


def groups_from_pairs(
    rewards: Any, lengths: Any | None = None, metas: Sequence[dict[str, Any]] | None = None
) -> list[PromptRewards]:
    """One group per pair, for evaluating a plain pair table with the group metrics.

    Args:
        rewards: ``(n, 2)`` rewards, column 0 chosen, column 1 rejected.
        lengths: ``(n, 2)`` response lengths in tokens, or None.
        metas: one metadata dict per pair, or None.
    """
    rewards = np.asarray(rewards, dtype=np.float64).reshape(-1, 2)
    lengths = None if lengths is None else np.asarray(lengths, dtype=np.int64).reshape(-1, 2)
    return [
        PromptRewards(
            rewards[k],
            np.array([[0, 1]]),
            None if lengths is None else lengths[k],
            dict(metas[k]) if metas is not None else {},
        )
        for k in range(len(rewards))
    ]


def pair_outcomes(groups: Sequence[PromptRewards]) -> tuple[np.ndarray, np.ndarray]:
    """Every preference pair's outcome and the index of its prompt: ``(correct, prompt)``."""
    correct = [g.wins() for g in groups]
    prompt = [np.full(c.size, k) for k, c in enumerate(correct)]
    return np.concatenate(correct), np.concatenate(prompt)


def pairwise_accuracy(groups: Sequence[PromptRewards]) -> dict[str, Any]:
    """The share of all preference pairs (for RM-Bench: every chosen x every rejected) ranked right.

    Returns:
        :func:`~reward_plugin.metrics.accuracy_estimate`: ``count`` pairs, interval over prompts.
    """
    _require(groups)
    correct, _ = pair_outcomes(groups)
    return accuracy_estimate(correct.mean(), correct.size, len(groups))


def best_of_n_correct(group: PromptRewards) -> bool:
    """RewardBench 2's rule: every chosen response scores above every rejected one.

    With one chosen response this is "the chosen response is the best of the N"; with several
    (RewardBench 2's Ties subset, RM-Bench's three styles) the worst chosen must beat the best
    rejected. Ties count as wrong.
    """
    return bool(group.chosen.min() > group.rejected.max())


def best_of_n_accuracy(groups: Sequence[PromptRewards]) -> dict[str, Any]:
    """The share of prompts where :func:`best_of_n_correct` holds; ``count`` is prompts.

    Returns:
        :func:`~reward_plugin.metrics.accuracy_estimate` plus ``n`` (chosen + rejected responses per prompt: the
        number when all prompts have the same, else a list of the sizes present).
    """
    _require(groups)
    correct = np.array([best_of_n_correct(g) for g in groups])
    out = accuracy_estimate(correct.mean(), len(groups), len(groups))
    sizes = sorted({g.chosen.size + g.rejected.size for g in groups})
    out["n"] = sizes[0] if len(sizes) == 1 else sizes
    return out


def write_predictions(groups: Sequence[PromptRewards], path: str | os.PathLike) -> Path:
    """Write one JSON line per prompt: its metadata, ``chosen_rewards`` and ``rejected_rewards``
    (input order) and, when known, ``chosen_lengths`` and ``rejected_lengths``."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for g in groups:
            line = {key: _plain(value) for key, value in g.meta.items()}
            line["chosen_rewards"] = g.chosen.tolist()
            line["rejected_rewards"] = g.rejected.tolist()
            if g.lengths is not None:
                line["chosen_lengths"] = g.lengths[g.chosen_index].tolist()
                line["rejected_lengths"] = g.lengths[g.rejected_index].tolist()
            fh.write(json.dumps(line) + "\n")
    return out


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _require(groups: Sequence[PromptRewards]) -> None:
    if not groups:
        raise ConfigError("no prompts to evaluate; check the data file and --max-length")
