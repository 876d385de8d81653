"""What a conversational row gives its chat template besides the messages: ``tools``,
``chat_template_kwargs``, and the tool-call fields of messages.

This follows TRL 1.16's ``RewardTrainer`` preprocessing, which renders each conversation with
``apply_chat_template(messages, tools=tools, **chat_template_kwargs)``, where ``tools`` is the row's
own ``tools`` column (a list of JSON schemas, or that list as a JSON string) and
``chat_template_kwargs`` its own ``chat_template_kwargs`` object (e.g. ``{"enable_thinking": false}``
for Qwen3). Values are plain JSON data; the template reads them in the sandbox.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .errors import RecordError

#: Message keys kept beside ``role`` and ``content``: tool calls and tool results (OpenAI layout)
#: and reasoning text under the names chat templates read.
MESSAGE_EXTRA_KEYS = ("tool_calls", "tool_call_id", "name", "reasoning_content", "reasoning", "thinking")

#: Keys a row's ``chat_template_kwargs`` may not set: they are arguments of
#: ``apply_chat_template`` (or of our renderer) or the sandbox's helper functions, not template
#: variables, and a dataset row must not change how the conversation is rendered or tokenized.
RESERVED_KWARGS = frozenset(
    {
        "range",
        "raise_exception",
        "strftime_now",
        "namespace",
        "messages",
        "conversation",
        "tools",
        "documents",
        "chat_template",
        "add_generation_prompt",
        "continue_final_message",
        "tokenize",
        "padding",
        "truncation",
        "max_length",
        "return_tensors",
        "return_dict",
        "return_assistant_tokens_mask",
        "tokenizer_kwargs",
        "sanitize_control_tokens",
    }
)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_tools(row: Mapping[str, Any], field: str = "tools") -> list[Any] | None:
    """The row's tool schemas: a list of objects, or that list as a JSON string; None when absent/null."""
    value = row.get(field)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise RecordError(
                f"tools is a string but not valid JSON ({exc.msg} at character {exc.pos}); give a list of "
                "tool schemas or that list as a JSON string",
                field=field,
                reason="wrong_type",
                value=row.get(field),
            ) from None
        if value is None:
            return None
    if not isinstance(value, list) or not all(isinstance(tool, Mapping) for tool in value):
        raise RecordError(
            f"tools must be a list of tool schema objects (or that list as a JSON string), got {_short(value)}",
            field=field,
            reason="wrong_type",
            value=value,
        )
    return [dict(tool) for tool in value]


def read_chat_template_kwargs(
    row: Mapping[str, Any], field: str = "chat_template_kwargs"
) -> dict[str, Any] | None:
    """The row's extra template variables (an object; a JSON string of one is accepted); None when absent."""
    value = row.get(field)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = row.get(field)  # reported below as not an object
    if not isinstance(value, Mapping):
        raise RecordError(
            f"chat_template_kwargs must be an object of template variables, got {_short(value)}",
            field=field,
            reason="wrong_type",
            value=value,
        )
    for key in value:
        if not isinstance(key, str) or not key.isidentifier():
            raise RecordError(
                f"chat_template_kwargs key {key!r} is not a template variable name",
                field=f"{field}.{key}",
                reason="wrong_type",
                value=key,
            )
        if key in RESERVED_KWARGS:
            raise RecordError(
                f"chat_template_kwargs may not set {key!r}: it is an argument of the rendering, not a "
                "template variable; remove it from the row",
                field=f"{field}.{key}",
                reason="reserved_key",
                value=value[key],
            )
    return dict(value) or None


def message_extras(m: Mapping[str, Any], field: str, role: str) -> dict[str, Any]:
    """The extra keys of one message (see :data:`MESSAGE_EXTRA_KEYS`), checked.

    ``tool_calls`` must be a list of objects, each a ``{"type": "function", "function": {name,
    arguments}}`` call or a bare ``{name, arguments}``, and only on assistant messages.
    """
    extras = {key: m[key] for key in MESSAGE_EXTRA_KEYS if key in m}
    calls = extras.get("tool_calls")
    if calls is not None:
        if role != "assistant":
            raise RecordError(
                f"only assistant messages carry tool_calls, this one has role {role!r}",
                field=f"{field}.tool_calls",
                reason="wrong_type",
                value=calls,
            )
        if not isinstance(calls, list) or not all(isinstance(call, Mapping) for call in calls):
            raise RecordError(
                f"tool_calls must be a list of call objects, got {_short(calls)}",
                field=f"{field}.tool_calls",
                reason="wrong_type",
                value=calls,
            )
        for i, call in enumerate(calls):
            function = call.get("function", call)
            if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
                raise RecordError(
                    f"a tool call needs a function name: {_short(dict(call))}; give "
                    '{"type": "function", "function": {"name": ..., "arguments": ...}}',
                    field=f"{field}.tool_calls[{i}]",
                    reason="missing_field",
                    value=call,
                )
    return extras


def has_tool_calls(message: Mapping[str, Any]) -> bool:
    """True when ``message`` is an assistant turn that calls tools."""
    return bool(message.get("tool_calls"))


def template_messages(messages: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Messages as a chat template sees them: reasoning text under all the names templates read.

    transformers' ``apply_chat_template`` fills ``reasoning_content`` and ``thinking`` from whichever
    of ``reasoning_content``/``thinking``/``reasoning`` a message has; so do we, so a template reads
    the same values either way.
    """
    out = []
    for message in messages:
        reasoning = next(
            (
                message[k]
                for k in ("reasoning_content", "thinking", "reasoning")
                if message.get(k) is not None
            ),
            None,
        )
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        out.append(dict(message))
    return out
