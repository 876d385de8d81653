"""The ``hh-rlhf`` adapter: Anthropic HH-RLHF ``chosen``/``rejected`` transcripts."""

from __future__ import annotations

import os
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

#: ``meta["flags"]`` of pairs the adapter keeps although they look unusual (counted in the stats
#: under ``pairs_flagged``): a blank final answer, and a final answer that itself contains a
#: ``\n\nHuman:``/``\n\nAssistant:`` marker (kept as one response).
FLAG_EMPTY = "empty_response"
FLAG_TURN_MARKER = "turn_marker_in_response"


@dataclass
class HHRLHFOptions:
    """Options of the ``hh-rlhf`` adapter.

    Attributes:
        split: where the prompt ends. ``shared`` (TRL's hh-rlhf rule): at the last
            ``\\n\\nAssistant:`` marker that chosen and rejected share, so a final answer that
            contains further turn markers stays one response. ``last_turn`` (strict): each
            transcript is split on its own last marker; the dialogues before it must match
            (else ``on_prompt_mismatch``) and a transcript ending with a Human turn is rejected.
        on_prompt_mismatch: what to do when chosen and rejected share no dialogue up to an
            assistant turn (``shared``) or their dialogues before the final turn differ
            (``last_turn``): ``reject`` the row (reason ``prompt_mismatch``), or keep it as two
            whole conversations with an ``implicit`` prompt (found at token level).
        allow_empty_response: keep pairs whose final chosen or rejected answer is blank (an
            ordinary hh-rlhf row: the empty answer is what the labeller compared).
    """

    split: Literal["shared", "last_turn"] = "shared"
    on_prompt_mismatch: Literal["reject", "implicit"] = "reject"
    allow_empty_response: bool = True


@dataclass(frozen=True)
class Transcript:
    """A parsed transcript: the dialogue before the last ``\\n\\nAssistant:`` and the text after it."""

    history: str
    prompt: list[Message]
    response: str


def _normalize(text: str) -> str:
    """Leading whitespace dropped; a first turn without its blank line gets the dataset's ``\\n\\n``."""
    body = text.lstrip()
    if body.startswith(("Human:", "Assistant:")):
        body = "\n\n" + body
    return body


def _require_assistant(text: str, body: str, field: str) -> None:
    if ASSISTANT not in body:
        raise RecordError(
            f"transcript has no {ASSISTANT!r} turn: {_fields._short(text)}; hh-rlhf transcripts end with "
            "the assistant's answer (use --format preference for plain prompt/chosen/rejected texts)",
            field=field,
            reason="missing_assistant_turn",
            value=text,
        )


def _split_at(body: str, cut: int) -> Transcript:
    """The transcript ``body`` split at the assistant marker that starts at ``cut``."""
    history, response = body[:cut], body[cut + len(ASSISTANT) :]
    parts = _TURN.split(history)
    prompt: list[Message] = []
    if parts[0]:
        prompt.append({"role": "system", "content": parts[0]})
    for marker, content in zip(parts[1::2], parts[2::2]):
        prompt.append({"role": _ROLES[marker], "content": _drop_space(content)})
    return Transcript(history, prompt, _drop_space(response))


def parse_transcript(text: str, field: str) -> Transcript:
    """Split a transcript on its last ``\\n\\nAssistant:`` marker (the ``last_turn`` rule).

    Leading whitespace before the first turn is dropped (the turn then starts with ``\\n\\n``
    as in the dataset); text before the first ``Human:`` turn becomes a system message. One
    space after each ``Human:``/``Assistant:`` marker belongs to the marker.

    Raises:
        RecordError: no ``Assistant:`` turn (``missing_assistant_turn``) or the transcript ends
            with a ``Human:`` turn (``malformed_transcript``).
    """
    body = _normalize(text)
    _require_assistant(text, body, field)
    parsed = _split_at(body, body.rfind(ASSISTANT))
    if HUMAN in parsed.response:
        raise RecordError(
            f"transcript ends with a Human turn, so there is no final assistant response: "
            f"{_fields._short(text[-80:])}; pass --option split=shared to keep it as part of the answer",
            field=field,
            reason="malformed_transcript",
            value=text,
        )
    return parsed


