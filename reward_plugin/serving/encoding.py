"""Prompts and completions to token ids, rendered and truncated the way training encoded its pairs.

Plain-text prompts and completions are concatenated (``prompt + completion``); conversational ones
(lists of ``{"role", "content"}`` messages, as TRL passes them) go through the chat template saved
with the model, in the sandbox of :mod:`dataset_formats.rendering`, exactly as
:func:`dataset_formats.rendering.render_pair` renders a training pair (its helpers are reused). Tokenization, the response
boundary and the length policy are those of :class:`dataset_formats.encoding.PairEncoder`: with
``truncation="left"`` the prompt gives way first and the completion is kept (cut from the right
only when it alone is too long); ``"right"`` cuts the end.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from dataset_formats.chat_inputs import MESSAGE_EXTRA_KEYS, read_chat_template_kwargs, read_tools
from dataset_formats.encoding import LengthPolicy, PairEncoder
from dataset_formats.errors import RecordError
from dataset_formats.rendering import ChatTemplate, _as_messages, _hh_render, _text

from ..errors import DataError

#: A prompt or completion: text or a list of ``{"role", "content"}`` messages.
Content = str | list[dict[str, Any]] | None


class ItemTooLongError(DataError):
    """An item over the server's token limit; ``field`` names the request field."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


def message_ok(m: Any) -> bool:
    """A ``{"role", "content"}`` message: string role, string content (null content only beside tool calls)."""
    if not isinstance(m, dict) or not isinstance(m.get("role"), str):
        return False
    content = m.get("content")
    return isinstance(content, str) or (content is None and bool(m.get("tool_calls")))


def _check(value: Any, name: str, index: int) -> None:
    if value is None or isinstance(value, str):
        return
    if isinstance(value, (list, tuple)) and all(message_ok(m) for m in value):
        return
    raise DataError(
        f"{name}[{index}] must be a string or a list of {{'role', 'content'}} messages with string values "
        f"(null content only beside tool_calls), got {type(value).__name__}"
    )


