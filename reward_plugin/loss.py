"""The pairwise (Bradley-Terry) reward loss, with the Llama 2 margin and optional reward centring."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
