"""The ``hh-rlhf`` adapter: Anthropic HH-RLHF ``chosen``/``rejected`` transcripts."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..adapter import FormatAdapter
from ..errors import RecordError
from ..hookspecs import hookimpl
from ..records import Message, PreferencePair
from . import _fields

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLES = {"Human": "user", "Assistant": "assistant"}


@dataclass
class HHRLHFOptions:
    """Options of the ``hh-rlhf`` adapter.

    Attributes:
        on_prompt_mismatch: what to do when the dialogues before the final assistant turn differ:
            ``reject`` the row (reason ``prompt_mismatch``), or keep it as two whole conversations
            with an ``implicit`` prompt (the shared part is then found at token level).
        allow_empty_response: keep pairs whose final chosen or rejected response is empty.
    """

    on_prompt_mismatch: Literal["reject", "implicit"] = "reject"
    allow_empty_response: bool = False


@dataclass(frozen=True)
class Transcript:
    """A parsed transcript: the dialogue before the last ``\\n\\nAssistant:`` and the text after it."""

    history: str
    prompt: list[Message]
    response: str


def parse_transcript(text: str, field: str) -> Transcript:
    """Split a transcript on its last ``\\n\\nAssistant:`` marker.

    Leading whitespace before the first turn is dropped (the turn then starts with ``\\n\\n``
    as in the dataset); text before the first ``Human:`` turn becomes a system message. One
    space after each ``Human:``/``Assistant:`` marker belongs to the marker.

    Raises:
        RecordError: no ``Assistant:`` turn (``missing_assistant_turn``) or the transcript ends
            with a ``Human:`` turn (``malformed_transcript``).
    """
    body = text.lstrip()
    if body.startswith(("Human:", "Assistant:")):
        body = "\n\n" + body
    cut = body.rfind(ASSISTANT)
    if cut < 0:
        raise RecordError(
            f"transcript has no {ASSISTANT!r} turn: {_fields._short(text)}; hh-rlhf transcripts end with "
            "the assistant's answer (use --format preference for plain prompt/chosen/rejected texts)",
            field=field,
            reason="missing_assistant_turn",
            value=text,
        )
    history, response = body[:cut], body[cut + len(ASSISTANT) :]
    if HUMAN in response:
        raise RecordError(
            f"transcript ends with a Human turn, so there is no final assistant response: {_fields._short(text[-80:])}",
            field=field,
            reason="malformed_transcript",
            value=text,
        )
    parts = _TURN.split(history)
    prompt: list[Message] = []
    if parts[0]:
        prompt.append({"role": "system", "content": parts[0]})
    for marker, content in zip(parts[1::2], parts[2::2]):
        prompt.append({"role": _ROLES[marker], "content": _drop_space(content)})
    return Transcript(history, prompt, _drop_space(response))


def _drop_space(text: str) -> str:
    return text.removeprefix(" ")


class HHRLHFAdapter(FormatAdapter):
    """Anthropic HH-RLHF rows: two full transcripts that share the dialogue up to the final answer."""

    name = "hh-rlhf"
    description = "Anthropic HH-RLHF transcripts ('\\n\\nHuman: ...\\n\\nAssistant: ...' in chosen/rejected)"
    Options = HHRLHFOptions
    required_fields = ("chosen", "rejected")

    def to_pairs(self, row: Mapping[str, Any], options: HHRLHFOptions) -> list[PreferencePair]:
        chosen_text = _fields.text(row, "chosen")
        rejected_text = _fields.text(row, "rejected")
        chosen = parse_transcript(chosen_text, "chosen")
        rejected = parse_transcript(rejected_text, "rejected")
        if chosen.history != rejected.history:
            if options.on_prompt_mismatch == "reject":
                at = len(_prefix(chosen.history, rejected.history))
                raise RecordError(
                    f"the dialogue before the final assistant turn differs between chosen and rejected "
                    f"(from character {at}: {_fields._short(chosen.history[at : at + 40])} vs "
                    f"{_fields._short(rejected.history[at : at + 40])}); pass --option on_prompt_mismatch=implicit "
                    "to keep such rows as two whole conversations",
                    field="rejected",
                    reason="prompt_mismatch",
                    value=rejected_text,
                )
            _fields.check_responses(
                chosen.response, rejected.response, allow_empty=options.allow_empty_response
            )
            whole_c = chosen.prompt + [_assistant(chosen.response)]
            whole_r = rejected.prompt + [_assistant(rejected.response)]
            return [PreferencePair(None, whole_c, whole_r, meta={"prompt_mismatch": True})]
        _fields.check_responses(chosen.response, rejected.response, allow_empty=options.allow_empty_response)
        if not chosen.prompt:  # no dialogue before the answer: keep the answers as assistant turns
            return [PreferencePair(None, [_assistant(chosen.response)], [_assistant(rejected.response)])]
        return [PreferencePair(chosen.prompt, chosen.response, rejected.response)]

    def detect(self, columns: list[str], sample: list[dict[str, Any]]) -> bool:
        if not super().detect(columns, sample) or "prompt" in columns:
            return False
        texts = [r.get(k) for r in sample for k in ("chosen", "rejected")]
        return bool(texts) and all(isinstance(t, str) and ASSISTANT in t and "Human:" in t for t in texts)


def _assistant(text: str) -> Message:
    return {"role": "assistant", "content": text}


def _prefix(a: str, b: str) -> str:
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    return a[:i]


@hookimpl(trylast=True)
def register_formats(register):
    register(HHRLHFAdapter())