def _messages(value: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as training keeps them: role, content and the tool-call/reasoning keys."""
    return [
        {"role": m["role"], "content": m.get("content"), **{k: m[k] for k in MESSAGE_EXTRA_KEYS if k in m}}
        for m in value
    ]


def template_inputs(
    tools: Any, chat_template_kwargs: Any, index: int = 0
) -> tuple[list[dict[str, Any]] | None, dict[str, Any] | None]:
    """One item's ``(tools, chat_template_kwargs)``, checked as training checks a row's columns.

    ``tools``: a list of tool schemas (or that list as a JSON string), or None;
    ``chat_template_kwargs``: an object of template variables (or its JSON string), or None.

    Raises:
        DataError: naming ``tools[index]`` or ``chat_template_kwargs[index]``.
    """
    try:
        return (
            read_tools({"tools": tools}),
            read_chat_template_kwargs({"chat_template_kwargs": chat_template_kwargs}),
        )
    except RecordError as exc:
        field = str(exc.field or "tools")
        head, _, rest = field.partition(".")
        raise DataError(f"{head}[{index}]{'.' + rest if rest else ''}: {exc}") from None


class ScoringEncoder:
    """Renders and tokenizes ``(prompt, completion)`` items.

    Args:
        tokenizer: the model's (fast) tokenizer.
        template: the chat template for conversational items (None: the plain hh-rlhf style).
        max_length: the length limit (None: none).
        truncation: ``left`` (the prompt gives way) or ``right``.
    """

    def __init__(
        self, tokenizer: Any, template: ChatTemplate | None, max_length: int | None, truncation: str
    ):
        self.tokenizer = tokenizer
        self.template = template
        self.max_length = max_length
        self.truncation = truncation if truncation in ("left", "right") else "left"
        self._encoder = PairEncoder(tokenizer, LengthPolicy(max_length, self.truncation))

    def render(
        self,
        prompt: Content,
        completion: Content,
        index: int = 0,
        cache: dict[str, str] | None = None,
        *,
        tools: Any = None,
        chat_template_kwargs: Any = None,
    ) -> tuple[str, str]:
        """``(prompt text, full text)`` of one item; the full text starts with the prompt text ("" if unknown).

        As :func:`dataset_formats.rendering.render_pair` renders a pair's side: plain text is
        concatenated, conversations go through the template (or the plain hh-rlhf style without
        one) with the item's ``tools`` and ``chat_template_kwargs`` (as training passes a row's
        columns; see :func:`template_inputs`). ``cache`` keeps rendered prompts across the items of
        one call.
        """
        _check(prompt, "prompts", index)
        _check(completion, "completions", index)
        if completion is None:
            raise DataError(f"completions[{index}] is missing")
        tools, kwargs = template_inputs(tools, chat_template_kwargs, index)
        prompt = _messages(prompt) if isinstance(prompt, (list, tuple)) else prompt
        completion = _messages(completion) if isinstance(completion, (list, tuple)) else completion
        if not any(isinstance(x, list) for x in (prompt, completion)):
            text = _text(prompt)
            return text, text + _text(completion)
        if self.template is None and (tools or kwargs):
            field = "tools" if tools else "chat_template_kwargs"
            raise DataError(
                f"{field}[{index}] is given, which only a chat template can use, but the model has no saved "
                "chat template; pass chat_template= (--chat-template)"
            )
        answer = _as_messages(completion)
        if prompt is None or prompt == [] or prompt == "":
            return "", self._render(answer, False, tools, kwargs)
        turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        full = self._render(turns + answer, False, tools, kwargs)
        key = json.dumps([turns, tools, kwargs], sort_keys=True) if cache is not None else ""
        head = cache.get(key) if cache is not None else None
        if head is None:
            head = self._render(turns, True, tools, kwargs)
            if cache is not None:
                cache[key] = head
        # Some templates rewrite earlier turns once an answer follows: the prompt is then unknown.
        return (head if full.startswith(head) else ""), full

    def _render(
        self,
        messages: list[dict[str, Any]],
        generation_prompt: bool,
        tools: list[dict[str, Any]] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> str:
        if self.template is None:
            return _hh_render(messages, generation_prompt)
        return self.template.render(
            messages,
            add_generation_prompt=generation_prompt,
            tools=tools,
            template_kwargs=kwargs,
            bos_token=getattr(self.tokenizer, "bos_token", None),
            eos_token=getattr(self.tokenizer, "eos_token", None),
        )

    def encode_texts(
        self,
        prompts: Sequence[str],
        texts: Sequence[str],
        *,
        max_tokens: int | None = None,
        field: str = "items",
    ) -> list[list[int]]:
        """Token ids of full texts (each starting with its prompt text, "" when unknown), length policy applied.

        Raises:
            ItemTooLongError: an item has more than ``max_tokens`` tokens before truncation.
        """
        if not texts:
            return []
        batch = self._encoder.tokenize(list(texts))
        out = []
        for k, (ids, encoding) in enumerate(zip(batch["input_ids"], batch.encodings)):
            if max_tokens is not None and len(ids) > max_tokens:
                raise ItemTooLongError(
                    f"{field}[{k}] has {len(ids)} tokens, more than the limit of {max_tokens}", field=field
                )
            ids, boundary = self._encoder._with_boundary(ids, encoding, prompts[k], texts[k])
            out.append(self._cut(ids, boundary))
        return out

    def encode(
        self,
        prompts: Sequence[Content],
        completions: Sequence[Content],
        *,
        tools: Sequence[Any] | None = None,
        chat_template_kwargs: Sequence[Any] | None = None,
        max_tokens: int | None = None,
    ) -> tuple[list[str], list[list[int]]]:
        """``(rendered prompt texts, token ids)`` of each item.

        ``tools`` and ``chat_template_kwargs``, when given, hold one entry per item (None for none).
        """
        n = len(completions)
        if len(prompts) != n:
            raise DataError(f"got {len(prompts)} prompts but {n} completions; pass one prompt per completion")
        for name, values in (("tools", tools), ("chat_template_kwargs", chat_template_kwargs)):
            if values is not None and (isinstance(values, (str, dict)) or len(values) != n):
                raise DataError(f"{name} must be a list with one entry per completion ({n}), or None")
        tools = tools if tools is not None else [None] * n
        kwargs = chat_template_kwargs if chat_template_kwargs is not None else [None] * n
        cache: dict[str, str] = {}
        rendered = [
            self.render(p, c, k, cache, tools=t, chat_template_kwargs=kw)
            for k, (p, c, t, kw) in enumerate(zip(prompts, completions, tools, kwargs))
        ]
        prompt_texts = [r[0] for r in rendered]
        texts = [r[1] for r in rendered]
        return prompt_texts, self.encode_texts(
            prompt_texts, texts, max_tokens=max_tokens, field="completions"
        )

    def _cut(self, ids: list[int], boundary: int | None) -> list[int]:
        limit = self.max_length
        if limit is None or len(ids) <= limit:
            return ids
        enc = self._encoder
        if self.truncation == "right":
            return enc._cut_right(ids, boundary if boundary is not None else enc.n_lead, limit)[0]
        if boundary is None:  # no known prompt: the text gives way from the left, its end is kept
            boundary = len(ids) - enc.n_trail
        return enc._cut_left(ids, boundary, len(ids) - limit, limit)[0]
