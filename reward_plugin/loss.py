"""The pairwise (Bradley-Terry) reward loss, with the Llama 2 margin and optional reward centring."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DataError


def pairwise_loss(
    rewards_chosen: torch.Tensor,
    rewards_rejected: torch.Tensor,
    margin: torch.Tensor | float | None = None,
    center_rewards_coefficient: float | None = None,
) -> torch.Tensor:
    """Mean over pairs of ``-logsigmoid(r_chosen - r_rejected - margin)``.

    With ``center_rewards_coefficient`` set, ``coefficient * mean((r_chosen + r_rejected) ** 2)`` is
    added, which pulls the rewards towards zero mean (Eisenstein et al. 2023, eq. 2).

    Args:
        rewards_chosen: shape ``(n,)`` (or ``(n, 1)``), the rewards of the preferred responses.
        rewards_rejected: same shape, the rewards of the dispreferred responses.
        margin: how much better each chosen response is (Llama 2): a ``(n,)`` tensor, a float,
            or ``None`` for no margin.
        center_rewards_coefficient: weight of the centring term, or ``None`` to leave it out.

    Returns:
        A float32 scalar tensor.
    """
    if rewards_chosen.shape != rewards_rejected.shape:
        raise ValueError(
            f"rewards_chosen has shape {tuple(rewards_chosen.shape)} but rewards_rejected has shape "
            f"{tuple(rewards_rejected.shape)}; pass one reward per pair for each"
        )
    # Computed in float32 even under bf16/fp16 autocast: the loss is cheap and half-precision
    # differences of nearly equal rewards lose most of their bits.
    rewards_chosen = rewards_chosen.reshape(-1).float()
    rewards_rejected = rewards_rejected.reshape(-1).float()
    diff = rewards_chosen - rewards_rejected
    if margin is not None:
        margin = torch.as_tensor(margin, dtype=diff.dtype, device=diff.device)
        diff = diff - margin.reshape(-1) if margin.ndim else diff - margin
    loss = -F.logsigmoid(diff).mean()
    if center_rewards_coefficient is not None:
        loss = loss + center_rewards_coefficient * torch.mean((rewards_chosen + rewards_rejected) ** 2)
    return loss


#: ``RewardConfig.group_loss`` choices.
GROUP_LOSSES = ("bradley_terry", "plackett_luce", "best_vs_rest")


def _choice_terms(
    rewards: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, best_only: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per chosen response ``i``: ``log softmax`` of ``r_i`` over ``{i}`` and the responses its group
    ranks strictly below it (one Plackett-Luce choice); only responses with something below them,
    and with ``best_only`` only those with the group's top score. Returns ``(terms, their groups)``."""
    same = groups[:, None] == groups[None, :]
    below = same & (scores[None, :] < scores[:, None])
    competitors = below | torch.eye(len(rewards), dtype=torch.bool, device=rewards.device)
    logits = rewards[None, :].expand(len(rewards), -1).masked_fill(~competitors, float("-inf"))
    terms = rewards - torch.logsumexp(logits, dim=1)
    keep = below.any(dim=1)
    if best_only:
        top = torch.full_like(scores, float("-inf")).scatter_reduce(0, groups, scores, reduce="amax")
        keep &= scores == top[groups]
    return terms[keep], groups[keep]


def group_loss(
    rewards: torch.Tensor,
    better: torch.Tensor,
    worse: torch.Tensor,
    *,
    kind: str = "bradley_terry",
    margin: torch.Tensor | None = None,
    scores: torch.Tensor | None = None,
    groups: torch.Tensor | None = None,
    center_rewards_coefficient: float | None = None,
) -> torch.Tensor:
    """The loss of a batch of groups: one reward per response, pairs and rankings among them.

    - ``bradley_terry``: :func:`pairwise_loss` over the groups' pairs (``r[better] - r[worse] -
      margin``), the loss of the expanded pair table, equal to it;
    - ``plackett_luce``: minus the mean log-likelihood of each group's ranking by ``scores`` under
      the Plackett-Luce model, per choice: response ``i`` is picked from itself and every response
      scored strictly lower (tied responses do not compete), ``-log softmax(r)_i`` over that set,
      averaged over all such choices in the batch. A strict ranking of K gives K-1 choices (the full
      Plackett-Luce likelihood); K=2 is exactly Bradley-Terry. Margins are not used;
    - ``best_vs_rest``: only the first choice: each top-scored response against every lower one,
      ``-log softmax`` over that set (a listwise cross-entropy / InfoNCE).

    ``center_rewards_coefficient`` adds ``coefficient * mean((r[better] + r[worse])^2)`` over the
    pairs, as for pairs.

    Args:
        rewards: ``(m,)`` rewards of all responses of the batch.
        better, worse: ``(n,)`` indices of each pair's responses.
        kind: one of :data:`GROUP_LOSSES`.
        margin: ``(n,)`` pair margins (``bradley_terry`` only) or None.
        scores: ``(m,)`` response scores, NaN where a group has none (listwise losses).
        groups: ``(m,)`` the group of each response (listwise losses).
        center_rewards_coefficient: weight of the centring term, or None.

    Returns:
        A float32 scalar tensor.

    Raises:
        ValueError: an unknown ``kind``; DataError (a ValueError): a listwise loss over a group
            without scores.
    """
    rewards = rewards.reshape(-1).float()
    if _check_kind(kind, scores, groups):
        return pairwise_loss(rewards[better], rewards[worse], margin, center_rewards_coefficient)
    terms, _ = _choice_terms(rewards, scores.float(), groups, best_only=kind == "best_vs_rest")
    loss = -terms.mean()
    if center_rewards_coefficient is not None:
        loss = loss + center_rewards_coefficient * torch.mean((rewards[better] + rewards[worse]) ** 2)
    return loss


