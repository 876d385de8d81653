"""The ``rm-bench`` adapter: RM-Bench rows (one prompt, K chosen and M rejected responses) -> K x M pairs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..adapter import FormatAdapter
from ..errors import RecordError
from ..hookspecs import hookimpl
from ..records import PreferencePair
from . import _fields

#: RM-Bench scores: every chosen response beats every rejected one, and responses of one side tie.
CHOSEN_SCORE, REJECTED_SCORE = 1.0, 0.0


def _responses(row: Mapping[str, Any], field: str) -> list[str]:
    value = _fields.require(row, field)
    if not isinstance(value, list):
        raise RecordError(
            f"expected a list of response strings, got {type(value).__name__} {_fields._short(value)}",
            field=field,
            reason="wrong_type",
            value=value,
        )
    if not value:
        raise RecordError(
            "the list of responses is empty", field=field, reason="too_few_completions", value=value
        )
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise RecordError(
                f"expected a string, got {type(item).__name__} {_fields._short(item)}",
                field=f"{field}[{i}]",
                reason="wrong_type",
                value=item,
            )
        if not item.strip():
            raise RecordError(
                "the response is empty", field=f"{field}[{i}]", reason="empty_response", value=item
            )
    return value


class RMBenchAdapter(FormatAdapter):
    """RM-Bench rows ``{"prompt", "chosen": [...], "rejected": [...]}`` (THU-KEG/RM-Bench JSON files).

    Every chosen response is preferred to every rejected one: a row with 3 + 3 responses gives
    9 pairs, ``chosen[i]`` vs ``rejected[j]`` in the order ``i`` then ``j``. Each pair carries
    the scores ``(1.0, 0.0)``, so ``convert --groups`` writes one group per prompt (the chosen
    responses first, then the rejected ones) whose ``scores`` rank the two sides. A pair whose two
    texts are identical is left out and counted in ``pairs[0].meta["identical_dropped"]``.
    """

    name = "rm-bench"
    description = "RM-Bench rows: prompt, chosen [K], rejected [M] -> every chosen vs every rejected"
    required_fields = ("prompt", "chosen", "rejected")

    def to_pairs(self, row: Mapping[str, Any], options: Any) -> list[PreferencePair]:
        prompt = _fields.text(row, "prompt")
        if not prompt.strip():
            raise RecordError("the prompt is empty", field="prompt", reason="empty_prompt", value=prompt)
        chosen = _responses(row, "chosen")
        rejected = _responses(row, "rejected")
        messages = [{"role": "user", "content": prompt}]
        pairs = [
            PreferencePair(messages, c, r, scores=(CHOSEN_SCORE, REJECTED_SCORE))
            for c in chosen
            for r in rejected
            if c.strip() != r.strip()
        ]
        identical = len(chosen) * len(rejected) - len(pairs)
        if not pairs:
            raise RecordError(
                "every chosen response equals a rejected one; no preference to learn",
                field="rejected",
                reason="identical_pair",
                value=None,
            )
        if identical:
            pairs[0].meta["identical_dropped"] = identical
        return pairs

    def detect(self, columns: list[str], sample: list[dict[str, Any]]) -> bool:
        if not all(c in columns for c in self.required_fields) or not sample:
            return False
        return all(
            isinstance(row.get("chosen"), list) and isinstance(row.get("rejected"), list) for row in sample
        ) and all(isinstance(x, str) for row in sample for x in row["chosen"] + row["rejected"])


@hookimpl(trylast=True)
def register_formats(register):
    register(RMBenchAdapter())
