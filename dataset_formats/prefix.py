"""The shared token prefix of a pair or a group: the part a prompt-sharing causal model computes once.

One definition for the whole project (:func:`common_prefix_length`): training lays a pair out as
``[shared prefix | chosen tail | rejected tail]`` (``reward_plugin.pairs``) and ``inspect`` reports
the same prefix, so what ``inspect`` promises is what training saves; a group's prompt
(``dataset_formats.groups``), the prompt boundary of text without one (``dataset_formats.encoding``)
and the response lengths of ``reward-plugin eval`` use it too. The prefix is capped so that each side
keeps at least one token of its own: the reward is read at a side's last token, which must be in its
own tail.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa


def common_prefix_length(sequences: Sequence[Sequence[int]], *, start: int = 0, keep: int = 1) -> int:
    """Length of the longest common prefix of ``sequences``, capped so each keeps ``keep`` tokens of its own.

    The one prefix rule of the project: a pair is two sequences, a group any number of them.

    Args:
        sequences: token id lists (no padding), at least one.
        start: leading tokens taken as shared without comparing them (a chat template's fixed
            leading tokens); the result is never below it.
        keep: tokens past the prefix each sequence keeps at least (1: the reward is read at a
            sequence's last token, which must be its own; 0: no cap, the plain common prefix).

    Returns:
        The first index from ``start`` on where the sequences differ, at most
        ``min(len) - keep``, and ``start`` when that cap is below ``start``.

    Example::

        >>> common_prefix_length([[1, 2, 3], [1, 2, 4, 5], [1, 2, 3, 6]])
        2
        >>> common_prefix_length([[1, 2], [1, 2, 3]]), common_prefix_length([[1, 2], [1, 2, 3]], keep=0)
        (1, 2)
    """
    cap = min(len(s) for s in sequences) - keep
    first, others = sequences[0], sequences[1:]
    n = start
    while n < cap and all(s[n] == first[n] for s in others):
        n += 1
    return n


def shared_prefix_length(chosen: Sequence[int], rejected: Sequence[int]) -> int:
    """:func:`common_prefix_length` of a pair: each side keeps >= 1 token of its own.

    Args:
        chosen: token ids of the chosen sequence (no padding).
        rejected: token ids of the rejected sequence (no padding).

    Returns:
        The number of leading tokens the two share, at most ``min(len) - 1`` (0 for one-token sides).

    Example::

        >>> shared_prefix_length([1, 2, 3, 4], [1, 2, 5])
        2
        >>> shared_prefix_length([1, 2], [1, 2, 3])
        1
    """
    return common_prefix_length((chosen, rejected))


def shared_prefix_lengths(chosen: pa.ListArray, rejected: pa.ListArray) -> np.ndarray:
    """:func:`shared_prefix_length` of every pair of two Arrow list columns, vectorised (the same rule).

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