def _check_kind(kind: str, scores: torch.Tensor | None, groups: torch.Tensor | None) -> bool:
    """Whether ``kind`` is the pairwise loss; raises for an unknown kind or a listwise one without scores."""
    if kind not in GROUP_LOSSES:
        raise ValueError(f"`group_loss` must be one of {', '.join(GROUP_LOSSES)}, got {kind!r}")
    if kind == "bradley_terry":
        return True
    if scores is None or groups is None or torch.isnan(scores).any():
        raise DataError(
            f"group_loss={kind!r} ranks each group's responses by their `scores`, and a group in this batch "
            "has none; give every response a score (convert --groups keeps the source's scores) or use "
            "group_loss='bradley_terry'"
        )
    return False


def group_loss_sums(
    rewards: torch.Tensor,
    better: torch.Tensor,
    worse: torch.Tensor,
    *,
    kind: str = "bradley_terry",
    margin: torch.Tensor | None = None,
    scores: torch.Tensor | None = None,
    groups: torch.Tensor,
    num_groups: int,
) -> torch.Tensor:
    """Per group, the sums behind :func:`group_loss`, so that a loss over many batches can be exact.

    :func:`group_loss` is ``S / N + coefficient * C / P`` over a batch; these four sums add up over
    groups, so the loss of a whole eval set, however it is split into batches and processes, is
    ``sum(S) / sum(N) + coefficient * sum(C) / sum(P)``: the loss of the set as one batch.

    Args:
        rewards, better, worse, kind, margin, scores: as :func:`group_loss`.
        groups: ``(m,)`` the group of each response (0 .. ``num_groups - 1``).
        num_groups: the number of groups in the batch.

    Returns:
        ``(num_groups, 4)`` float32: the sum of the group's loss terms ``S`` (pairs for
        ``bradley_terry``, choices otherwise), their number ``N``, the sum over its pairs of
        ``(r[better] + r[worse])^2`` ``C``, and its number of pairs ``P``.
    """
    rewards = rewards.reshape(-1).float()
    out = torch.zeros(num_groups, 4, dtype=torch.float32, device=rewards.device)
    pair_groups = groups[better]
    if _check_kind(kind, scores, groups):
        diff = rewards[better] - rewards[worse]
        if margin is not None:
            diff = diff - margin.to(diff)
        terms, term_groups = -F.logsigmoid(diff), pair_groups
    else:
        terms, term_groups = _choice_terms(rewards, scores.float(), groups, best_only=kind == "best_vs_rest")
        terms = -terms
    out[:, 0].index_add_(0, term_groups, terms)
    out[:, 1].index_add_(0, term_groups, torch.ones_like(terms))
    out[:, 2].index_add_(0, pair_groups, (rewards[better] + rewards[worse]) ** 2)
    out[:, 3].index_add_(0, pair_groups, torch.ones_like(pair_groups, dtype=torch.float32))
    return out


def loss_from_sums(sums: Any, center_rewards_coefficient: float | None = None) -> float:
    """The :func:`group_loss` of all groups whose :func:`group_loss_sums` are the rows of ``sums``
    (a tensor or array of shape ``(g, 4)``); NaN when they hold no loss term."""
    total = np.asarray(sums, dtype=np.float64).reshape(-1, 4).sum(axis=0)
    if total[1] <= 0:
        return math.nan
    loss = float(total[0] / total[1])
    if center_rewards_coefficient is not None and total[3] > 0:
        loss += center_rewards_coefficient * float(total[2] / total[3])
    return loss
