"""The conversion pipeline: raw rows -> adapter -> render -> tokenize + length policy -> Arrow output.

``convert()`` streams input files batch by batch into an atomically written output;
``encode_rows()`` does the same for in-memory rows and returns a ``pyarrow.Table``. Both return a
:class:`ConvertStats` with ``rows_read == rows_written + rows_rejected``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from .encoding import LengthPolicy, PairEncoder, load_tokenizer
from .errors import InputFileError, OptionError, OutputExistsError
from .groups import group_schema
from .on_error import DEFAULT_ON_ERROR, ON_ERROR_CHOICES
from .pipeline import BatchProcessor, ConvertStats
from .reading import DEFAULT_BATCH_SIZE, count_rows, iter_object_batches, iter_row_batches, peek_rows
from .registry import detect_format, get_format, list_formats
from .schema import MARGIN_COLUMN, TIE_COLUMN, pair_schema
from .ties import DEFAULT_TIES, check_ties
from .tokenizer_identity import IDENTITY_KEY, tokenizer_identity
from .workers import run_batches
from .writing import PairWriter, output_kind, remove_stale_temporaries, temporary_path

if TYPE_CHECKING:  # Python 3.11+ has typing.Self; annotations are not evaluated at run time
    from typing_extensions import Self


def _tokenizer_name(spec: Any, tokenizer: Any) -> str:
    return (
        spec if isinstance(spec, str) else str(getattr(tokenizer, "name_or_path", type(tokenizer).__name__))
    )


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise OptionError(f"`{name}` must be one of {', '.join(choices)}, got {value!r}")


def _resolve_format(format: str, samples: list[tuple[str, list[dict[str, Any]]]]) -> str:
    """``format`` itself, or the format detected for every source (they must agree)."""
    if format != "auto":
        get_format(format)  # UnknownFormatError lists the names
        return format
    found: dict[str, str] = {}
    for source, rows in samples:
        if not rows:
            raise OptionError(f"{source}: no readable rows to detect the dataset format from; pass --format")
        columns = sorted({key for row in rows for key in row})
        name = detect_format(columns, rows)
        if name is None:
            names = ", ".join(info.name for info in list_formats())
            raise OptionError(
                f"{source}: could not detect the dataset format from columns {columns}{_near_misses(columns)}; "
                f"pass --format with one of: {names}"
            )
        found[source] = name
    if len(set(found.values())) > 1:
        detail = ", ".join(f"{s} -> {n}" for s, n in found.items())
        raise OptionError(
            f"inputs have different formats ({detail}); convert them separately or pass --format"
        )
    return next(iter(found.values()))


def _source_batches(paths: list[Path], batch_size: int) -> Iterator[tuple[str, Any]]:
    """``(path, batch)`` of every input in order; an input without a single row is an error."""
    for path in paths:
        rows = 0
        for batch in iter_row_batches(path, batch_size):
            rows += len(batch)
            yield str(path), batch
        if rows == 0:
            raise InputFileError(
                str(path),
                "has no rows; check that it is the file you meant and that it was written completely",
            )


def _near_misses(columns: list[str]) -> str:
    """`` (column 'x' looks like 'y' of format F)`` hints for columns one typo away from a format's."""
    from .adapters._fields import near_miss

    found: dict[tuple[str, str], list[str]] = {}
    for info in list_formats():
        required = info.adapter.required_fields
        missing = [f for f in required if f not in columns]
        if not required or len(missing) != 1:
            continue
        guess = near_miss(missing[0], [c for c in columns if c not in required])
        if guess is not None:
            found.setdefault((guess, missing[0]), []).append(info.name)
    hints = [
        f"did you mean {want!r} for column {have!r}? (format {', '.join(names)})"
        for (have, want), names in found.items()
    ]
    return f"; {'; '.join(hints)}" if hints else ""


def _template_spec(chat_template: Any, tokenizer: Any) -> Any:
    from .rendering import effective_template_spec

    return effective_template_spec(chat_template, tokenizer)


