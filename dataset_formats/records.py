"""Text-level records that adapters emit, before rendering and tokenization."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: A chat message: ``{"role": "system" | "user" | "assistant" | "tool", "content": str}``, plus
#: tool-call fields (``tool_calls``, ``tool_call_id``, ``name``) and reasoning text when the source has them.
Message = dict[str, Any]
#: Text, or a list of messages.
Content = str | list[Message]

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class PreferencePair:
    """One preference pair as an adapter reads it from a source row.

    Attributes:
        prompt: the shared context: rendered plain text, a list of messages (system/user/assistant
            turns ending with a user turn), or None when the source has an implicit prompt (the
            shared part is then found at token level).
        chosen: the preferred response: text, or a list of assistant message(s); when ``prompt`` is
            None it is the whole chosen text/conversation.
        rejected: the dispreferred response, same shape as ``chosen``.
        margin: how much better chosen is (Llama 2 margin), or None when the source gives none.
        row: the 0-based source row number, set by the pipeline (provenance column ``source_row``).
        meta: extra provenance an adapter wants to keep (not written unless asked for).
        scores: ``(chosen score, rejected score)`` when the source scores each response (higher is
            better; a rank is given as its negative), else None. The grouped table
            (:mod:`dataset_formats.groups`) keeps them as per-response ``scores``.
        tools: the row's tool schemas, given to the chat template as ``tools`` (None: no tools).
        chat_template_kwargs: the row's extra chat-template variables (e.g. ``enable_thinking``).
        tie: why the source says neither response is better (a kind from
            :data:`dataset_formats.ties.TIE_KINDS`, e.g. ``"equal_scores"``), or None for a real
            preference. The ``ties`` policy of the conversion decides what becomes of a tie.
    """

    prompt: Content | None
    chosen: Content
    rejected: Content
    margin: float | None = None
    row: int = -1
    meta: dict[str, Any] = field(default_factory=dict)
    scores: tuple[float, float] | None = None
    tools: list[dict[str, Any]] | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    tie: str | None = None

    def is_conversational(self) -> bool:
        """True when the pair holds messages rather than plain text."""
        return any(isinstance(x, list) for x in (self.prompt, self.chosen, self.rejected))
