"""The ``llamafactory`` adapter: LLaMA-Factory ranking rows (alpaca and sharegpt) and ``dataset_info.json``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..adapter import FormatAdapter
from ..catalogs import ResolvedDataset
from ..errors import InputFileError, OptionError, RecordError
from ..hookspecs import hookimpl
from ..records import Message, PreferencePair
from . import _fields


@dataclass
class LlamaFactoryOptions:
    """Options of the ``llamafactory`` adapter; names match ``dataset_info.json`` ``columns``/``tags``.

    Attributes:
        formatting: ``alpaca``, ``sharegpt`` or ``auto`` (sharegpt when the messages column exists).
        prompt: alpaca instruction column.
        query: alpaca input column (appended to the instruction after a newline).
        chosen: the chosen column (alpaca: text; sharegpt: one message object).
        rejected: the rejected column.
        system: the system prompt column.
        history: alpaca history column: ``[[user, assistant], ...]`` turns before this one.
        messages: sharegpt conversation column.
        role_tag: sharegpt key of a message's role.
        content_tag: sharegpt key of a message's text.
        user_tag: sharegpt role of the user.
        assistant_tag: sharegpt role of the assistant.
        system_tag: sharegpt role of a leading system message.
        allow_empty_response: keep pairs with an empty response.
    """

    formatting: Literal["auto", "alpaca", "sharegpt"] = "auto"
    prompt: str = "instruction"
    query: str = "input"
    chosen: str = "chosen"
    rejected: str = "rejected"
    system: str = "system"
    history: str = "history"
    messages: str = "conversations"
    role_tag: str = "from"
    content_tag: str = "value"
    user_tag: str = "human"
    assistant_tag: str = "gpt"
    system_tag: str = "system"
    allow_empty_response: bool = False


class LlamaFactoryAdapter(FormatAdapter):
    """LLaMA-Factory ranking datasets (``"ranking": true`` in ``dataset_info.json``).

    * alpaca: ``instruction``, ``input``?, ``chosen``, ``rejected`` (texts), ``system``?,
      ``history``? — the user turn is ``instruction + "\\n" + input``, as LLaMA-Factory builds it.
    * sharegpt: ``conversations`` (``{from, value}`` turns alternating human/gpt, ending with a
      human turn, optionally led by a system turn), ``chosen``/``rejected`` gpt message objects,
      ``system``?.
    """

    name = "llamafactory"
    description = (
        "LLaMA-Factory ranking rows: alpaca (instruction/input/chosen/rejected) or sharegpt (conversations)"
    )
    Options = LlamaFactoryOptions
    required_fields = ("chosen", "rejected")

    def to_pairs(self, row: Mapping[str, Any], options: LlamaFactoryOptions) -> list[PreferencePair]:
        sharegpt = options.formatting == "sharegpt" or (
            options.formatting == "auto" and options.messages in row and options.prompt not in row
        )
        if sharegpt:
            prompt, chosen, rejected = self._sharegpt(row, options)
        else:
            prompt, chosen, rejected = self._alpaca(row, options)
        _fields.check_responses(
            chosen,
            rejected,
            allow_empty=options.allow_empty_response,
            fields=(options.chosen, options.rejected),
        )
        return [PreferencePair(prompt, chosen, rejected)]

    def _alpaca(self, row: Mapping[str, Any], o: LlamaFactoryOptions) -> tuple[list[Message], str, str]:
        instruction = _fields.text(row, o.prompt)
        query = _fields.text(row, o.query, optional=True)
        prompt: list[Message] = []
        system = _fields.text(row, o.system, optional=True)
        if system:
            prompt.append({"role": "system", "content": system})
        history = row.get(o.history)
        if history:
            if not isinstance(history, list):
                raise RecordError(
                    f"expected a list of [user, assistant] turns, got {_fields._short(history)}",
                    field=o.history,
                    reason="wrong_type",
                    value=history,
                )
            for i, turn in enumerate(history):
                if (
                    not isinstance(turn, (list, tuple))
                    or len(turn) != 2
                    or not all(isinstance(t, str) for t in turn)
                ):
                    raise RecordError(
                        f"expected a [user, assistant] pair of strings, got {_fields._short(turn)}",
                        field=f"{o.history}[{i}]",
                        reason="wrong_type",
                        value=turn,
                    )
                prompt += [{"role": "user", "content": turn[0]}, {"role": "assistant", "content": turn[1]}]
        user = "\n".join(t for t in (instruction, query) if t)
        prompt.append({"role": "user", "content": user})
        return prompt, _fields.text(row, o.chosen), _fields.text(row, o.rejected)

    def _sharegpt(self, row: Mapping[str, Any], o: LlamaFactoryOptions) -> tuple[list[Message], str, str]:
        roles = {o.user_tag: "user", o.assistant_tag: "assistant", o.system_tag: "system"}
        kw = {"role_key": o.role_tag, "content_key": o.content_tag, "role_map": roles}
        turns = _fields.messages(_fields.require(row, o.messages), o.messages, **kw)
        prompt: list[Message] = []
        system = _fields.text(row, o.system, optional=True)
        if turns and turns[0]["role"] == "system":
            system, turns = turns[0]["content"], turns[1:]
        if system:
            prompt.append({"role": "system", "content": system})
        for i, m in enumerate(turns):
            expected = "user" if i % 2 == 0 else "assistant"
            if m["role"] != expected:
                raise RecordError(
                    f"turns must alternate {o.user_tag}/{o.assistant_tag} starting with {o.user_tag}; "
                    f"turn {i} is {m['role']!r}",
                    field=f"{o.messages}[{i}]",
                    reason="bad_turn_order",
                    value=m["role"],
                )
        if not turns or turns[-1]["role"] != "user":
            raise RecordError(
                f"the conversation must end with a {o.user_tag!r} turn before chosen/rejected",
                field=o.messages,
                reason="bad_turn_order",
                value=len(turns),
            )
        prompt += turns
        replies = []
        for field in (o.chosen, o.rejected):
            reply = _fields.message(_fields.require(row, field), field, **kw)
            if reply["role"] != "assistant":
                raise RecordError(
                    f"{field} must be a {o.assistant_tag!r} message, got role {reply['role']!r}",
                    field=f"{field}.{o.role_tag}",
                    reason="unknown_role",
                    value=reply["role"],
                )
            replies.append(reply["content"])
        return prompt, replies[0], replies[1]

    def detect(self, columns: list[str], sample: list[dict[str, Any]]) -> bool:
        if not super().detect(columns, sample):
            return False
        if "instruction" in columns:
            return True
        return "conversations" in columns and all(isinstance(r.get("chosen"), Mapping) for r in sample)


_COLUMN_OPTIONS = ("prompt", "query", "chosen", "rejected", "system", "history", "messages")
_TAG_OPTIONS = ("role_tag", "content_tag", "user_tag", "assistant_tag", "system_tag")
_UNSUPPORTED_COLUMNS = ("tools", "images", "videos", "audios")


def resolve_dataset_info(path: str | Path, name: str) -> tuple[Path, dict[str, str]]:
    """Find a ranking dataset in a LLaMA-Factory ``dataset_info.json``.

    Args:
        path: the ``dataset_info.json`` file, or the folder holding it.
        name: the dataset's key in that file.

    Returns:
        ``(data file path, llamafactory options)``: the file (relative to the info file's folder)
        and the options (``formatting``, column names, tags) to pass to the adapter.

    Raises:
        InputFileError: the info file is missing or not valid JSON.
        OptionError: unknown name (listing the ranking datasets), an entry that is not a ranking
            dataset, one without a local ``file_name``, or with columns this toolkit cannot use.
    """
    info_path = Path(path)
    if info_path.is_dir():
        info_path = info_path / "dataset_info.json"
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputFileError(str(info_path), "no such file") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputFileError(str(info_path), f"cannot read dataset_info: {exc}") from exc
    if not isinstance(info, dict):
        raise InputFileError(str(info_path), "dataset_info must be a JSON object of dataset entries")
    ranking = sorted(k for k, v in info.items() if isinstance(v, dict) and v.get("ranking"))
    if name not in info:
        raise OptionError(
            f"{info_path}: no dataset {name!r}; its ranking datasets: {', '.join(ranking) or 'none'}"
        )
    entry = info[name]
    if not isinstance(entry, dict) or not entry.get("ranking"):
        raise OptionError(
            f'{info_path}: dataset {name!r} is not a ranking dataset (no "ranking": true), so it has no '
            f"chosen/rejected pairs; its ranking datasets: {', '.join(ranking) or 'none'}"
        )
    if "file_name" not in entry:
        source = next(
            (entry[k] for k in ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url") if k in entry), None
        )
        raise OptionError(
            f"{info_path}: dataset {name!r} has no local file_name (it points at {source!r}); "
            "download it and add a file_name entry"
        )
    options: dict[str, str] = {"formatting": entry.get("formatting", "alpaca")}
    for key, value in (entry.get("columns") or {}).items():
        if key in _UNSUPPORTED_COLUMNS:
            raise OptionError(
                f"{info_path}: dataset {name!r} has a {key!r} column, which reward-model "
                "conversion does not support"
            )
        if key in _COLUMN_OPTIONS:
            options[key] = value
    for key, value in (entry.get("tags") or {}).items():
        if key in _TAG_OPTIONS:
            options[key] = value
    return info_path.parent / entry["file_name"], options


@hookimpl(trylast=True)
def register_formats(register):
    register(LlamaFactoryAdapter())


@hookimpl(trylast=True)
def resolve_dataset(catalog: str, name: str) -> ResolvedDataset:
    """Any catalog not claimed by a plugin is read as a LLaMA-Factory ``dataset_info.json``."""
    data_file, options = resolve_dataset_info(catalog, name)
    return ResolvedDataset((str(data_file),), "llamafactory", options)
