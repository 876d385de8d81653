"""Data sources of a run: files named in a config, loaded as tokenized preference pairs.

A source is a tokenized table (``.parquet``, ``.arrow`` or a ``datasets.save_to_disk`` folder
with the four pair columns, or current TRL's ``chosen_ids``/``rejected_ids``), loaded as it is,
or raw preference data in any dataset-toolkit format, converted on the fly with
:func:`dataset_formats.convert` and the run's tokenizer. In a config a source is written
as a path, a list of paths, or a mapping::

    train_data: data/train.parquet
    train_data: {path: raw.jsonl.gz, format: hh-rlhf}
    train_data: {dataset_info: data/dataset_info.json, dataset: dpo_en_demo}   # LLaMA-Factory
    train_data: [a.parquet, {path: b.jsonl, format: chat, options: {messages: turns}}]
    train_data: {path: ultrafeedback.jsonl.gz, ties: tie}   # skip (default) | keep | tie

``ties`` says what becomes of pairs the source marks as ties (:mod:`dataset_formats.ties`); on a
tokenized table with a ``tie`` column, ``skip`` drops the tied rows, ``keep`` drops the column and
``tie`` keeps it (a table is used as it is when ``ties`` is not given).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataset_formats.groups import is_group_table
from dataset_formats.on_error import DEFAULT_ON_ERROR, ON_ERROR_CHOICES
from dataset_formats.schema import MARGIN_COLUMN, PAIR_COLUMNS, TIE_COLUMN
from dataset_formats.ties import DEFAULT_TIES, TIES_CHOICES

from ..data import is_tokenized, prepare_dataset
from ..errors import ConfigError, DataError
from .prepared import prepared_pairs, prepared_table

logger = logging.getLogger(__name__)

#: Keys of a source mapping.
SOURCE_KEYS = ("path", "format", "options", "on_error", "dataset_info", "dataset", "max_samples", "ties")


@dataclass
class DataSource:
    """One data file (or several in the same format) of a run.

    Attributes:
        paths: the files or ``datasets`` folders.
        format: the dataset-toolkit format of raw files; None means the run's ``dataset_format``.
        options: adapter options (``--option KEY=VALUE`` of ``reward-plugin convert``).
        on_error: ``raise`` (stop at the first bad row) or ``skip`` (count and drop bad rows).
        max_samples: keep only the first this many pairs.
        ties: ``skip``, ``keep`` or ``tie`` for the source's ties; None: the conversion default for
            raw data, a tokenized table as it is.
    """

    paths: list[str]
    format: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    on_error: str = DEFAULT_ON_ERROR
    max_samples: int | None = None
    ties: str | None = None


def parse_sources(value: Any, key: str) -> list[DataSource]:
    """Read the config value of ``key`` (``train_data``, ``eval_data``) into sources.

    Raises:
        ConfigError: a value of the wrong shape, an unknown key, or a LLaMA-Factory entry that
            cannot be resolved.
    """
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError(f"`{key}` is an empty list; give at least one data file")
    sources: list[DataSource] = []
    for i, item in enumerate(items):
        where = key if len(items) == 1 and not isinstance(value, list) else f"{key}[{i}]"
        if isinstance(item, (str, Path)):
            sources.append(DataSource([str(item)]))
        elif isinstance(item, Mapping):
            sources.append(_source_from_mapping(item, where))
        else:
            raise ConfigError(
                f"`{where}` must be a path or a mapping with `path` (and `format`, `options`), got {item!r}"
            )
    return sources


def _source_from_mapping(item: Mapping[str, Any], where: str) -> DataSource:
    unknown = [k for k in item if k not in SOURCE_KEYS]
    if unknown:
        raise ConfigError(f"`{where}` has an unknown key {unknown[0]!r}; its keys: {', '.join(SOURCE_KEYS)}")
    options = item.get("options") or {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"`{where}.options` must be a mapping of adapter options, got {options!r}")
    options = dict(options)
    fmt = item.get("format")
    if "dataset_info" in item or "dataset" in item:
        if not (item.get("dataset_info") and item.get("dataset")):
            raise ConfigError(f"`{where}`: `dataset_info` and `dataset` go together; give both")
        if "path" in item:
            raise ConfigError(f"`{where}`: give `path` or `dataset_info` + `dataset`, not both")
        from dataset_formats.catalogs import resolve_dataset

        resolved = resolve_dataset(item["dataset_info"], str(item["dataset"]))
        paths = list(resolved.paths)
        fmt = fmt or resolved.format
        options = {**resolved.options, **options}
    else:
        path = item.get("path")
        if not path:
            raise ConfigError(f"`{where}` needs a `path` (or `dataset_info` and `dataset`)")
        paths = [str(p) for p in path] if isinstance(path, list) else [str(path)]
    on_error = item.get("on_error", DEFAULT_ON_ERROR)
    if on_error not in ON_ERROR_CHOICES:
        raise ConfigError(f"`{where}.on_error` must be 'raise' or 'skip', got {on_error!r}")
    max_samples = item.get("max_samples")
    if max_samples is not None and (
        not isinstance(max_samples, int) or isinstance(max_samples, bool) or max_samples < 1
    ):
        raise ConfigError(f"`{where}.max_samples` must be a positive integer, got {max_samples!r}")
    if fmt is not None and not isinstance(fmt, str):
        raise ConfigError(
            f"`{where}.format` must be a format name (see `reward-plugin formats`), got {fmt!r}"
        )
    ties = item.get("ties")
    if ties is not None and ties not in TIES_CHOICES:
        raise ConfigError(f"`{where}.ties` must be one of {', '.join(TIES_CHOICES)}, got {ties!r}")
    return DataSource(paths, fmt, options, on_error, max_samples, ties)


def load_sources(
    sources: list[DataSource],
    *,
    tokenizer: Any,
    dataset_format: str = "auto",
    chat_template: str | None = None,
    max_length: int | None = None,
    truncation: str = "left",
    num_proc: int | None = None,
    name: str = "train",
    prepared_dir: str | os.PathLike | None = None,
    accept_tokenizer_mismatch: bool = False,
) -> Any:
    """Load ``sources`` as one ``datasets.Dataset`` of tokenized pairs (four columns, ``margin`` if any).

    Args:
        sources: from :func:`parse_sources`.
        tokenizer: tokenizes raw sources (tokenized tables do not need it).
        dataset_format: format of raw sources that name none (``"auto"`` detects it).
        chat_template, max_length, truncation: conversion settings of raw sources.
        num_proc: conversion worker processes.
        name: ``"train"`` or ``"eval"``, used in messages.
        prepared_dir: where raw sources are converted to (and Parquet tables copied to) Arrow
            files that are memory-mapped and reused by the other processes of a run and by later
            runs with the same inputs (:mod:`reward_plugin.stages.prepared`); None converts into
            a temporary file and loads the pairs into memory.
        accept_tokenizer_mismatch: load converted tables whose stored tokenizer identity differs
            from ``tokenizer`` (otherwise a :class:`DataError` naming both).

    Returns:
        The concatenated dataset.

    Raises:
        DataError: a source gives no pairs, or a raw source needs a tokenizer that is missing.
        dataset_formats.DatasetFormatError: a file cannot be read or converted (names file and row).
    """
    import datasets

    parts = []
    for source in sources:
        part = _load_source(
            source,
            tokenizer=tokenizer,
            dataset_format=dataset_format,
            chat_template=chat_template,
            max_length=max_length,
            truncation=truncation,
            num_proc=num_proc,
            name=name,
            prepared_dir=None if prepared_dir is None else Path(prepared_dir),
            accept_tokenizer_mismatch=accept_tokenizer_mismatch,
        )
        if source.max_samples is not None and len(part) > source.max_samples:
            part = part.select(range(source.max_samples))
        parts.append(part)
    if len(parts) == 1:
        return parts[0]
    grouped = [is_group_table(p.column_names) for p in parts]
    if all(grouped):
        return datasets.concatenate_datasets(parts)
    if any(grouped):
        raise DataError(
            f"the {name} data mixes grouped tables (convert --groups) with pair tables; give one kind, e.g. "
            "convert the grouped sources without --groups"
        )
    with_margin = any(MARGIN_COLUMN in p.column_names for p in parts)
    with_tie = any(TIE_COLUMN in p.column_names for p in parts)
    keep = [*PAIR_COLUMNS, MARGIN_COLUMN] if with_margin else list(PAIR_COLUMNS)
    keep += [TIE_COLUMN] if with_tie else []
    aligned = []
    for part in parts:
        if with_margin and MARGIN_COLUMN not in part.column_names:
            part = part.add_column(MARGIN_COLUMN, [0.0] * len(part))
        if with_tie and TIE_COLUMN not in part.column_names:
            part = part.add_column(TIE_COLUMN, [False] * len(part))
        part = part.select_columns(keep)
        aligned.append(part.cast(aligned[0].features) if aligned else part)
    return datasets.concatenate_datasets(aligned)


def _load_source(
    source: DataSource,
    *,
    tokenizer: Any,
    dataset_format: str,
    chat_template: str | None,
    max_length: int | None,
    truncation: str,
    num_proc: int | None,
    name: str,
    prepared_dir: Path | None,
    accept_tokenizer_mismatch: bool = False,
) -> Any:
    tables = [_load_table(Path(p), prepared_dir, name) for p in source.paths]
    if all(t is not None for t in tables):
        import datasets

        if tokenizer is not None and not accept_tokenizer_mismatch:
            for path in source.paths:
                _check_tokenizer(Path(path), tokenizer)

        dataset = tables[0] if len(tables) == 1 else datasets.concatenate_datasets(tables)
        dataset = _apply_ties(dataset, source.ties)
        return prepare_dataset(
            dataset, tokenizer=None, max_length=max_length, truncation=truncation, name=name
        )
    if tokenizer is None:
        raise DataError(
            f"{source.paths[0]} holds raw preference data; converting it needs a tokenizer: set `tokenizer` or a "
            "`model` whose folder has one, or convert it first with `reward-plugin convert`"
        )
    fmt = source.format or dataset_format
    if prepared_dir is not None:
        settings = {
            "format": fmt,
            "format_options": source.options,
            "chat_template": chat_template,
            "max_length": max_length,
            "truncation": truncation,
            "on_error": source.on_error,
            "num_proc": num_proc or 1,
            "ties": source.ties or DEFAULT_TIES,
        }
        dataset = prepared_pairs(source.paths, settings, tokenizer, folder=prepared_dir, name=name)
        if len(dataset) == 0:
            raise DataError(
                f"{source.paths[0]}: no pairs after conversion as {fmt!r} rows; check `format` and `max_length`"
            )
        return dataset
    from dataset_formats.conversion import convert

    with tempfile.TemporaryDirectory(prefix="reward-plugin-") as tmp:
        output = Path(tmp) / f"{name}.parquet"
        stats = convert(
            source.paths,
            output,
            format=fmt,
            tokenizer=tokenizer,
            chat_template=chat_template,
            max_length=max_length,
            truncation=truncation,
            on_error=source.on_error,
            num_proc=num_proc or 1,
            format_options=source.options,
            ties=source.ties or DEFAULT_TIES,
        )
        logger.info("%s data converted from %s:\n%s", name, ", ".join(source.paths), stats.summary())
        if stats.rows_written == 0:
            raise DataError(
                f"{source.paths[0]}: no pairs after conversion as {stats.format!r} rows ({stats.summary()}); check "
                "`format` and `max_length`"
            )
        dataset = _read_parquet(output)
    return dataset


def _check_tokenizer(path: Path, tokenizer: Any) -> None:
    """Raise when the table at ``path`` was converted with a tokenizer other than the run's."""
    from dataset_formats.tokenizer_identity import (
        describe,
        identity_mismatch,
        stored_identity,
        tokenizer_identity,
    )

    stored = stored_identity(path)
    if stored is None:
        return  # converted before identities were stored, or by another tool: nothing to compare
    difference = identity_mismatch(stored, tokenizer)
    if difference is not None:
        current = tokenizer_identity(tokenizer)
        raise DataError(
            f"{path} was converted with tokenizer {describe(stored)}, but this run's tokenizer is "
            f"{describe(current)}: {difference}; convert the data again with `--tokenizer {current['name']}`, "
            "or set `accept_tokenizer_mismatch: true` to train on it anyway"
        )


