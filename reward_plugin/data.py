"""Turn a training/eval dataset into tokenized preference pairs the collator can pad.

Accepted inputs, checked in this order:

1. the four legacy columns ``input_ids_chosen``, ``attention_mask_chosen``, ``input_ids_rejected``,
   ``attention_mask_rejected`` (what the dataset toolkit writes), optional ``margin``;
2. current TRL's ``chosen_ids``/``rejected_ids`` (or the older ``chosen_input_ids``/
   ``rejected_input_ids``): renamed to the legacy names, attention masks of ones added;
3. text-level rows in any dataset-toolkit format (``prompt``/``chosen``/``rejected``,
   ``chosen``/``rejected`` transcripts, chat messages, LLaMA-Factory rows, ...), converted with
   :func:`dataset_formats.encode_rows` using the trainer's tokenizer.
"""

from __future__ import annotations

import logging
from typing import Any

from dataset_formats.groups import PROMPT_IDS_COLUMN, RESPONSE_IDS_COLUMN, is_group_table
from dataset_formats.on_error import DEFAULT_ON_ERROR
from dataset_formats.schema import MARGIN_COLUMN, PAIR_COLUMNS

from .errors import ConfigError, DataError
from .pairs.collators import missing_columns_message

logger = logging.getLogger(__name__)

#: Tokenized column pairs renamed to the legacy names (masks are added).
_ID_ALIASES = (("chosen_ids", "rejected_ids"), ("chosen_input_ids", "rejected_input_ids"))


def column_names(dataset: Any) -> list[str]:
    """The column names of a ``Dataset`` or ``IterableDataset`` (empty when unknown)."""
    names = getattr(dataset, "column_names", None)
    if names is None and getattr(dataset, "features", None) is not None:
        names = list(dataset.features)
    return list(names or [])


def is_tokenized(columns: list[str]) -> bool:
    """Whether ``columns`` hold tokenized pairs (legacy four columns or TRL id columns) or a grouped table."""
    return (
        all(c in columns for c in PAIR_COLUMNS)
        or is_group_table(columns)
        or any(c in columns and r in columns for c, r in _ID_ALIASES)
    )


def prepare_dataset(
    dataset: Any,
    *,
    tokenizer: Any = None,
    dataset_format: str = "auto",
    max_length: int | None = None,
    truncation: str = "left",
    chat_template: str | None = None,
    format_options: dict[str, Any] | None = None,
    on_error: str = DEFAULT_ON_ERROR,
    num_proc: int | None = None,
    name: str = "train",
) -> Any:
    """Return ``dataset`` with the four pair columns (and ``margin`` when the data has one).

    Args:
        dataset: a ``datasets.Dataset`` or ``IterableDataset`` in one of the accepted layouts.
        tokenizer: needed only for text-level data.
        dataset_format: toolkit format name of text-level data, or ``"auto"`` to detect it.
        max_length: longest sequence kept; text-level data is cut by the toolkit, tokenized
            data is cut by the collator (a warning counts the pairs affected).
        truncation: ``"left"`` or ``"right"``, the side that is cut.
        chat_template: template for conversational text data (toolkit template name or path).
        format_options: options of the toolkit format.
        on_error: ``"raise"`` raises :class:`DataError` at the first text row the toolkit
            rejects; ``"skip"`` drops such rows (a warning counts them by reason).
        num_proc: worker processes for ``Dataset.map``.
        name: ``"train"``, ``"eval"`` or an eval-set key, used in messages.

    Returns:
        A dataset of the same kind whose rows the default collator accepts.

    Raises:
        DataError: the dataset has neither tokenized pairs nor text the toolkit recognises.
    """
    columns = column_names(dataset)
    if not columns and not _is_map_style(dataset):  # a streaming dataset without declared features
        first = next(iter(dataset), None)
        columns = list(first) if isinstance(first, dict) else []
    if all(c in columns for c in PAIR_COLUMNS) or is_group_table(columns):
        prepared = dataset  # pairs, or a grouped table (reward_plugin.pairs.groups collates it)
    elif any(c in columns and r in columns for c, r in _ID_ALIASES):
        prepared = _from_id_columns(dataset, columns, num_proc)
    else:
        prepared = _from_text(
            dataset,
            columns,
            tokenizer=tokenizer,
            dataset_format=dataset_format,
            max_length=max_length,
            truncation=truncation,
            chat_template=chat_template,
            format_options=format_options,
            on_error=on_error,
            name=name,
        )
    _check_margin(prepared, name)
    if max_length is not None:
        _warn_long_pairs(prepared, max_length, truncation, name)
    return prepared


def _from_id_columns(dataset: Any, columns: list[str], num_proc: int | None) -> Any:
    chosen, rejected = next((c, r) for c, r in _ID_ALIASES if c in columns and r in columns)
    dataset = dataset.rename_columns({chosen: "input_ids_chosen", rejected: "input_ids_rejected"})
    kwargs = {"num_proc": num_proc} if _is_map_style(dataset) else {}
    return dataset.map(_add_masks, batched=True, **kwargs)


