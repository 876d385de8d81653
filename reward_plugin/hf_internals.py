"""Everything reward-plugin borrows from transformers beyond its documented API, in one place.

Checked against transformers 5.16 (the version CI installs) and the minimum in ``pyproject.toml``.
A transformers upgrade that moves one of these touches this module only.

- Attention registries: ``ALL_ATTENTION_FUNCTIONS`` (``transformers.modeling_utils``) and
  ``ALL_MASK_ATTENTION_FUNCTIONS`` (``transformers.masking_utils``) take custom attention
  implementations by name; segment attention registers one per base implementation.
- ``eager_attention_forward``: the module-level eager attention function every decoder modeling
  file defines (there is no registry entry for ``eager``).
- ``config._attn_implementation``: read to learn which implementation a model runs (there is no
  public getter); it is set through the public ``PreTrainedModel.set_attn_implementation``.
- ``Trainer`` hooks overridden by :class:`reward_plugin.RewardTrainer`:
  ``_set_signature_columns_if_needed``, ``_get_train_sampler``, ``_get_eval_sampler``, ``_save``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from torch import nn


def attn_implementation(config) -> str | None:
    """The attention implementation a model config runs (``sdpa``, ``eager``, a registered name, ...)."""
    return getattr(config, "_attn_implementation", None)


def set_attn_implementation(model: nn.Module, name: str) -> None:
    """Switch ``model`` (a ``PreTrainedModel``) to the attention implementation ``name``."""
    if attn_implementation(model.config) == name:
        return
    setter = getattr(model, "set_attn_implementation", None)
    if setter is not None:
        setter(name)
    else:  # pragma: no cover - transformers without the public setter
        model.config._attn_implementation = name


def register_attention(name: str, function: Callable, mask_like: str) -> None:
    """Register ``function`` as attention implementation ``name``, building masks as ``mask_like`` does."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    ALL_ATTENTION_FUNCTIONS.register(name, function)
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, ALL_MASK_ATTENTION_FUNCTIONS[mask_like])


def attention_function(base: str, module: nn.Module) -> Callable:
    """The attention function of implementation ``base`` for ``module`` (eager: its modeling file's own)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if base != "eager":
        return ALL_ATTENTION_FUNCTIONS[base]
    eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if eager is None:  # pragma: no cover - every supported decoder defines one
        raise RuntimeError(f"{type(module).__name__} has no eager_attention_forward to fall back to")
    return eager
