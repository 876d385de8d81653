"""pairwise_loss against an independent float64 computation, value and gradient."""

from __future__ import annotations

import math
import random

import pytest
import torch

from reward_plugin import pairwise_loss


def reference(chosen, rejected, margin=None, coef=None):
    """The loss and its gradients, written out with the math module in float64."""
    n = len(chosen)
    margin = [0.0] * n if margin is None else margin
    loss, grad_c, grad_r = 0.0, [], []
    for c, r, m in zip(chosen, rejected, margin):
        z = c - r - m
        loss += math.log1p(math.exp(-z)) / n  # -log(sigmoid(z))
        g = -1.0 / (1.0 + math.exp(z)) / n  # d/dz of -log(sigmoid(z)), over the mean
        grad_c.append(g)
        grad_r.append(-g)
    if coef is not None:
        loss += coef * sum((c + r) ** 2 for c, r in zip(chosen, rejected)) / n
        for i, (c, r) in enumerate(zip(chosen, rejected)):
            grad_c[i] += coef * 2 * (c + r) / n
            grad_r[i] += coef * 2 * (c + r) / n
    return loss, grad_c, grad_r


def sample(n, seed):
    rng = random.Random(seed)
    return (
        [rng.uniform(-3, 3) for _ in range(n)],
        [rng.uniform(-3, 3) for _ in range(n)],
        [rng.uniform(0, 2) for _ in range(n)],
    )


@pytest.mark.parametrize("use_margin", [False, True])
@pytest.mark.parametrize("coef", [None, 0.01, 0.5])
def test_matches_independent_computation(use_margin, coef):
    chosen, rejected, margin = sample(9, seed=7)
    margin = margin if use_margin else None
    rc = torch.tensor(chosen, dtype=torch.float32, requires_grad=True)
    rr = torch.tensor(rejected, dtype=torch.float32, requires_grad=True)
    loss = pairwise_loss(rc, rr, None if margin is None else torch.tensor(margin), coef)
    loss.backward()
    want, want_gc, want_gr = reference(chosen, rejected, margin, coef)
    assert loss.dtype == torch.float32 and loss.ndim == 0
    assert loss.item() == pytest.approx(want, rel=1e-6, abs=1e-6)
    assert rc.grad.tolist() == pytest.approx(want_gc, rel=1e-5, abs=1e-7)
    assert rr.grad.tolist() == pytest.approx(want_gr, rel=1e-5, abs=1e-7)


def test_known_values():
    # Equal rewards: -log(1/2); a margin of 1 on a reward gap of 1 gives the same.
    assert pairwise_loss(torch.zeros(3), torch.zeros(3)).item() == pytest.approx(math.log(2))
    assert pairwise_loss(torch.ones(2), torch.zeros(2), margin=torch.ones(2)).item() == pytest.approx(
        math.log(2)
    )
    # Centring adds coef * mean((1 + 0)^2) = coef.
    assert pairwise_loss(
        torch.ones(2), torch.zeros(2), center_rewards_coefficient=0.25
    ).item() == pytest.approx(math.log1p(math.exp(-1)) + 0.25)


def test_scalar_margin_and_column_shaped_rewards():
    chosen, rejected, _ = sample(5, seed=3)
    rc, rr = torch.tensor(chosen).unsqueeze(1), torch.tensor(rejected).unsqueeze(1)
    got = pairwise_loss(rc, rr, margin=0.75).item()
    assert got == pytest.approx(reference(chosen, rejected, [0.75] * 5)[0], rel=1e-6)


def test_large_gaps_stay_finite():
    loss = pairwise_loss(torch.tensor([100.0, -100.0]), torch.tensor([-100.0, 100.0]))
    assert loss.item() == pytest.approx(100.0, rel=1e-6)  # (0 + 200) / 2


def test_half_precision_rewards_are_computed_in_float32():
    rc = torch.tensor([0.5, 1.25], dtype=torch.bfloat16)
    rr = torch.tensor([0.25, 1.0], dtype=torch.bfloat16)
    loss = pairwise_loss(rc, rr, margin=torch.tensor([0.1, 0.2]))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference([0.5, 1.25], [0.25, 1.0], [0.1, 0.2])[0], rel=1e-6)


def test_shape_mismatch():
    with pytest.raises(
        ValueError, match=r"rewards_chosen has shape \(3,\) but rewards_rejected has shape \(2,\)"
    ):
        pairwise_loss(torch.zeros(3), torch.zeros(2))
