"""Using a trained reward model: :class:`RewardScorer` (Python, TRL reward function), the ``score``
command and the reward server (``serve``).

Modules: :mod:`.export` (what training saves so that the model scores as trained anywhere),
:mod:`.encoding` (prompts + completions -> token ids, as training renders and truncates them),
:mod:`.batching` (group layout and token-budget packing), :mod:`.scorer` (the scorer),
:mod:`.score_command` (``reward-plugin score``) and :mod:`.server` (``reward-plugin serve``).
"""

from __future__ import annotations

__all__ = ["RewardScorer"]


def __getattr__(name: str):
    if name == "RewardScorer":
        from .scorer import RewardScorer

        return RewardScorer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
