"""The tie-aware pairwise loss: Davidson's (1970) extension of Bradley-Terry.

With rewards ``r_a``, ``r_b`` as log-strengths (``pi = exp(r)``) and a tie parameter ``nu >= 0``::

    P(a beats b) = pi_a / (pi_a + pi_b + nu * sqrt(pi_a * pi_b))
    P(tie)       = nu * sqrt(pi_a * pi_b) / (pi_a + pi_b + nu * sqrt(pi_a * pi_b))

so with ``d = r_a - r_b``: ``-log P(a beats b) = log(1 + exp(-d) + nu * exp(-d / 2))`` and
``-log P(tie) = log(exp(d / 2) + exp(-d / 2) + nu) - log(nu)``. A tie is most likely when the two
rewards are equal, and ``nu = 0`` is Bradley-Terry again. The loss of a batch is the mean over
its pairs: the tie term for rows marked as ties (the ``tie`` column of ``convert --ties tie``),
the win term (with the Llama 2 margin subtracted from ``d``) for the others.

``nu`` is set (``RewardConfig.tie_strength``) or, by default, taken from the training data: the
``nu`` at which two equally good responses tie as often as the data's pairs do,
``nu = 2 p / (1 - p)`` for a tie fraction ``p`` (``P(tie | d = 0) = nu / (2 + nu)``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from dataset_formats.schema import TIE_COLUMN

from .errors import ConfigError

#: The tie parameter used when the training data has no ties to estimate it from.
DEFAULT_TIE_STRENGTH = 1.0


def davidson_loss(
    rewards_chosen: torch.Tensor,
    rewards_rejected: torch.Tensor,
    tie: torch.Tensor,
    *,
    tie_strength: float,
    margin: torch.Tensor | float | None = None,
    center_rewards_coefficient: float | None = None,
) -> torch.Tensor:
    """Mean Davidson negative log-likelihood of a batch of pairs, ties included.

    Args:
        rewards_chosen, rewards_rejected: ``(n,)`` rewards (a tie's two sides in the source's order).
        tie: ``(n,)`` booleans, true where the pair is a tie.
        tie_strength: Davidson's ``nu`` (> 0).
        margin: per-pair Llama 2 margins (untied pairs only) or None.
        center_rewards_coefficient: adds ``coefficient * mean((r_chosen + r_rejected)^2)`` when set.

    Returns:
        A float32 scalar tensor.
    """
    if not tie_strength > 0 or not math.isfinite(tie_strength):
        raise ConfigError(f"`tie_strength` must be a finite number > 0, got {tie_strength!r}")
    rc = rewards_chosen.reshape(-1).float()
    rr = rewards_rejected.reshape(-1).float()
    if rc.shape != rr.shape or tie.reshape(-1).shape != rc.shape:
        raise ValueError(
            f"rewards_chosen {tuple(rc.shape)}, rewards_rejected {tuple(rr.shape)} and tie "
            f"{tuple(tie.shape)} must hold one value per pair"
        )
    tie = tie.reshape(-1).to(device=rc.device, dtype=torch.bool)
    diff = rc - rr
    log_nu = math.log(tie_strength)
    if margin is not None:
        margin = torch.as_tensor(margin, dtype=diff.dtype, device=diff.device)
        margin = margin.reshape(-1) if margin.ndim else margin
        win_diff = diff - torch.where(tie, torch.zeros_like(diff), margin)
    else:
        win_diff = diff
    zeros = torch.zeros_like(diff)
    win = torch.logsumexp(torch.stack([zeros, -win_diff, log_nu - win_diff / 2]), dim=0)
    tied = torch.logsumexp(torch.stack([diff / 2, -diff / 2, zeros + log_nu]), dim=0) - log_nu
    loss = torch.where(tie, tied, win).mean()
    if center_rewards_coefficient is not None:
        loss = loss + center_rewards_coefficient * torch.mean((rc + rr) ** 2)
    return loss


def tie_fraction(dataset: Any) -> tuple[int, int] | None:
    """``(ties, pairs)`` of a dataset with a ``tie`` column, or None when it has none."""
    if dataset is None or TIE_COLUMN not in (getattr(dataset, "column_names", None) or []):
        return None
    import pyarrow.compute as pc

    column = dataset.with_format("arrow")[:][TIE_COLUMN]
    return int(pc.sum(column).as_py() or 0), len(column)


def resolve_tie_strength(setting: float | None, train_dataset: Any) -> float:
    """The ``nu`` to train with: ``setting`` when given, else the one that matches the train data's tie
    fraction (:data:`DEFAULT_TIE_STRENGTH` when it has no ties)."""
    if setting is not None:
        if not setting > 0 or not math.isfinite(setting):
            raise ConfigError(f"`tie_strength` must be a finite number > 0 or None, got {setting!r}")
        return float(setting)
    counts = tie_fraction(train_dataset)
    if counts is None or counts[0] == 0 or counts[0] == counts[1]:
        return DEFAULT_TIE_STRENGTH
    p = counts[0] / counts[1]
    return 2 * p / (1 - p)


def trainer_tie_strength(trainer: Any) -> float:
    """The ``nu`` of a trainer's run (:func:`resolve_tie_strength` of its args and train data), worked
    out once and kept on the trainer."""
    nu = getattr(trainer, "_tie_strength", None)
    if nu is None:
        nu = resolve_tie_strength(trainer.args.tie_strength, trainer.train_dataset)
        trainer._tie_strength = nu
    return nu
