"""The ``chat`` adapter: a conversation plus chosen/rejected replies, rendered through a chat template."""

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

#: ShareGPT role names accepted in ``{"from", "value"}`` messages.
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
}


@dataclass
class ChatOptions:
    """Options of the ``chat`` adapter.

    Attributes:
        messages_field: the column holding the conversation so far (the prompt).
        allow_empty_response: keep pairs whose chosen or rejected reply is empty.
    """

    messages_field: str = "messages"
    allow_empty_response: bool = False


def read_messages(value: Any, field: str) -> list[Message]:
    """Messages in OpenAI (``role``/``content``) or ShareGPT (``from``/``value``) layout."""
    if isinstance(value, list) and value and isinstance(value[0], Mapping) and "from" in value[0]:
        return _fields.messages(value, field, role_key="from", content_key="value", role_map=SHAREGPT_ROLES)
    return _fields.messages(value, field)


def read_reply(value: Any, field: str) -> list[Message]:
    """A reply given as a string, one message object, or a list of messages.

    A reply is assistant turns, and ``tool`` results after an assistant turn (an agent's tool
    calls, their results, then its answer)."""
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    if isinstance(value, Mapping):
        value = [value]
    msgs = read_messages(value, field)
    if not msgs:
        raise RecordError(
            "the reply is an empty list of messages", field=field, reason="empty_response", value=value
        )
    for i, m in enumerate(msgs):
        if m["role"] != "assistant" and not (m["role"] == "tool" and i > 0):
            raise RecordError(
                f"a reply must consist of assistant messages, got role {m['role']!r}; "
                "put the earlier turns in the conversation field",
                field=f"{field}[{i}]",
                reason="unknown_role",
                value=m["role"],
            )
    return msgs


class ChatAdapter(FormatAdapter):
    """``{"messages": [...], "chosen": reply, "rejected": reply}``.

    ``messages`` is the conversation so far (``{role, content}`` or ShareGPT ``{from, value}``
    objects); each reply is a string, an assistant message object, or a list of assistant
    messages. Rendering uses ``--chat-template`` (a shipped name, a ``.jinja`` path or
    ``tokenizer``); without one the plain hh-rlhf style is used. Optional ``tools`` (a list of tool
    schemas, or it as a JSON string) and ``chat_template_kwargs`` (an object) go to the template.
    """

    name = "chat"
    description = "chat conversations (messages + chosen/rejected replies) rendered through a chat template"
    Options = ChatOptions
    required_fields = ("messages", "chosen", "rejected")

    def to_pairs(self, row: Mapping[str, Any], options: ChatOptions) -> list[PreferencePair]:
        prompt = read_messages(_fields.require(row, options.messages_field), options.messages_field)
        chosen = read_reply(_fields.require(row, "chosen"), "chosen")
        rejected = read_reply(_fields.require(row, "rejected"), "rejected")
        _fields.check_responses(chosen, rejected, allow_empty=options.allow_empty_response)
        pair = PreferencePair(prompt or None, chosen, rejected)
        pair.tools, pair.chat_template_kwargs = read_tools(row), read_chat_template_kwargs(row)
        return [pair]


@hookimpl(trylast=True)
def register_formats(register):
    register(ChatAdapter())
