"""The ``preference`` adapter: TRL preference rows (explicit/implicit prompt, text or conversational)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..adapter import FormatAdapter
from ..chat_inputs import read_chat_template_kwargs, read_tools
from ..errors import RecordError
from ..hookspecs import hookimpl
from ..records import Message, PreferencePair
from . import _fields


@dataclass
class PreferenceOptions:
    """Options of the ``preference`` adapter.

    Attributes:
        margin_field: the column holding an optional per-row margin ("" to ignore margins).
        allow_empty_response: keep pairs whose chosen or rejected response is empty.
        tie_field: an optional column that marks a tie (true/false, or 1/0); "" to ignore it.
        chosen_score_field, rejected_score_field: where each response's score is, to find ties
            (equal scores; no margin is made of them). ``auto``: ``score_chosen``/``score_rejected``
            or, when the row has none, ``metadata.score_chosen``/``metadata.score_rejected``
            (ultrafeedback_binarized flattened); a dotted path; "" to ignore scores. A row with
            unequal scores may have an empty response (the scores rank it); it is kept and
            counted under the flag ``empty_response``.
    """

    margin_field: str = "margin"
    allow_empty_response: bool = False
    tie_field: str = "tie"
    chosen_score_field: str = "auto"
    rejected_score_field: str = "auto"


#: The score fields ``auto`` looks for, in order: TRL's top-level layout, then a nested one.
AUTO_SCORE_FIELDS = (("score_chosen", "score_rejected"), ("metadata.score_chosen", "metadata.score_rejected"))


def tie_label(row: Mapping[str, Any], field: str) -> bool:
    """Whether the optional boolean column ``field`` marks the row as a tie."""
    if not field or row.get(field) is None:
        return False
    value = row[field]
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise RecordError(
        f"the tie label must be true or false, got {_fields._short(value)}; fix it or pass "
        "--option tie_field= to ignore the column",
        field=field,
        reason="wrong_type",
        value=value,
    )


def response_scores(
    row: Mapping[str, Any], chosen_field: str, rejected_field: str
) -> tuple[float, float] | None:
    """The row's ``(chosen score, rejected score)``, or None when it has none (``auto``: see
    :class:`PreferenceOptions`)."""
    from ..ties import MISSING, lookup

    if not chosen_field or not rejected_field:
        return None
    if chosen_field == "auto" or rejected_field == "auto":
        for c, r in AUTO_SCORE_FIELDS:
            if lookup(row, c) is not MISSING and lookup(row, r) is not MISSING:
                chosen_field, rejected_field = c, r
                break
        else:
            return None
    sc = _fields.number_at(row, chosen_field, optional=True)
    sr = _fields.number_at(row, rejected_field, optional=True)
    return None if sc is None or sr is None else (sc, sr)


def empty_flags(chosen: Any, rejected: Any) -> list[str]:
    """``["empty_response"]`` when either response is empty (kept because scores rank it), else ``[]``."""
    return ["empty_response"] if any(not _fields._content(x).strip() for x in (chosen, rejected)) else []


def split_common_prompt(
    chosen: list[Message], rejected: list[Message]
) -> tuple[list[Message] | None, list, list]:
    """Split two whole conversations into (shared prompt messages, chosen rest, rejected rest).

    The prompt is the longest common run of messages that ends before an assistant message in
    both conversations (so the rest starts with the answers); None when there is none.
    """
    k = 0
    while k < min(len(chosen), len(rejected)) and chosen[k] == rejected[k]:
        k += 1
    while k > 0 and not (
        k < len(chosen)
        and k < len(rejected)
        and chosen[k]["role"] == "assistant"
        and rejected[k]["role"] == "assistant"
        and chosen[k - 1]["role"] != "assistant"
    ):
        k -= 1
    if k == 0:
        return None, chosen, rejected
    return chosen[:k], chosen[k:], rejected[k:]


def read_preference(
    row: Mapping[str, Any],
    *,
    prompt_field: str = "prompt",
    chosen_field: str = "chosen",
    rejected_field: str = "rejected",
    allow_empty: bool = False,
) -> tuple[str | list[Message] | None, str | list[Message], str | list[Message]]:
    """Read prompt/chosen/rejected in any TRL preference layout and check the responses.

    Text rows keep their texts. When chosen/rejected are message lists, a list ``prompt`` is
    used as is; a missing prompt is recovered as the messages both conversations share; a text
    prompt (as in ultrafeedback_binarized, where the conversations repeat it as the first user
    turn) is likewise recovered from the shared messages, or else becomes one user message.

    Returns:
        ``(prompt, chosen, rejected)``.
    """
    chosen_raw = _fields.require(row, chosen_field)
    rejected_raw = _fields.require(row, rejected_field)
    prompt_raw = row.get(prompt_field)
    if isinstance(chosen_raw, list):
        chosen = _fields.messages(chosen_raw, chosen_field)
        rejected = _fields.messages(rejected_raw, rejected_field)
        if isinstance(prompt_raw, list):
            prompt: Any = _fields.messages(prompt_raw, prompt_field)
        elif prompt_raw is None or isinstance(prompt_raw, str):
            prompt, chosen, rejected = split_common_prompt(chosen, rejected)
            if isinstance(prompt_raw, str) and prompt is None and prompt_raw:
                prompt = [{"role": "user", "content": prompt_raw}]
        else:
            raise RecordError(
                f"prompt must be text or a list of messages, got {type(prompt_raw).__name__} "
                f"{_fields._short(prompt_raw)}",
                field=prompt_field,
                reason="wrong_type",
                value=prompt_raw,
            )
    else:
        chosen = _fields.text(row, chosen_field)
        if isinstance(rejected_raw, list):
            raise RecordError(
                "rejected is a list of messages but chosen is text; give both in the same layout",
                field=rejected_field,
                reason="wrong_type",
                value=rejected_raw,
            )
        rejected = _fields.text(row, rejected_field)
        prompt = _fields.text(row, prompt_field, optional=True)
    _fields.check_responses(chosen, rejected, allow_empty=allow_empty, fields=(chosen_field, rejected_field))
    return prompt, chosen, rejected


class PreferenceAdapter(FormatAdapter):
    """TRL-style preference rows.

    * explicit prompt, text: ``{"prompt": str, "chosen": str, "rejected": str}``
    * implicit prompt, text: ``{"chosen": str, "rejected": str}`` (whole texts)
    * conversational: the same keys holding lists of ``{role, content}`` messages; an implicit
      conversational prompt is recovered as the messages both conversations share.
    * optional ``margin`` (a number) on any of them.
    * optional ``tools`` (tool schemas, a list or a JSON string) and ``chat_template_kwargs`` (an
      object, e.g. ``{"enable_thinking": false}``) on conversational rows: they reach the chat
      template as in TRL's ``RewardTrainer``.
    * optional ``tie`` (true marks a tie), and scores whose equality marks one
      (``score_chosen``/``score_rejected``, top level or under ``metadata``).
    """

    name = "preference"
    description = (
        "TRL preference rows: prompt?/chosen/rejected as text or {role, content} messages, optional margin"
    )
    Options = PreferenceOptions
    required_fields = ("chosen", "rejected")

    def to_pairs(self, row: Mapping[str, Any], options: PreferenceOptions) -> list[PreferencePair]:
        scores = response_scores(row, options.chosen_score_field, options.rejected_score_field)
        # An empty response that the source scored below the other is a real (if trivial)
        # preference, as in ultrafeedback_binarized: kept, with a flag the stats count.
        allow_empty = options.allow_empty_response or (scores is not None and scores[0] != scores[1])
        prompt, chosen, rejected = read_preference(row, allow_empty=allow_empty)
        margin = None
        if options.margin_field:
            margin = _fields.number(row, options.margin_field, optional=True)
        pair = PreferencePair(prompt, chosen, rejected, margin=margin)
        pair.tools, pair.chat_template_kwargs = read_tools(row), read_chat_template_kwargs(row)
        if not options.allow_empty_response and empty_flags(chosen, rejected):
            pair.meta["flags"] = empty_flags(chosen, rejected)
        if tie_label(row, options.tie_field):
            pair.tie = "tie_label"
        elif scores is not None and scores[0] == scores[1]:
            pair.tie = "equal_scores"
        return [pair]

    def detect(self, columns: list[str], sample: list[dict[str, Any]]) -> bool:
        return super().detect(columns, sample)


@hookimpl(trylast=True)
def register_formats(register):
    register(PreferenceAdapter())
