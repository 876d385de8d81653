"""A seeded sampler that batches preference pairs of similar length together."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler


class LengthGroupedPairSampler(Sampler[int]):
    """Yields dataset indices so that consecutive ``batch_size`` chunks hold pairs of similar length.

    Each epoch: shuffle all indices, cut them into mega-batches of ``mega_batch_mult`` batches, sort
    each mega-batch by length (a pair's length is the longer of its chosen and rejected sequences),
    cut it into batches, shuffle the full batches, and put the batch holding the longest pair first
    (so an out-of-memory error shows at the first step, not hours in). A short last batch stays last,
    so the data loader's own chunking lines up with these batches.

    The order depends only on ``seed`` and the epoch (``set_epoch``), not on the global RNG, so a
    resumed run sees the same batches.

    Args:
        lengths: length of every pair, by dataset index.
        batch_size: per-device batch size the data loader will cut the index stream into.
        seed: base seed of the shuffles.
        mega_batch_mult: batches per mega-batch; default ``min(50, max(1, n // (4 * batch_size)))``.
    """

    def __init__(
        self, lengths: Sequence[int], batch_size: int, seed: int = 0, mega_batch_mult: int | None = None
    ):
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size!r}")
        self.lengths = [int(n) for n in lengths]
        self.batch_size = batch_size
        self.seed = seed
        if mega_batch_mult is None:
            mega_batch_mult = min(50, max(1, len(self.lengths) // (4 * batch_size)))
        self.mega_batch_mult = mega_batch_mult
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle of ``epoch`` (called by the data loader each epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order())

    def batches(self) -> list[list[int]]:
        """This epoch's batches of indices, in order."""
        n = len(self.lengths)
        if n == 0:
            return []
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        permutation = torch.randperm(n, generator=generator).tolist()
        mega = self.batch_size * self.mega_batch_mult
        batches: list[list[int]] = []
        for start in range(0, n, mega):
            group = sorted(permutation[start : start + mega], key=lambda i: -self.lengths[i])
            batches.extend(group[i : i + self.batch_size] for i in range(0, len(group), self.batch_size))
        # Mega-batches are whole multiples of batch_size, so only the last one can leave a short batch.
        full = [b for b in batches if len(b) == self.batch_size]
        short = [b for b in batches if len(b) < self.batch_size]
        order = torch.randperm(len(full), generator=generator).tolist()
        full = [full[i] for i in order]
        if full:
            longest = max(range(len(full)), key=lambda i: max(self.lengths[j] for j in full[i]))
            full[0], full[longest] = full[longest], full[0]
        return full + short

    def order(self) -> list[int]:
        """This epoch's index order (the batches, concatenated)."""
        return [i for batch in self.batches() for i in batch]


def pair_sampler(args: Any, dataset: Any) -> LengthGroupedPairSampler | None:
    """The trainer's length-grouped sampler when ``args`` asks for one (None: Trainer's own).

    Sizes are the longer side of each pair capped at ``max_length``: the same in every layout, so
    a layout changes the speed, never the batches. Grouped by the batch of one optimizer step
    across all processes (the loader hands each process its chunk of it), so N processes see the
    same global batches as one process with N times the per-device batch.
    """
    from transformers.trainer_utils import has_length

    from .data import pair_lengths

    grouped = args.group_by_length or args.train_sampling_strategy == "group_by_length"
    if not (grouped and dataset is not None and has_length(dataset) and hasattr(dataset, "with_format")):
        return None
    cap = args.max_length or 2**62
    lengths = [min(n, cap) for n in pair_lengths(dataset)]
    seed = args.data_seed if args.data_seed is not None else args.seed
    return LengthGroupedPairSampler(
        lengths, batch_size=args.train_batch_size * max(1, args.world_size), seed=seed
    )


def pair_eval_sampler(args: Any, dataset: Any, default: Callable[[], Any]) -> Any:
    """The eval sampler: with ``train_sampling_strategy="group_by_length"``, the pairs in order (None
    across processes: the loader's own), since transformers' length grouping looks for an
    ``input_ids`` column that pairs do not have; otherwise ``default()`` (Trainer's own)."""
    from transformers.trainer_utils import has_length

    if args.train_sampling_strategy == "group_by_length" and has_length(dataset):
        return torch.utils.data.SequentialSampler(dataset) if args.world_size <= 1 else None
    return default()