def _make_processor(
    format_name: str,
    tokenizer: Any,
    chat_template: Any,
    policy: LengthPolicy,
    on_error: str,
    format_options: dict[str, Any] | None,
    groups: bool = False,
    ties: str = DEFAULT_TIES,
) -> BatchProcessor:
    adapter = get_format(format_name)
    options = adapter.make_options(format_options)
    encoder = PairEncoder(tokenizer, policy)
    template = None
    if chat_template is not None:
        from .rendering import load_chat_template

        template = load_chat_template(chat_template, tokenizer)
    check_ties(ties)
    if groups and ties == "tie":
        raise OptionError(
            "`ties` 'tie' writes a tie column of pairs, which a grouped table (--groups) has not; "
            "use ties 'skip' or 'keep' with --groups"
        )
    return BatchProcessor(
        adapter, options, encoder, template, raise_errors=on_error == "raise", groups=groups, ties=ties
    )


def convert(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    format: str = "auto",
    tokenizer: Any,
    chat_template: str | None = None,
    max_length: int | None = None,
    truncation: str = "left",
    on_error: str = DEFAULT_ON_ERROR,
    rejects: str | os.PathLike | None = None,
    num_proc: int = 1,
    format_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    stats_json: str | os.PathLike | None = None,
    trust_remote_code: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    groups: bool = False,
    ties: str = DEFAULT_TIES,
) -> ConvertStats:
    """Convert preference data files into one paired, tokenized table.

    Args:
        inputs: one or more input files (``.jsonl``, ``.json``, ``.parquet``, ``.csv``, ``.gz`` of
            those) or ``datasets.save_to_disk`` folders; all in the same format.
        output: ``.parquet``, ``.arrow`` (IPC stream) or a folder name (``datasets.save_to_disk``).
        format: a registered format name, or ``"auto"`` to detect it from the first rows.
        tokenizer: a fast tokenizer, or a folder / cached hub name to load one from.
        chat_template: a template name from ``templates/``, a ``.jinja`` path, or ``"tokenizer"``;
            None: the tokenizer's own template when it has one, else the plain hh-rlhf style.
        max_length: the longest sequence to keep (None: no limit).
        truncation: ``left`` (cut the oldest prompt tokens), ``right`` or ``drop``.
        on_error: ``raise`` (the first bad row raises and nothing is written) or ``skip`` (bad rows
            are counted and written to ``rejects``).
        rejects: a JSON Lines file for rejected rows (file, row, field, reason, message).
        num_proc: worker processes; the output is byte-identical to ``num_proc=1``.
        format_options: adapter options (``--option KEY=VALUE``).
        overwrite: replace existing output, rejects and stats files.
        progress: show a progress bar on stderr (only when stderr is a terminal).
        stats_json: write :meth:`ConvertStats.to_dict` to this file.
        trust_remote_code: allow a tokenizer with custom code (off unless you set it).
        batch_size: source rows per batch.
        groups: write the grouped table (one row per source row with its responses and pairs,
            :mod:`dataset_formats.groups`) instead of the pair table.
        ties: pairs the source marks as ties (equal scores, a tie label, strength 0): ``skip``
            them, ``keep`` them as preferences in the source's order, or write them with a
            ``tie`` column (``tie``) for the tie-aware loss (:mod:`dataset_formats.ties`).

    Returns:
        The :class:`ConvertStats` of the run.

    Raises:
        RecordError: a bad row under ``on_error="raise"`` (no output is left behind).
        InputFileError, OutputExistsError, OptionError, UnknownFormatError, TemplateError.
    """
    started = time.perf_counter()
    paths = _check_arguments(inputs, output, on_error, num_proc, [rejects, stats_json], overwrite)
    policy = LengthPolicy(max_length, truncation)
    samples = [(str(p), peek_rows(p)) for p in paths] if format == "auto" else []
    format_name = _resolve_format(format, samples)
    tok = load_tokenizer(tokenizer, trust_remote_code=trust_remote_code)
    chat_template = _template_spec(chat_template, tok)
    processor = _make_processor(
        format_name, tok, chat_template, policy, on_error, format_options, groups, ties
    )
    stats = ConvertStats(
        format=format_name,
        tokenizer=_tokenizer_name(tokenizer, tok),
        max_length=max_length,
        truncation=truncation,
        inputs=[str(p) for p in paths],
        output=str(output),
        ties_policy=ties,
    )
    metadata = {
        "format": format_name,
        "format_options": format_options or {},
        "tokenizer": stats.tokenizer,
        IDENTITY_KEY: tokenizer_identity(tok, stats.tokenizer),
        "chat_template": chat_template if isinstance(chat_template, str) else None,
        "max_length": max_length,
        "truncation": truncation,
        "groups": groups,
        "ties": ties,
    }
    batches = run_batches(processor, _source_batches(paths, batch_size), num_proc)
    files = _OutputFiles(output, rejects, stats_json, overwrite, metadata)
    _write_outputs(
        batches,
        files,
        processor.adapter.produces_margin,
        groups,
        stats,
        paths,
        progress,
        started,
        ties == "tie",
    )
    return stats


