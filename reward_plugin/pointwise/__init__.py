"""Pointwise and multi-attribute reward models: a score (or K attribute scores) per response.

Rows hold one response each, HelpSteer2-style (``prompt``, ``response``, one column per
attribute, e.g. ``helpfulness``, ``correctness``, ``coherence``, ``complexity``, ``verbosity``).
The model gets one output per attribute (``num_labels = K``), trained with a masked mean squared
error on standardised targets (missing attributes are left out of the loss). The saved model's
config names each output (``id2label``, ``reward_attributes``), the targets' mean and std, and the
weights that combine the outputs into one reward (``reward_attribute_weights``).

* :mod:`.data`: reading and tokenizing rows.
* :mod:`.training`: :class:`PointwiseConfig`, :class:`PointwiseTrainer`, the loss.
* :mod:`.evaluation`: per-attribute error and pairwise accuracy of the combined reward.
* :mod:`.stage`: the ``pointwise`` stage of ``reward-plugin train``.
"""

from __future__ import annotations

from .rows import HELPSTEER2_ATTRIBUTES, encode_responses, read_responses, responses_from_pairs
from .training import PointwiseConfig, PointwiseTrainer, combined_reward, pointwise_loss

__all__ = [
    "HELPSTEER2_ATTRIBUTES",
    "PointwiseConfig",
    "PointwiseTrainer",
    "combined_reward",
    "encode_responses",
    "pointwise_loss",
    "read_responses",
    "responses_from_pairs",
]
