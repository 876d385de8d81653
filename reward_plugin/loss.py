"""The pairwise (Bradley-Terry) reward loss, with the Llama 2 margin and optional reward centring."""

from __future__ import annotations

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
) -> torch.Tensor:
    """Per chosen response ``i``: ``log softmax`` of ``r_i`` over ``{i}`` and the responses its group
    ranks strictly below it (one Plackett-Luce choice); only responses with something below them,
    and with ``best_only`` only those with the group's top score."""
    same = groups[:, None] == groups[None, :]
    below = same & (scores[None, :] < scores[:, None])
    competitors = below | torch.eye(len(rewards), dtype=torch.bool, device=rewards.device)
    logits = rewards[None, :].expand(len(rewards), -1).masked_fill(~competitors, float("-inf"))
    terms = rewards - torch.logsumexp(logits, dim=1)
    keep = below.any(dim=1)
    if best_only:
        top = torch.full_like(scores, float("-inf")).scatter_reduce(0, groups, scores, reduce="amax")
        keep &= scores == top[groups]
    return terms[keep]


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
    if kind not in GROUP_LOSSES:
        raise ValueError(f"`group_loss` must be one of {', '.join(GROUP_LOSSES)}, got {kind!r}")
    rewards = rewards.reshape(-1).float()
    if kind == "bradley_terry":
        return pairwise_loss(rewards[better], rewards[worse], margin, center_rewards_coefficient)
    if scores is None or groups is None or torch.isnan(scores).any():
        raise DataError(
            f"group_loss={kind!r} ranks each group's responses by their `scores`, and a group in this batch "
            "has none; give every response a score (convert --groups keeps the source's scores) or use "
            "group_loss='bradley_terry'"
        )
    terms = _choice_terms(rewards, scores.float(), groups, best_only=kind == "best_vs_rest")
    loss = -terms.mean()
    if center_rewards_coefficient is not None:
        loss = loss + center_rewards_coefficient * torch.mean((rewards[better] + rewards[worse]) ** 2)
    return loss
