"""The shared token prefix of a pair: the part a prompt-sharing causal model computes once.

One definition for the whole project: training lays a pair out as ``[shared prefix | chosen tail
| rejected tail]`` (``reward_plugin.pairs``) and ``inspect`` reports the same prefix, so what
``inspect`` promises is what training saves. The prefix is capped so that each side keeps at least
one token of its own: the reward is read at a side's last token, which must be in its own tail.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa


def shared_prefix_length(chosen: Sequence[int], rejected: Sequence[int]) -> int:
    """Length of the longest common prefix of two id lists, capped so each keeps >= 1 token of its own.

    Args:
        chosen: token ids of the chosen sequence (no padding).
        rejected: token ids of the rejected sequence (no padding).

    Returns:
        The number of leading tokens the two share, at most ``min(len) - 1``.

    Example::

        >>> shared_prefix_length([1, 2, 3, 4], [1, 2, 5])
        2
        >>> shared_prefix_length([1, 2], [1, 2, 3])
        1
    """
    cap = min(len(chosen), len(rejected)) - 1
    n = 0
    while n < cap and chosen[n] == rejected[n]:
        n += 1
    return max(n, 0)


def shared_prefix_lengths(chosen: pa.ListArray, rejected: pa.ListArray) -> np.ndarray:
    """:func:`shared_prefix_length` of every pair of two Arrow list columns, vectorised.

    Args:
        chosen: the ``input_ids_chosen`` column (a list array; slices are fine).
        rejected: the ``input_ids_rejected`` column, as long as ``chosen``.

    Returns:
        An ``int64`` array with one prefix length per pair (equal to the per-pair function).
    """
    off_c, off_r = chosen.offsets.to_numpy(), rejected.offsets.to_numpy()
    val_c, val_r = chosen.values.to_numpy(), rejected.values.to_numpy()
    cap = np.maximum(np.minimum(np.diff(off_c), np.diff(off_r)) - 1, 0).astype(np.int64)
    out = cap.copy()
    total = int(cap.sum())
    if total == 0:
        return out
    # Every compared position of every pair, flattened: pair index and position within the pair.
    pair = np.repeat(np.arange(len(cap)), cap)
    pos = np.arange(total) - np.repeat(np.cumsum(cap) - cap, cap)
    differs = val_c[off_c[:-1][pair] + pos] != val_r[off_r[:-1][pair] + pos]
    # Positions ascend within a pair, so the first hit of each pair is its first difference.
    pairs_hit, first = np.unique(pair[differs], return_index=True)
    out[pairs_hit] = pos[differs][first]
    return out
