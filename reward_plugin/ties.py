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
``nu = 2 p / (1 - p)`` for a tie fraction ``p`` (``P(tie | d = 0) = nu / (2 + nu)``). With
``RewardConfig.learn_tie_strength`` it is learned with the model: it starts there, and after each
training batch it is the maximum-likelihood ``nu`` of the last :data:`TIE_WINDOW_PAIRS` pairs the
training forwards scored (:func:`davidson_tie_mle`; the rewards held fixed, the model's own step
taken with the ``nu`` from before the batch). The Davidson likelihood is convex in ``log nu``, so
this is coordinate ascent on the same objective the model is trained on.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from dataset_formats.schema import MARGIN_COLUMN, TIE_COLUMN

from .errors import ConfigError

#: The tie parameter used when the training data has no ties to estimate it from.
DEFAULT_TIE_STRENGTH = 1.0
#: How many of the most recent training pairs a learned ``nu`` is estimated from.
TIE_WINDOW_PAIRS = 2048
#: The range a learned ``nu`` is kept in (the likelihood's optimum lies at 0 or infinity only when the
#: window holds no ties or no untied pairs, and then ``nu`` is not re-estimated at all).
TIE_STRENGTH_BOUNDS = (1e-4, 1e4)


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
    win_diff = _less_margin(diff, tie, margin)
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


def davidson_tie_mle(win_diff: torch.Tensor, tie: torch.Tensor) -> float | None:
    """The ``nu`` that maximises the Davidson likelihood of pairs whose rewards are held fixed.

    Args:
        win_diff: ``(n,)`` reward differences ``r_chosen - r_rejected``, less the margin on untied pairs
            (what :func:`davidson_loss` calls the win difference).
        tie: ``(n,)`` booleans, true where the pair is a tie.

    Returns:
        The estimate, clamped to :data:`TIE_STRENGTH_BOUNDS`, or None when the pairs hold no tie or no
        untied pair (the likelihood then has no finite positive maximum).

    With ``t = log nu`` the negative log-likelihood is convex: its derivative is
    ``sum_untied sigmoid(t - d/2 - softplus(-d)) + sum_ties (sigmoid(t - log(2 cosh(d/2))) - 1)``,
    increasing in ``t``; its root is found by bisection in float64 (60 halvings of the bounds'
    range, well below float32's resolution).
    """
    d = win_diff.detach().reshape(-1).to("cpu", torch.float64)
    tie = tie.detach().reshape(-1).to("cpu", torch.bool)
    if d.shape != tie.shape:
        raise ValueError(f"win_diff {tuple(d.shape)} and tie {tuple(tie.shape)} must hold one value per pair")
    if not bool(tie.any()) or bool(tie.all()):
        return None
    wins, ties = d[~tie], d[tie]
    win_offset = wins / 2 + torch.nn.functional.softplus(-wins)  # the win term is log(e^A + e^(t - d/2))
    tie_offset = torch.logaddexp(ties / 2, -ties / 2)  # the tie term is log(e^B + e^t) - t

    def slope(t: float) -> float:
        return float(torch.sigmoid(t - win_offset).sum() + (torch.sigmoid(t - tie_offset) - 1).sum())

    low, high = (math.log(bound) for bound in TIE_STRENGTH_BOUNDS)
    if slope(low) >= 0:
        return TIE_STRENGTH_BOUNDS[0]
    if slope(high) <= 0:
        return TIE_STRENGTH_BOUNDS[1]
    for _ in range(60):
        middle = (low + high) / 2
        if slope(middle) < 0:
            low = middle
        else:
            high = middle
    return math.exp((low + high) / 2)


class TieStrengthEstimator:
    """A learned ``nu``: the :func:`davidson_tie_mle` of the last ``window`` pairs added, or the starting
    value until they hold both ties and untied pairs."""

    def __init__(self, tie_strength: float, window: int = TIE_WINDOW_PAIRS):
        self.tie_strength = float(tie_strength)
        self.window = window
        self._diffs = torch.empty(0, dtype=torch.float64)
        self._ties = torch.empty(0, dtype=torch.bool)

    def add(self, win_diff: torch.Tensor, tie: torch.Tensor) -> float:
        """Keep a batch's pairs (the oldest beyond the window dropped) and return the re-estimated ``nu``."""
        diffs = win_diff.detach().reshape(-1).to("cpu", torch.float64)
        ties = tie.detach().reshape(-1).to("cpu", torch.bool)
        self._diffs = torch.cat([self._diffs, diffs])[-self.window :]
        self._ties = torch.cat([self._ties, ties])[-self.window :]
        estimate = davidson_tie_mle(self._diffs, self._ties)
        if estimate is not None:
            self.tie_strength = estimate
        return self.tie_strength

    def pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(win differences, ties)`` of the pairs the estimate is taken from."""
        return self._diffs.clone(), self._ties.clone()


def win_differences(
    rewards_chosen: torch.Tensor, rewards_rejected: torch.Tensor, tie: torch.Tensor, margin: Any = None
) -> torch.Tensor:
    """``r_chosen - r_rejected``, less the margin on untied pairs: the ``d`` of :func:`davidson_loss`'s win term."""
    diff = (rewards_chosen.detach().reshape(-1) - rewards_rejected.detach().reshape(-1)).float()
    return _less_margin(diff, tie.reshape(-1).to(device=diff.device, dtype=torch.bool), margin)


def _less_margin(diff: torch.Tensor, tie: torch.Tensor, margin: Any) -> torch.Tensor:
    """``diff`` less the (per-pair or scalar) Llama 2 margin on untied pairs."""
    if margin is None:
        return diff
    margin = torch.as_tensor(margin, dtype=diff.dtype, device=diff.device)
    margin = margin.reshape(-1) if margin.ndim else margin
    return diff - torch.where(tie, torch.zeros_like(diff), margin)


def learn_tie_strength(
    trainer: Any, inputs: dict[str, Any], chosen: torch.Tensor, rejected: torch.Tensor
) -> None:
    """After a training batch: add its pairs, gathered from every process (so all agree on ``nu``), to
    the trainer's :class:`TieStrengthEstimator` and take the new ``nu`` for the next batch."""
    from .training.statistics import gather_pairs

    estimator = getattr(trainer, "_tie_estimator", None)
    if estimator is None:
        estimator = trainer._tie_estimator = TieStrengthEstimator(trainer_tie_strength(trainer))
    tie = inputs[TIE_COLUMN]
    diff = win_differences(chosen, rejected, tie, inputs.get(MARGIN_COLUMN))
    pairs = gather_pairs(trainer.accelerator, torch.stack([diff, tie.reshape(-1).to(diff)], 1), uneven=False)
    trainer._tie_strength = estimator.add(pairs[:, 0], pairs[:, 1] > 0.5)
