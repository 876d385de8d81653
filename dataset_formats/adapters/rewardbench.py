"""The ``rewardbench`` and ``rewardbench2`` adapters: the evaluation sets of RewardBench (v1 and 2).

* RewardBench (allenai/reward-bench, split ``filtered``): one row per comparison,
  ``{"id", "prompt", "chosen", "chosen_model", "rejected", "rejected_model", "subset"}`` with
  text ``prompt``/``chosen``/``rejected``. The prompt is one user message (as the benchmark
  renders it); a list of messages (the layout of its ``pref-test-sets``) is taken as the turns
  before the answer.
* RewardBench 2 (allenai/reward-bench-2, split ``test``): one row per prompt,
  ``{"id", "prompt", "chosen": [...], "rejected": [...], "num_correct", "num_rejected",
  "total_completions", "models", "subset"}``; every chosen response is preferred to every
  rejected one (one chosen and three rejected, except the ``Ties`` subset, which has several
  correct answers).

Both keep ``id`` and ``subset`` for the evaluation (``reward-plugin eval --format rewardbench``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..adapter import FormatAdapter
from ..errors import RecordError
from ..hookspecs import hookimpl
from ..records import PreferencePair
from . import _fields
from .rm_bench import RMBenchAdapter


def _prompt(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    value = _fields.require(row, "prompt")
    if isinstance(value, list):
        messages = _fields.messages(value, "prompt")
        if not messages or messages[-1]["role"] != "user":
            raise RecordError(
                "a prompt given as messages must end with a user turn",
                field="prompt",
                reason="no_user_turn",
                value=value,
            )
        return messages
    text = _fields.text(row, "prompt")
    if not text.strip():
        raise RecordError("the prompt is empty", field="prompt", reason="empty_prompt", value=text)
    return [{"role": "user", "content": text}]


def _subset(row: Mapping[str, Any]) -> str:
    subset = _fields.text(row, "subset")
    if not subset.strip():
        raise RecordError(
            "the subset is empty; every row needs its benchmark subset", field="subset", reason="empty_subset"
        )
    return subset


class RewardBenchAdapter(FormatAdapter):
    """RewardBench v1 rows: ``{"prompt", "chosen", "rejected", "subset", "id"}`` -> one pair."""

    name = "rewardbench"
    description = "RewardBench (v1) rows: prompt, chosen, rejected, subset -> one pair per row"
    required_fields = ("prompt", "chosen", "rejected", "subset")

    def to_pairs(self, row: Mapping[str, Any], options: Any) -> list[PreferencePair]:
        prompt = _prompt(row)
        chosen = _fields.text(row, "chosen")
        rejected = _fields.text(row, "rejected")
        _subset(row)
        _fields.check_responses(chosen, rejected)
        return [PreferencePair(prompt, chosen, rejected, scores=(1.0, 0.0))]

    def detect(self, columns: list[str], sample: list[dict[str, Any]]) -> bool:
        # The published schema's model columns tell RewardBench rows from other preference rows.
        return (
            all(c in columns for c in (*self.required_fields, "chosen_model", "rejected_model"))
            and bool(sample)
            and all(isinstance(r.get("chosen"), str) and isinstance(r.get("subset"), str) for r in sample)
        )


class RewardBench2Adapter(RMBenchAdapter):
    """RewardBench 2 rows: ``{"prompt", "chosen": [...], "rejected": [...], "subset", "id"}`` ->
    every chosen x every rejected (as ``rm-bench``)."""

    name = "rewardbench2"
    description = (
        "RewardBench 2 rows: prompt, chosen [...], rejected [...], subset -> every chosen vs every rejected"
    )
    required_fields = ("prompt", "chosen", "rejected", "subset")

    def to_pairs(self, row: Mapping[str, Any], options: Any) -> list[PreferencePair]:
        _subset(row)
        return super().to_pairs(row, options)

    def detect(self, columns: list[str], sample: list[dict[str, Any]]) -> bool:
        return (
            "num_correct" in columns
            and super().detect(columns, sample)
            and all(isinstance(r.get("subset"), str) for r in sample)
        )


@hookimpl(trylast=True)
def register_formats(register):
    register(RewardBenchAdapter())
    register(RewardBench2Adapter())