def _add_masks(batch: dict[str, list]) -> dict[str, list]:
    """All-ones attention masks for id columns that come without them (module level: picklable)."""
    return {
        "attention_mask_chosen": [[1] * len(ids) for ids in batch["input_ids_chosen"]],
        "attention_mask_rejected": [[1] * len(ids) for ids in batch["input_ids_rejected"]],
    }


def _from_text(
    dataset: Any,
    columns: list[str],
    *,
    tokenizer: Any,
    dataset_format: str,
    max_length: int | None,
    truncation: str,
    chat_template: str | None,
    format_options: dict[str, Any] | None,
    on_error: str,
    name: str,
) -> Any:
    import itertools

    import datasets

    import dataset_formats
    from dataset_formats.conversion import encode_rows

    sample = (
        dataset.select(range(min(20, len(dataset)))).to_list()
        if _is_map_style(dataset)
        else list(itertools.islice(dataset, 20))
    )
    if not sample:
        raise DataError(f"the {name} dataset has no rows (columns: {', '.join(columns) or 'none'})")
    columns = columns or sorted({key for row in sample for key in row})
    fmt = dataset_format
    if fmt == "auto":
        fmt = dataset_formats.detect_format(columns, sample)
        if fmt is None:
            raise DataError(
                missing_columns_message(columns, f"the {name} dataset")
                + "; nor is it text data of a known format: set `dataset_format` (see `reward-plugin formats`) "
                "or tokenize it with `reward-plugin convert`"
            )
    if tokenizer is None:
        raise ConfigError(
            f"the {name} dataset holds text ({fmt!r} rows); pass `processing_class` (a tokenizer) to "
            "the trainer so it can tokenize them"
        )
    try:
        table, stats = encode_rows(
            dataset,
            format=fmt,
            tokenizer=tokenizer,
            chat_template=chat_template,
            max_length=max_length,
            truncation=truncation,
            on_error=on_error,
            format_options=format_options,
            source=f"{name} dataset",
        )
    except dataset_formats.DatasetFormatError as exc:
        raise DataError(f"{exc} (reading the {name} dataset as {fmt!r} rows)") from exc
    logger.info("%s dataset converted as %r rows:\n%s", name, fmt, stats.summary())
    if stats.rows_rejected:
        reasons = ", ".join(
            f"{reason}: {count}" for reason, count in sorted(stats.rejected_by_reason.items())
        )
        logger.warning(
            "%s dataset: skipped %d of %d %r rows the toolkit could not use (%s); set dataset_on_error='raise' "
            "to stop at the first",
            name,
            stats.rows_rejected,
            stats.rows_read,
            fmt,
            reasons,
        )
    if table.num_rows == 0:
        raise DataError(f"the {name} dataset gave no pairs when read as {fmt!r} rows: {stats.summary()}")
    return datasets.Dataset(table)


def _check_margin(dataset: Any, name: str) -> None:
    features = getattr(dataset, "features", None)
    if not features or MARGIN_COLUMN not in features:
        return
    dtype = getattr(features[MARGIN_COLUMN], "dtype", None)
    if dtype is None or not (dtype.startswith(("float", "int"))):
        raise DataError(
            f"the {name} dataset's {MARGIN_COLUMN!r} column has type {features[MARGIN_COLUMN]!r}; it must be "
            "a number per pair (how much better chosen is), cast it to float or drop the column"
        )


def pair_lengths(dataset: Any) -> list[int]:
    """``max(len(chosen), len(rejected))`` of every pair of a map-style dataset, read with pyarrow.

    For a grouped table: per group, its longest sequence (prompt + longest response).
    """
    import pyarrow.compute as pc

    lengths: list[int] = []
    arrow = dataset.with_format("arrow")
    if is_group_table(column_names(dataset)):
        for batch in arrow.iter(batch_size=10_000):
            prompts = pc.list_value_length(batch.column(PROMPT_IDS_COLUMN)).to_pylist()
            responses = batch.column(RESPONSE_IDS_COLUMN).to_pylist()
            lengths.extend(p + max(map(len, r), default=0) for p, r in zip(prompts, responses))
        return lengths
    for batch in arrow.iter(batch_size=10_000):
        chosen = pc.list_value_length(batch.column("input_ids_chosen"))
        rejected = pc.list_value_length(batch.column("input_ids_rejected"))
        lengths.extend(pc.max_element_wise(chosen, rejected).to_pylist())
    return lengths


def _warn_long_pairs(dataset: Any, max_length: int, truncation: str, name: str) -> None:
    if not _is_map_style(dataset) or len(dataset) == 0:
        return
    too_long = sum(1 for n in pair_lengths(dataset) if n > max_length)
    if too_long:
        logger.warning(
            "%s dataset: %d of %d pairs have a sequence longer than max_length=%d; the collator cuts them "
            "on the %s",
            name,
            too_long,
            len(dataset),
            max_length,
            truncation,
        )


def _is_map_style(dataset: Any) -> bool:
    import datasets

    return isinstance(dataset, datasets.Dataset)
