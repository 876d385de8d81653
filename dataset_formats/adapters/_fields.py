"""Field readers shared by the built-in adapters: each bad value is a RecordError naming the field."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from typing import Any

from ..chat_inputs import has_tool_calls, message_extras
from ..errors import RecordError
from ..records import ROLES, Message

_MISSING = object()


def require(row: Mapping[str, Any], field: str) -> Any:
    """``row[field]``; a missing key or a null value is ``missing_field``."""
    value = row.get(field, _MISSING) if isinstance(row, Mapping) else _MISSING
    if value is None:
        raise RecordError(
            "required field is null; give it a value or remove the row", field=field, reason="missing_field"
        )
    if value is _MISSING:
        keys = [str(k) for k in row] if isinstance(row, Mapping) else []
        present = ", ".join(keys) if isinstance(row, Mapping) else type(row).__name__
        raise RecordError(
            f"required field is missing (row has: {present}); {missing_fix(field, keys)}",
            field=field,
            reason="missing_field",
        )
    return value


def near_miss(name: str, candidates: list[str]) -> str | None:
    """The candidate that looks like a misspelling of ``name`` (case or a typo), if any."""
    # Siblings such as score_A/score_B or response_1/response_2 are other fields, not typos.
    candidates = [c for c in candidates if not (len(c) == len(name) and c[:-1] == name[:-1])]
    lowered = {c.lower(): c for c in candidates}
    if name.lower() in lowered:
        return lowered[name.lower()]
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.75)
    return close[0] if close else None


def missing_fix(field: str, present: list[str]) -> str:
    """The fix for a missing ``field``: rename a near miss, or add it / pick another format."""
    guess = near_miss(field, [k for k in present if k != field])
    if guess is not None:
        return f"did you mean {guess!r}? rename that column to {field!r}"
    return "add it, or pick the --format that matches these columns"


def text(row: Mapping[str, Any], field: str, *, optional: bool = False) -> str | None:
    """A string field (``None`` when ``optional`` and absent/null)."""
    if optional and (field not in row or row[field] is None):
        return None
    value = require(row, field)
    if not isinstance(value, str):
        source_text = getattr(value, "source_text", None)  # a CSV cell that looks like a number
        if isinstance(source_text, str):
            return source_text
        raise RecordError(
            f"expected a string, got {type(value).__name__} {_short(value)}; give this field as text",
            field=field,
            reason="wrong_type",
            value=value,
        )
    return value


def number(row: Mapping[str, Any], field: str, *, optional: bool = False) -> float | None:
    """A finite number field; numeric strings are accepted ("4.5")."""
    if optional and (field not in row or row[field] is None):
        return None
    value = require(row, field)
    return as_number(value, field)


def number_at(row: Mapping[str, Any], path: str, *, optional: bool = False) -> float | None:
    """A finite number at a dotted ``path`` (``metadata.score_chosen``); a plain name is a column."""
    from ..ties import MISSING, lookup

    if "." not in path or path in row:
        if path not in row and not optional:
            nested = [k for k, v in row.items() if isinstance(v, Mapping) and path in v]
            if nested:
                raise RecordError(
                    f"required field is missing here but {nested[0]!r} holds it; point the score field "
                    f"option at {nested[0] + '.' + path!r} (e.g. --option chosen_score_field={nested[0]}.{path})",
                    field=path,
                    reason="missing_field",
                )
        return number(row, path, optional=optional)
    value = lookup(row, path)
    if value is MISSING or value is None:
        if optional:
            return None
        head = path.split(".", 1)[0]
        inner = row.get(head) if isinstance(row, Mapping) else None
        present = ", ".join(str(k) for k in inner) if isinstance(inner, Mapping) else "no such object"
        raise RecordError(
            f"required field is missing or null ({head!r} has: {present}); point the field option at "
            "where this row keeps the value",
            field=path,
            reason="missing_field",
        )
    return as_number(value, path)


def as_number(value: Any, field: str) -> float:
    """``value`` as a finite float, or a ``wrong_type`` RecordError naming ``field``."""
    fix = "; give a finite number or remove the field"
    if isinstance(value, bool):
        raise RecordError(
            f"expected a number, got {value!r}{fix}", field=field, reason="wrong_type", value=value
        )
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise RecordError(
                f"expected a number, got {value!r}{fix}", field=field, reason="wrong_type", value=value
            ) from None
    if not isinstance(value, (int, float)):
        raise RecordError(
            f"expected a number, got {type(value).__name__} {_short(value)}{fix}",
            field=field,
            reason="wrong_type",
            value=value,
        )
    if not math.isfinite(value):
        raise RecordError(
            f"expected a finite number, got {value!r}{fix}", field=field, reason="wrong_type", value=value
        )
    return float(value)


def messages(
    value: Any,
    field: str,
    *,
    role_key: str = "role",
    content_key: str = "content",
    role_map: Mapping[str, str] | None = None,
) -> list[Message]:
    """Validate a list of message objects and return ``{"role", "content"}`` dicts.

    Tool-call fields (``tool_calls``, ``tool_call_id``, ``name``) and reasoning text are kept when a
    message has them (:data:`dataset_formats.chat_inputs.MESSAGE_EXTRA_KEYS`); an assistant message
    that calls tools may have a null content.

    Args:
        value: the raw list.
        field: the field name used in errors.
        role_key: the key holding the role (``from`` for sharegpt).
        content_key: the key holding the text (``value`` for sharegpt).
        role_map: source role names to ours (``{"human": "user", "gpt": "assistant"}``).
    """
    if not isinstance(value, list):
        raise RecordError(
            f"expected a list of {{{role_key}, {content_key}}} messages, got {type(value).__name__} {_short(value)}",
            field=field,
            reason="wrong_type",
            value=value,
        )
    return [
        message(m, f"{field}[{i}]", role_key=role_key, content_key=content_key, role_map=role_map)
        for i, m in enumerate(value)
    ]


def message(
    m: Any,
    field: str,
    *,
    role_key: str = "role",
    content_key: str = "content",
    role_map: Mapping[str, str] | None = None,
) -> Message:
    """Validate one message object (see :func:`messages`)."""
    if not isinstance(m, Mapping):
        raise RecordError(
            f"expected a {{{role_key}, {content_key}}} object, got {_short(m)}",
            field=field,
            reason="wrong_type",
            value=m,
        )
    role = m.get(role_key)
    mapped = role_map.get(role, None) if role_map is not None and isinstance(role, str) else role
    calls_only = mapped == "assistant" and has_tool_calls(m) and m.get(content_key) is None
    for key in (role_key,) if calls_only else (role_key, content_key):
        if key not in m or m[key] is None:
            what = "no" if key not in m else "a null"
            raise RecordError(
                f"message has {what} {key!r} key: {_short(dict(m))}; give every message a "
                f"{role_key!r} and a {content_key!r}",
                field=field,
                reason="missing_field",
                value=m,
            )
    content = m.get(content_key)
    if mapped not in ROLES:
        valid = ", ".join(role_map) if role_map is not None else ", ".join(ROLES)
        raise RecordError(
            f"unknown role {role!r}; use one of {valid}",
            field=f"{field}.{role_key}",
            reason="unknown_role",
            value=role,
        )
    if isinstance(content, list):
        raise RecordError(
            f"message {content_key} is a list of content parts {_short(content)}; only text is supported: "
            "join the text parts into one string",
            field=f"{field}.{content_key}",
            reason="wrong_type",
            value=content,
        )
    if not isinstance(content, str) and not calls_only:
        raise RecordError(
            f"message {content_key} must be a string, got {type(content).__name__} {_short(content)}; "
            "give the message text as a string",
            field=f"{field}.{content_key}",
            reason="wrong_type",
            value=content,
        )
    # An assistant turn that only calls tools may have no text (content null, as OpenAI writes it).
    return {"role": mapped, "content": content, **message_extras(m, field, mapped)}


def check_responses(
    chosen: Any, rejected: Any, *, allow_empty: bool = False, fields: tuple[str, str] = ("chosen", "rejected")
) -> None:
    """Reject a pair whose responses are empty (``empty_response``) or the same (``identical_pair``).

    Responses equal after stripping surrounding whitespace count as identical: they carry no
    preference signal and often tokenize to the same ids.
    """
    if not allow_empty:
        for value, field in ((chosen, fields[0]), (rejected, fields[1])):
            content = _content(value)
            if not content.strip():
                raise RecordError(
                    f"the response is empty ({content!r}); fix the row or pass --option allow_empty_response=true",
                    field=field,
                    reason="empty_response",
                    value=value,
                )
    c, r = _flat(chosen), _flat(rejected)
    if c.strip() == r.strip():
        raise RecordError(
            f"chosen and rejected are the same response ({_short(_content(chosen))}); "
            "a pair needs two different responses: fix or remove the row",
            field=fields[1],
            reason="identical_pair",
            value=rejected,
        )


def _content(value: Any) -> str:
    if isinstance(value, list):
        # A tool call is a response even when the turn has no text.
        return "".join(
            str(m.get("tool_calls")) if has_tool_calls(m) else str(m.get("content") or "")
            for m in value
            if isinstance(m, Mapping)
        )
    return value if isinstance(value, str) else str(value)


def _flat(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\x00".join(
            f"{m.get('role')}\x01{m.get('content')}\x01{m.get('tool_calls')}"
            for m in value
            if isinstance(m, Mapping)
        )
    return str(value)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
