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
    """

    margin_field: str = "margin"
    allow_empty_response: bool = False


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
    """

    name = "preference"
    description = (
        "TRL preference rows: prompt?/chosen/rejected as text or {role, content} messages, optional margin"
    )
    Options = PreferenceOptions
    required_fields = ("chosen", "rejected")

    def to_pairs(self, row: Mapping[str, Any], options: PreferenceOptions) -> list[PreferencePair]:
        prompt, chosen, rejected = read_preference(row, allow_empty=options.allow_empty_response)
        margin = None
        if options.margin_field:
            margin = _fields.number(row, options.margin_field, optional=True)
        pair = PreferencePair(prompt, chosen, rejected, margin=margin)
        pair.tools, pair.chat_template_kwargs = read_tools(row), read_chat_template_kwargs(row)
        return [pair]

    def detect(self, columns: list[str], sample: list[dict[str, Any]]) -> bool:
        return super().detect(columns, sample)


@hookimpl(trylast=True)
def register_formats(register):
    register(PreferenceAdapter())