def split_shared(chosen_text: str, rejected_text: str) -> tuple[Transcript, Transcript] | None:
    """Split both transcripts at the last ``\\n\\nAssistant:`` marker inside their common prefix.

    This is how TRL's hh-rlhf script finds the prompt: everything after that marker is the
    response, even when it contains further turn markers. Returns None when the common prefix
    holds no assistant marker (the dialogues differ from the first turn on).

    Raises:
        RecordError: a transcript without any ``Assistant:`` turn (``missing_assistant_turn``).
    """
    chosen, rejected = _normalize(chosen_text), _normalize(rejected_text)
    _require_assistant(chosen_text, chosen, "chosen")
    _require_assistant(rejected_text, rejected, "rejected")
    cut = os.path.commonprefix([chosen, rejected]).rfind(ASSISTANT)
    if cut < 0:
        return None
    return _split_at(chosen, cut), _split_at(rejected, cut)


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
        if options.split == "shared":
            split = split_shared(chosen_text, rejected_text)
            if split is None:
                return self._mismatch(chosen_text, rejected_text, options)
            chosen, rejected = split
        else:
            chosen = parse_transcript(chosen_text, "chosen")
            rejected = parse_transcript(rejected_text, "rejected")
            if chosen.history != rejected.history:
                return self._mismatch(chosen_text, rejected_text, options)
        _fields.check_responses(chosen.response, rejected.response, allow_empty=options.allow_empty_response)
        meta = _flags(chosen.response, rejected.response)
        if not chosen.prompt:  # no dialogue before the answer: keep the answers as assistant turns
            return [
                PreferencePair(
                    None, [_assistant(chosen.response)], [_assistant(rejected.response)], meta=meta
                )
            ]
        return [PreferencePair(chosen.prompt, chosen.response, rejected.response, meta=meta)]

    def _mismatch(self, chosen_text: str, rejected_text: str, options: HHRLHFOptions) -> list[PreferencePair]:
        """A row whose dialogues differ before the answers: reject it, or keep two whole conversations."""
        chosen = parse_transcript(chosen_text, "chosen")
        rejected = parse_transcript(rejected_text, "rejected")
        if options.on_prompt_mismatch == "reject":
            at = len(os.path.commonprefix([chosen.history, rejected.history]))
            raise RecordError(
                f"the dialogue before the final assistant turn differs between chosen and rejected "
                f"(from character {at}: {_fields._short(chosen.history[at : at + 40])} vs "
                f"{_fields._short(rejected.history[at : at + 40])}); pass --option on_prompt_mismatch=implicit "
                "to keep such rows as two whole conversations",
                field="rejected",
                reason="prompt_mismatch",
                value=rejected_text,
            )
        _fields.check_responses(chosen.response, rejected.response, allow_empty=options.allow_empty_response)
        whole_c = chosen.prompt + [_assistant(chosen.response)]
        whole_r = rejected.prompt + [_assistant(rejected.response)]
        meta = {"prompt_mismatch": True, **_flags(chosen.response, rejected.response)}
        return [PreferencePair(None, whole_c, whole_r, meta=meta)]

    def detect(self, columns: list[str], sample: list[dict[str, Any]]) -> bool:
        if not super().detect(columns, sample) or "prompt" in columns:
            return False
        texts = [r.get(k) for r in sample for k in ("chosen", "rejected")]
        return bool(texts) and all(isinstance(t, str) and ASSISTANT in t and "Human:" in t for t in texts)


def _flags(chosen: str, rejected: str) -> dict[str, list[str]]:
    """``{"flags": [...]}`` for a pair kept although it looks unusual, else ``{}``."""
    flags = []
    if not chosen.strip() or not rejected.strip():
        flags.append(FLAG_EMPTY)
    if _TURN.search(chosen) or _TURN.search(rejected):
        flags.append(FLAG_TURN_MARKER)
    return {"flags": flags} if flags else {}


def _assistant(text: str) -> Message:
    return {"role": "assistant", "content": text}


@hookimpl(trylast=True)
def register_formats(register):
    register(HHRLHFAdapter())