def _check_arguments(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    on_error: str,
    num_proc: int,
    side_files: list[str | os.PathLike | None],
    overwrite: bool,
) -> list[Path]:
    """The input paths, once the arguments are valid and no output would be overwritten unasked."""
    paths = [Path(inputs)] if isinstance(inputs, (str, os.PathLike)) else [Path(p) for p in inputs]
    if not paths:
        raise OptionError("no input files given")
    _check_choice("on_error", on_error, ON_ERROR_CHOICES)
    if not isinstance(num_proc, int) or num_proc < 1:
        raise OptionError(f"`num_proc` must be a positive integer, got {num_proc!r}")
    output_kind(output)
    for path in [Path(output), *(Path(p) for p in side_files if p is not None)]:
        if path.exists() and not overwrite:
            raise OutputExistsError(str(path))
    return paths


@dataclass
class _OutputFiles:
    """Where a conversion writes: the table (with its settings as metadata), rejects and stats."""

    output: str | os.PathLike
    rejects: str | os.PathLike | None
    stats_json: str | os.PathLike | None
    overwrite: bool
    metadata: dict[str, Any]


def _write_outputs(
    results: Iterable[Any],
    files: _OutputFiles,
    produces_margin: bool,
    groups: bool,
    stats: ConvertStats,
    paths: list[Path],
    progress: bool,
    started: float,
    with_tie: bool = False,
) -> None:
    """Write every batch result, then commit the table, rejects and stats together (all or nothing)."""
    empty = group_schema() if groups else pair_schema(with_margin=produces_margin, with_tie=with_tie)
    with (
        PairWriter(
            files.output, overwrite=files.overwrite, metadata=files.metadata, empty_schema=empty
        ) as writer,
        _RejectsFile(files.rejects, files.overwrite) as rejects_out,
        _progress_bar(paths, progress) as bar,
    ):
        for result in results:
            stats.add(result.stats)
            rejects_out.write(result.rejects)
            if result.batch is not None:
                writer.write(result.batch)
            bar.update(result.stats.rows_read)
        final_schema = writer.schema if writer.schema is not None else empty
        stats.margin = MARGIN_COLUMN in final_schema.names
        stats.seconds = round(time.perf_counter() - started, 3)
        if files.stats_json is not None:
            _write_json_atomically(Path(files.stats_json), stats.to_dict(), files.overwrite)
        rejects_out.commit()
        writer.commit()


