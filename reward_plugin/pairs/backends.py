"""Which attention backend the prefix-shared/packed layouts run (``RewardConfig.pair_attention``).

One function, :func:`resolve_pair_attention`, turns the configured value, the model and the device
into an :class:`AttentionBackend`; the trainer, the scorers and :mod:`.forward` all ask it. The
backends give the same rewards (tested against the dense mask) and differ in cost:

- ``segments``: each pair block attends on its own (two small calls per block and layer,
  :mod:`.attention`). Cheapest on CPU, where a call costs little; on a GPU the calls per step grow
  with the pairs per batch.
- ``mask``: one dense 4D mask per row (a flex-attention ``BlockMask`` under ``flex_attention``):
  one kernel call per layer, but ``T x T`` scores per row of ``T`` tokens.

- ``varlen``: one variable-length causal kernel call per layer over all blocks of the batch
  (:mod:`.varlen`): flash-attn's varlen function for flash-attention models, PyTorch's
  ``varlen_attn`` on CUDA, the portable reference kernel elsewhere. Keys and values are gathered
  once per layer (one ``index_select`` each); the cost grows with the tokens, not the pairs.
- ``flex``: flex attention with a ``BlockMask`` over the same variable-length sequences (compiled
  on CUDA; its first batches pay the compilation).

``auto`` (the default) picks the fastest exact backend for the machine: ``varlen`` for
flash-attention models and on CUDA (with PyTorch's ``varlen_attn``; ``mask`` where torch lacks
it or the model has attention dropout), ``segments`` on CPU, where a small call costs little,
and ``mask`` for flex-attention models (their ``BlockMask``).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass

import torch
from torch import nn

from ..config import PAIR_ATTENTION_MODES
from ..errors import UnsupportedModelError
from ..scoring import unwrap_model
from .attention import BASE_IMPLEMENTATIONS, base_implementation
from .layout import FLASH_ATTENTION as FLASH_IMPLEMENTATIONS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttentionBackend:
    """A resolved backend: ``name`` segments, mask, varlen or flex; ``kernel`` the varlen kernel (:data:`.varlen.KERNELS`)."""

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
        UnsupportedModelError: a backend this model or machine cannot run (the message names what is missing).
    """
    if value not in PAIR_ATTENTION_MODES:
        raise ValueError(f"pair_attention must be one of {', '.join(PAIR_ATTENTION_MODES)}, got {value!r}")
    impl = base_implementation(model) if model is not None else "sdpa"
    kind = _device_type(device)
    backend = _resolve(value, impl, kind, _attention_dropout(model))
    key = (value, impl, kind, str(backend))
    if key not in _LOGGED:
        _LOGGED.add(key)
        logger.info("pair_attention=%r with %s attention on %s: %s", value, impl, kind, backend)
    return backend


def _attention_dropout(model: nn.Module | None) -> float:
    """The model's attention dropout probability (0 when it has none or is in eval mode)."""
    if model is None or not model.training:
        return 0.0
    config = unwrap_model(model).config
    return float(getattr(config, "attention_dropout", 0.0) or getattr(config, "attn_pdrop", 0.0) or 0.0)


def torch_varlen_available() -> bool:
    """Whether this torch has ``torch.nn.attention.varlen.varlen_attn`` (torch 2.10+, a CUDA kernel)."""
    return importlib.util.find_spec("torch.nn.attention.varlen") is not None


def flex_available() -> bool:
    """Whether this torch has flex attention."""
    return importlib.util.find_spec("torch.nn.attention.flex_attention") is not None


def _flash_kernel(impl: str) -> str:
    module, kernel = (
        ("flash_attn_interface", "flash_attn_3")
        if impl == "flash_attention_3"
        else ("flash_attn", "flash_attn_2")
    )
    if importlib.util.find_spec(module) is None:
        raise UnsupportedModelError(
            f"the model runs attn_implementation={impl!r} but the {module} package is not installed"
        )
    return kernel


def _varlen_kernel(impl: str, kind: str) -> str:
    if impl in FLASH_IMPLEMENTATIONS:
        return _flash_kernel(impl)
    if kind == "cuda" and torch_varlen_available():
        return "torch"
    return "reference"


def _resolve(value: str, impl: str, kind: str, dropout: float) -> AttentionBackend:
    flash = impl in FLASH_IMPLEMENTATIONS
    if value == "auto":
        if flash:
            return AttentionBackend("varlen", _flash_kernel(impl))
        if impl not in BASE_IMPLEMENTATIONS:  # flex_attention: its own BlockMask
            return AttentionBackend("mask")
        if kind == "cuda":
            # The per-pair loop launches kernels per pair and layer: never the GPU default.
            if torch_varlen_available() and not dropout:
                return AttentionBackend("varlen", "torch")
            return AttentionBackend("mask")
        return AttentionBackend("segments")
    if value == "varlen":
        return AttentionBackend("varlen", _varlen_kernel(impl, kind))
    if value == "flex":
        if not flex_available():
            raise UnsupportedModelError(
                f"pair_attention='flex' needs torch.nn.attention.flex_attention, which torch {torch.__version__} lacks"
            )
        return AttentionBackend("flex", "flex")
    if flash:
        raise UnsupportedModelError(
            f"pair_attention={value!r} cannot run a model loaded with attn_implementation={impl!r} (it ignores "
            "custom masks); use pair_attention='auto' or 'varlen', or load the model with 'sdpa'"
        )
    if value == "segments" and impl not in BASE_IMPLEMENTATIONS:
        return AttentionBackend("mask")  # flex_attention models: the BlockMask path
    return AttentionBackend(value)
