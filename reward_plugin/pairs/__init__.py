"""Pair batching: the layouts that put a batch of preference pairs through the model.

``standard`` pads chosen and rejected as two sequences each (TRL's layout); ``prefix_shared`` runs
each pair as one block ``[shared prompt | chosen tail | rejected tail]``; ``packed`` puts a whole
batch of such blocks into padding-free rows. Modules, in data-flow order:

- :mod:`.layout`: modes, which models support the fast layouts, segment codes, block lengths;
- :mod:`.collators`: rows of tokenized pairs -> batch tensors in each layout;
- :mod:`.masks`: the dense 4D mask of a fast layout (reference, and flex/other kernels);
- :mod:`.attention`: segment attention, each block on its own without a mask;
- :mod:`.forward`: one forward over a fast-layout batch -> chosen and rejected rewards.
"""

from .collators import PrefixSharedPairCollator, RewardDataCollatorWithPadding, missing_columns_message
from .forward import packed_rewards
from .layout import (
    FAST_MODES,
    PACKED_KEYS,
    attention_cost_tokens,
    layout_lengths,
    resolve_pair_batching,
    shared_prefix_length,
    unsupported_reason,
)

__all__ = [
    "FAST_MODES",
    "PACKED_KEYS",
    "PrefixSharedPairCollator",
    "RewardDataCollatorWithPadding",
    "attention_cost_tokens",
    "layout_lengths",
    "missing_columns_message",
    "packed_rewards",
    "resolve_pair_batching",
    "shared_prefix_length",
    "unsupported_reason",
]