def encode_rows(
    rows: Iterable[dict[str, Any]] | Any,
    *,
    format: str = "auto",
    tokenizer: Any,
    chat_template: str | None = None,
    max_length: int | None = None,
    truncation: str = "left",
    on_error: str = DEFAULT_ON_ERROR,
    format_options: dict[str, Any] | None = None,
    source: str = "<rows>",
    batch_size: int = DEFAULT_BATCH_SIZE,
    groups: bool = False,
    ties: str = DEFAULT_TIES,
) -> tuple[pa.Table, ConvertStats]:
    """Convert in-memory rows (dicts, or a ``datasets.Dataset``) into a paired ``pyarrow.Table``.

    Args:
        rows: the raw rows.
        format, tokenizer, chat_template, max_length, truncation, on_error, format_options: as in
            :func:`convert`.
        source: the name used for these rows in error messages.
        batch_size: rows per tokenizer call.
        groups: return the grouped table (:mod:`dataset_formats.groups`) instead of pairs.
        ties: ``skip``, ``keep`` or ``tie``, as in :func:`convert`.

    Returns:
        ``(table, stats)``; ``table`` has the four pair columns, ``margin`` when any pair has one
        (or the adapter always makes one), ``tie`` with ``ties="tie"``, and ``source_row`` (with
        ``groups``: the grouped columns).
    """
    started = time.perf_counter()
    _check_choice("on_error", on_error, ON_ERROR_CHOICES)
    policy = LengthPolicy(max_length, truncation)
    batches = iter_object_batches(rows, batch_size, source)
    first = next(batches, [])
    if format == "auto":
        sample = [r for _, r in first[:20] if isinstance(r, dict)]
        format_name = _resolve_format(format, [(source, sample)])
    else:
        format_name = _resolve_format(format, [])
    tok = load_tokenizer(tokenizer)
    chat_template = _template_spec(chat_template, tok)
    processor = _make_processor(
        format_name, tok, chat_template, policy, on_error, format_options, groups, ties
    )
    stats = ConvertStats(
        format=format_name,
        tokenizer=_tokenizer_name(tokenizer, tok),
        max_length=max_length,
        truncation=truncation,
        inputs=[source],
        ties_policy=ties,
    )
    parts: list[pa.RecordBatch] = []

    def all_batches() -> Iterator[tuple[str, Any]]:
        if first:
            yield source, first
        for batch in batches:
            yield source, batch

    for result in run_batches(processor, all_batches(), 1):
        stats.add(result.stats)
        if result.batch is not None:
            parts.append(result.batch)
    if groups:
        table = pa.Table.from_batches(parts, schema=group_schema())
        stats.seconds = round(time.perf_counter() - started, 3)
        return table, stats
    with_margin = processor.adapter.produces_margin or any(MARGIN_COLUMN in b.schema.names for b in parts)
    schema = pair_schema(with_margin=with_margin, with_tie=ties == "tie")
    parts = [_conform(b, schema) for b in parts]
    table = pa.Table.from_batches(parts, schema=schema)
    stats.margin = with_margin
    stats.seconds = round(time.perf_counter() - started, 3)
    return table, stats


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    if MARGIN_COLUMN in schema.names and MARGIN_COLUMN not in batch.schema.names:
        zeros = pa.array([0.0] * batch.num_rows, type=pa.float32())
        batch = batch.add_column(schema.get_field_index(MARGIN_COLUMN), schema.field(MARGIN_COLUMN), zeros)
    assert (TIE_COLUMN in schema.names) == (TIE_COLUMN in batch.schema.names)  # every batch or none
    return batch


class _RejectsFile:
    """Rejected rows as JSON Lines, written to a temporary file and moved into place on commit."""

    def __init__(self, path: str | os.PathLike | None, overwrite: bool):
        self.path = Path(path) if path is not None else None
        self._fh = None
        if self.path is not None:
            if self.path.exists() and not overwrite:
                raise OutputExistsError(str(self.path))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.path)
            self._tmp = temporary_path(self.path)
            self._fh = open(self._tmp, "w", encoding="utf-8")  # noqa: SIM115 - closed in commit/__exit__

    def write(self, entries: list[dict[str, Any]]) -> None:
        if self._fh is not None:
            for entry in entries:
                self._fh.write(json.dumps(entry, ensure_ascii=False, default=repr) + "\n")

    def commit(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            os.replace(self._tmp, self.path)  # type: ignore[arg-type]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            self._tmp.unlink(missing_ok=True)


def _write_json_atomically(path: Path, data: dict[str, Any], overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise OutputExistsError(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = temporary_path(path)
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class _progress_bar:
    """A tqdm bar on stderr over source rows (off unless ``enabled`` and stderr is a terminal)."""

    def __init__(self, paths: list[Path], enabled: bool):
        self._bar = None
        if enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            totals = [count_rows(p) for p in paths]
            total = sum(totals) if all(t is not None for t in totals) else None  # type: ignore[misc]
            self._bar = tqdm(total=total, unit=" rows", desc="convert", file=sys.stderr, dynamic_ncols=True)

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()


__all__ = ["ConvertStats", "convert", "encode_rows"]
