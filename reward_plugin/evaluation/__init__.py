"""Evaluation of a trained reward model (``reward-plugin eval``).

- :mod:`.predict`: the model's rewards for every prompt of the data (pairs or groups);
- :mod:`.prompts`: rewards grouped by prompt, pairwise and best-of-N accuracy, the predictions file;
- :mod:`.rm_bench`: RM-Bench's style matrix and easy / normal / hard accuracies;
- :mod:`.length_bias`: accuracy by length difference, reward-length correlation;
- :mod:`.buckets`: accuracy by buckets of a per-pair key;
- :mod:`.report`: the report, :func:`evaluate_model` and its text form; :mod:`.plot`: the figure.

Every accuracy carries its count and a 95% Wilson interval over prompts
(:func:`reward_plugin.metrics.wilson_interval`).
"""

from .report import evaluate_model, format_report, group_report, summarize_rewards

__all__ = ["evaluate_model", "format_report", "group_report", "summarize_rewards"]
