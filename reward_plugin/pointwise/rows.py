"""Rows with one response and its attribute scores, read, checked and tokenized.

A row (HelpSteer2's layout)::

    {"prompt": "...", "response": "...", "helpfulness": 3, "correctness": 3, "coherence": 4,
     "complexity": 2, "verbosity": 1}

``prompt`` is text (HelpSteer2's multi-turn prompts, turns joined by ``<extra_id_1>User`` /
``<extra_id_1>Assistant`` lines, become messages) or a list of ``{role, content}`` messages;
``response`` is text. Every attribute is a number, or null/absent when that response was not
rated on it (left out of the loss). The prompt and response are rendered as a conversation, as
the ``helpsteer2`` pair format renders them, so pointwise and pairwise models see the same text.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dataset_formats.adapters import _fields
from dataset_formats.adapters.scores import split_helpsteer_prompt
from dataset_formats.errors import RecordError
from dataset_formats.records import PreferencePair

from ..errors import DataError

#: HelpSteer2's attributes, each rated 0-4, in the dataset's column order.
HELPSTEER2_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")


def _iter_rows(source: Any) -> Iterable[tuple[str, int, Any]]:
    """``(source name, 0-based row, row or RecordError)`` of a file or an iterable of dicts."""
    from dataset_formats.reading import iter_object_batches, iter_row_batches

    if isinstance(source, (str, Path)):
        batches = ((str(source), b) for b in iter_row_batches(Path(source), 1000))
    else:
        batches = (("<rows>", b) for b in iter_object_batches(source, 1000, "<rows>"))
    for name, batch in batches:
        for row, record in batch:
            yield name, row, record


def read_responses(
    source: Any,
    attributes: Sequence[str],
    *,
    prompt_field: str = "prompt",
    response_field: str = "response",
) -> list[dict[str, Any]]:
    """Read and check rows: ``[{"prompt": messages, "response": text, "scores": [float | nan] * K}]``.

    Args:
        source: a data file (jsonl/json/parquet/csv, .gz ok) or an iterable of dicts.
        attributes: the attribute columns, in output order.
        prompt_field, response_field: the prompt and response columns.

    Raises:
        DataError: a bad row, naming the file, row and field: a missing or non-text prompt or
            response, a non-numeric attribute, or a row with none of the attributes.
    """
    if not attributes:
        raise DataError("`attributes` is empty; name at least one score column (e.g. helpfulness)")
    out = []
    for name, row, record in _iter_rows(source):
        try:
            if isinstance(record, RecordError):
                raise record
            out.append(_read_row(record, attributes, prompt_field, response_field))
        except RecordError as exc:
            raise DataError(f"{name}, row {row} (0-based), field {exc.field!r}: {exc.detail}") from exc
    if not out:
        raise DataError(f"{source if isinstance(source, (str, Path)) else 'the rows'}: no rows")
    return out


def _read_row(row: Mapping[str, Any], attributes: Sequence[str], prompt_field: str, response_field: str):
    raw_prompt = _fields.require(row, prompt_field)
    if isinstance(raw_prompt, list):
        prompt = _fields.messages(raw_prompt, prompt_field)
    else:
        prompt = split_helpsteer_prompt(_fields.text(row, prompt_field))
    response = _fields.text(row, response_field)
    scores = []
    for attribute in attributes:
        value = _fields.number(row, attribute, optional=True)
        scores.append(math.nan if value is None else value)
    if all(math.isnan(s) for s in scores):
        raise RecordError(
            f"the row has none of the attributes {', '.join(attributes)}; rate it on at least one or remove it",
            field=attributes[0],
            reason="missing_field",
        )
    return {"prompt": prompt, "response": response, "scores": scores}


def responses_from_pairs(
    rows: Iterable[Mapping[str, Any]],
    chosen_score: str = "metadata.score_chosen",
    rejected_score: str = "metadata.score_rejected",
) -> list[dict[str, Any]]:
    """Split scored preference rows (ultrafeedback_binarized) into two pointwise rows each, with the
    attribute ``score``: ``{"prompt", "response", "score"}``."""
    out = []
    for row in rows:
        for side, field in (("chosen", chosen_score), ("rejected", rejected_score)):
            out.append(
                {
                    "prompt": row["prompt"],
                    "response": row[side],
                    "score": _fields.number_at(row, field),
                }
            )
    return out


def encode_responses(
    rows: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    *,
    max_length: int | None = None,
    truncation: str = "left",
    chat_template: str | None = None,
) -> Any:
    """Tokenize rows from :func:`read_responses` into a ``datasets.Dataset``.

    Columns: ``input_ids``, ``attention_mask``, ``labels`` (K floats, NaN where missing) and
    ``prompt_id`` (equal for rows with the same prompt: the pairs of an evaluation).
    ``truncation="left"`` cuts the oldest tokens so the response is kept.
    """
    import datasets

    from dataset_formats.rendering import effective_template_spec, load_chat_template, render_pair

    template = load_chat_template(effective_template_spec(chat_template, tokenizer), tokenizer)
    bos, eos = getattr(tokenizer, "bos_token", None), getattr(tokenizer, "eos_token", None)
    texts, prompt_ids, seen = [], [], {}
    for row in rows:
        answer = [{"role": "assistant", "content": row["response"]}]
        rendered = render_pair(
            PreferencePair(row["prompt"], answer, answer), template, bos_token=bos, eos_token=eos
        )
        texts.append(rendered.chosen)
        key = rendered.prompt
        prompt_ids.append(seen.setdefault(key, len(seen)))
    side = tokenizer.truncation_side
    tokenizer.truncation_side = truncation
    try:
        encoded = tokenizer(texts, truncation=max_length is not None, max_length=max_length)
    finally:
        tokenizer.truncation_side = side
    return datasets.Dataset.from_dict(
        {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "labels": [list(map(float, r["scores"])) for r in rows],
            "prompt_id": prompt_ids,
        }
    )