def _apply_ties(dataset: Any, ties: str | None) -> Any:
    """A tokenized table under an explicit ``ties`` policy: ``skip`` drops the rows marked as ties,
    ``keep`` drops the ``tie`` column, ``tie`` and None leave the table as it is."""
    if ties is None or ties == "tie" or TIE_COLUMN not in dataset.column_names:
        return dataset
    if ties == "skip":
        import numpy as np

        flags = np.asarray(dataset.with_format("arrow")[:][TIE_COLUMN].to_numpy(zero_copy_only=False))
        dataset = dataset.select(np.flatnonzero(~flags.astype(bool)))
    return dataset.remove_columns(TIE_COLUMN)


def _read_parquet(path: Path) -> Any:
    import datasets

    from dataset_formats.tables import read_table

    return datasets.Dataset(datasets.table.InMemoryTable(read_table(path)))


def _load_table(path: Path, prepared_dir: Path | None = None, name: str = "train") -> Any:
    """A tokenized table as a ``datasets.Dataset``, or None when ``path`` holds raw data.

    Tables are read through :mod:`dataset_formats.tables`. With ``prepared_dir`` a Parquet table
    is copied once into a memory-mapped Arrow file there.
    """
    import datasets

    from dataset_formats.tables import load_datasets_folder, read_schema, read_table, table_kind

    kind = table_kind(path)
    if kind == "datasets":
        loaded = load_datasets_folder(path)
        # Raw rows in a datasets folder are converted like any other raw input.
        return loaded if is_tokenized(loaded.column_names) else None
    if kind is None or not path.is_file() or path.name.lower().endswith(".gz"):
        return None  # raw data (a compressed Parquet file too: read as raw rows)
    if kind == "arrow":
        table = read_table(path)
        return (
            datasets.Dataset(datasets.table.InMemoryTable(table))
            if is_tokenized(table.column_names)
            else None
        )
    if not is_tokenized(read_schema(path).names):
        return None
    return (
        _read_parquet(path) if prepared_dir is None else prepared_table(path, folder=prepared_dir, name=name)
    )
