"""Which attention backend the prefix-shared/packed layouts run (``RewardConfig.pair_attention``).

One function, :func:`resolve_pair_attention`, turns the configured value, the model and the device
into an :class:`AttentionBackend`; the trainer, the scorers and :mod:`.forward` all ask it. The
backends give the same rewards (tested against the dense mask) and differ in cost:

- ``segments``: each pair block attends on its own (two small calls per block and layer,
  :mod:`.attention`). Cheapest on CPU, where a call costs little; on a GPU the calls per step grow
  with the pairs per batch.
- ``mask``: one dense 4D mask per row (a flex-attention ``BlockMask`` under ``flex_attention``):
  one kernel call per layer, but ``T x T`` scores per row of ``T`` tokens.

``auto`` (the default) picks the fastest exact backend for the machine: ``segments`` on CPU,
``mask`` on CUDA (the per-pair calls of ``segments`` cost a kernel launch each there) and for
flex-attention models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from ..config import PAIR_ATTENTION_MODES
from .attention import BASE_IMPLEMENTATIONS, base_implementation

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttentionBackend:
    """A resolved backend: ``name`` segments or mask."""

    name: str
    kernel: str | None = None

    def __str__(self) -> str:
        return self.name if self.kernel is None else f"{self.name} ({self.kernel})"


def _device_type(device: torch.device | str | None) -> str:
    if device is None:
        return "cpu"
    return torch.device(device).type


_LOGGED: set[tuple[str, str, str, str]] = set()


def resolve_pair_attention(
    value: str, model: nn.Module | None, device: torch.device | str | None
) -> AttentionBackend:
    """The attention backend of the fast layouts for ``pair_attention=value``, ``model`` and ``device``.

    Args:
        value: one of :data:`PAIR_ATTENTION_MODES`.
        model: the reward model (wrappers included), or None (not built yet: sdpa is assumed).
        device: where the forward runs (``cuda``, ``cpu``, ...).

    Returns:
        The backend; the choice is logged once per value, implementation and device type.

    Raises:
        ValueError: an unknown value.
    """
    if value not in PAIR_ATTENTION_MODES:
        raise ValueError(f"pair_attention must be one of {', '.join(PAIR_ATTENTION_MODES)}, got {value!r}")
    impl = base_implementation(model) if model is not None else "sdpa"
    kind = _device_type(device)
    backend = _resolve(value, impl, kind)
    key = (value, impl, kind, str(backend))
    if key not in _LOGGED:
        _LOGGED.add(key)
        logger.info("pair_attention=%r with %s attention on %s: %s", value, impl, kind, backend)
    return backend


def _resolve(value: str, impl: str, kind: str) -> AttentionBackend:
    if value == "auto":
        if impl not in BASE_IMPLEMENTATIONS:  # flex_attention: its own BlockMask
            return AttentionBackend("mask")
        if kind == "cuda":
            # The per-pair loop launches kernels per pair and layer: never the GPU default.
            return AttentionBackend("mask")
        return AttentionBackend("segments")
    if value == "segments" and impl not in BASE_IMPLEMENTATIONS:
        return AttentionBackend("mask")  # flex_attention models: the BlockMask path
    return AttentionBackend(value)
