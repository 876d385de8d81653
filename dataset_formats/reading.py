"""Stream raw rows from input files in batches, each row with its 0-based row number.

Supported inputs: JSON Lines (``.jsonl``, ``.ndjson``), JSON (an array of objects, or JSON Lines
under a ``.json`` name), Parquet, CSV, and a ``datasets.save_to_disk`` folder; any of the
file formats may be gzip-compressed (``.gz``). JSON Lines, Parquet, CSV and ``datasets`` folders
are read batch by batch, so memory stays flat however large the file; a JSON array has to be
parsed whole. Parquet files and ``datasets`` folders are read through the one table reader,
:mod:`dataset_formats.tables`.

A row that cannot be parsed (a malformed JSON line, bytes that are not UTF-8, a value that is
not an object) is yielded as a located :class:`~dataset_formats.errors.RecordError` in place of
the row, so the pipeline can reject that row alone. A file that cannot be read at all raises
:class:`~dataset_formats.errors.InputFileError`.

Row numbers (``source_row``): for JSON Lines, row ``N`` is line ``N + 1`` of the file (blank lines
are skipped but keep their number); for the other formats it is the 0-based index of the record.
Line-oriented files (JSON Lines, CSV) also give each row its 1-based line (``RowBatch.lines``), so
messages can say ``line N`` as an editor does; a CSV row's line is where its record starts.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputFileError, RecordError
from .tables import is_datasets_folder, open_table

if TYPE_CHECKING:  # Python 3.11+ has typing.Self; annotations are not evaluated at run time
    from typing_extensions import Self

#: One row: ``(row_number, row)`` where ``row`` is a dict or the RecordError that replaced it.
Row = tuple[int, dict[str, Any] | RecordError]


@dataclass
class RowBatch:
    """A batch of rows; iterating it gives the ``(row_number, row)`` pairs.

    Attributes:
        rows: the ``(row_number, dict | RecordError)`` pairs.
        lines: the 1-based line of each row in a line-oriented file (JSON Lines, CSV), aligned
            with ``rows``; None for other inputs.
    """

    rows: list[Row] = field(default_factory=list)
    lines: list[int] | None = None

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def line_of(self) -> dict[int, int]:
        """``{row_number: line}`` (empty when the input has no lines)."""
        return dict(zip((r for r, _ in self.rows), self.lines)) if self.lines is not None else {}


DEFAULT_BATCH_SIZE = 1000
KINDS = ("jsonl", "json", "parquet", "csv", "datasets")
_SUFFIX_KIND = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
}
_GZIP_MAGIC = b"\x1f\x8b"
_CORRUPT = (EOFError, zlib.error, gzip.BadGzipFile)
#: What a text file read with ``newline=""`` counts as a line end.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def input_kind(path: str | os.PathLike) -> str:
    """The kind of an input (one of :data:`KINDS`), from its suffix; a folder is a ``datasets`` folder.

    Raises:
        InputFileError: the path is missing, unreadable, or has an unsupported suffix.
    """
    p = Path(path)
    if not p.exists():
        raise InputFileError(str(p), "no such file or directory; check the path")
    if p.is_dir():
        if is_datasets_folder(p):
            return "datasets"
        raise InputFileError(
            str(p), "is a directory, not a file or a datasets.save_to_disk folder; pass a data file instead"
        )
    name = p.name.lower()
    name = name.removesuffix(".gz")
    kind = _SUFFIX_KIND.get(os.path.splitext(name)[1])
    if kind is None:
        supported = ", ".join(sorted(_SUFFIX_KIND)) + " (optionally .gz), or a datasets folder"
        raise InputFileError(str(p), f"unsupported file type {p.suffix!r}; supported: {supported}")
    if not os.access(p, os.R_OK):
        raise InputFileError(str(p), "permission denied; make the file readable")
    return kind


def iter_row_batches(path: str | os.PathLike, batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[RowBatch]:
    """Yield the rows of ``path`` in batches of at most ``batch_size``.

    Args:
        path: an input file or ``datasets`` folder (see the module docstring for the formats).
        batch_size: rows per batch.

    Returns:
        An iterator of batches; each batch is a list of ``(row_number, dict | RecordError)``.

    Raises:
        InputFileError: the file is missing, a plain directory, unreadable or a corrupt gzip.
    """
    kind = input_kind(path)
    reader: Any = {
        "jsonl": _jsonl_rows,
        "json": _json_rows,
        "csv": _csv_rows,
    }.get(kind)
    if reader is None:  # parquet, datasets: tables (dataset_formats.tables)
        yield from _table_batches(Path(path), batch_size, kind)
        return
    batch = RowBatch(lines=[])
    for row, record, line in reader(Path(path)):
        batch.rows.append((row, record))
        if line is not None:
            batch.lines.append(line)  # type: ignore[union-attr]
        if len(batch) >= batch_size:
            yield _lines_or_none(batch)
            batch = RowBatch(lines=[])
    if batch:
        yield _lines_or_none(batch)


def _lines_or_none(batch: RowBatch) -> RowBatch:
    if batch.lines is not None and len(batch.lines) != len(batch.rows):
        batch.lines = None  # a JSON array: no lines
    return batch


def peek_rows(path: str | os.PathLike, n: int = 20) -> list[dict[str, Any]]:
    """The first ``n`` parseable rows of ``path`` (for format detection)."""
    out: list[dict[str, Any]] = []
    for batch in iter_row_batches(path, batch_size=n):
        out.extend(row for _, row in batch if isinstance(row, dict))
        if len(out) >= n:
            break
    return out[:n]


def count_rows(path: str | os.PathLike) -> int | None:
    """The number of rows when it is known without reading the data (Parquet, datasets), else None."""
    kind = input_kind(path)
    if kind == "datasets" or (kind == "parquet" and not str(path).lower().endswith(".gz")):
        return open_table(path, kind).num_rows
    return None


def _open_binary(path: Path) -> io.BufferedIOBase:
    try:
        fh = open(path, "rb")  # noqa: SIM115 - returned open: the caller closes it (``with fh``)
        magic = fh.peek(2)[:2] if hasattr(fh, "peek") else b""
    except PermissionError as exc:
        raise InputFileError(str(path), "permission denied; make the file readable") from exc
    except OSError as exc:
        raise InputFileError(str(path), f"cannot be opened: {exc.strerror or exc}") from exc
    if magic == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]
    if path.name.lower().endswith(".gz"):
        fh.close()
        raise InputFileError(str(path), "has a .gz suffix but is not gzip data; decompress or rename it")
    return fh


def _corrupt(path: Path, after: str | None, exc: BaseException) -> InputFileError:
    where = f" after {after}" if after else ""
    return InputFileError(
        str(path),
        f"corrupt or truncated gzip data{where} ({type(exc).__name__}: {exc}); "
        "re-create the file or check it with `gzip -t`",
    )


def _decode_line(raw: bytes, path: Path, row: int) -> str | RecordError:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RecordError(
            f"line is not valid UTF-8 (byte {raw[exc.start : exc.start + 1]!r} at offset {exc.start}); "
            "re-encode the file as UTF-8",
            reason="invalid_utf8",
            path=str(path),
            row=row,
            line=row + 1,
        )
    return text


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | RecordError, int]]:
    fh = _open_binary(path)
    row = -1
    try:
        with fh:
            for row, raw in enumerate(fh):
                if row == 0 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]  # UTF-8 byte-order mark
                if not raw.strip():
                    continue
                text = _decode_line(raw, path, row)
                if isinstance(text, RecordError):
                    yield row, text, row + 1
                    continue
                yield row, _parse_json_object(text, path, row), row + 1
    except _CORRUPT as exc:
        raise _corrupt(path, f"line {row + 1}" if row >= 0 else None, exc) from exc
    except OSError as exc:
        raise InputFileError(str(path), f"read failed after line {row + 1}: {exc}") from exc


def _parse_json_object(text: str, path: Path, row: int) -> dict[str, Any] | RecordError:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        snippet = text.strip()
        snippet = snippet[:60] + ("..." if len(snippet) > 60 else "")
        return RecordError(
            f"malformed JSON ({_json_msg(exc)} at column {exc.colno}): {snippet!r}; fix or remove this line",
            reason="malformed_json",
            value=snippet,
            path=str(path),
            row=row,
            line=row + 1,
        )
    return _as_object(value, path, row, line=row + 1)


def _json_msg(exc: json.JSONDecodeError) -> str:
    # Some messages of the json module end in " at" (they expect the position to follow).
    return exc.msg.removesuffix(" at")


def _as_object(value: Any, path: Path, row: int, line: int | None = None) -> dict[str, Any] | RecordError:
    if isinstance(value, dict):
        return value
    shown = repr(value)
    shown = shown[:60] + ("..." if len(shown) > 60 else "")
    return RecordError(
        f"expected a JSON object with named fields, got {type(value).__name__} {shown}; write each row as "
        'one object such as {"chosen": ..., "rejected": ...}',
        reason="not_an_object",
        value=value,
        path=str(path),
        row=row,
        line=line,
    )


def _json_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | RecordError, int | None]]:
    fh = _open_binary(path)
    with fh:
        try:
            head = fh.peek(64)[:64] if hasattr(fh, "peek") else b""
        except _CORRUPT as exc:
            raise _corrupt(path, None, exc) from exc
        if head.startswith(b"\xef\xbb\xbf"):
            head = head[3:]
        if not head.lstrip().startswith(b"["):
            # JSON Lines saved under a .json name (as `datasets` writes them).
            pass
        else:
            try:
                data = json.loads(fh.read().decode("utf-8-sig"))
            except _CORRUPT as exc:
                raise _corrupt(path, None, exc) from exc
            except UnicodeDecodeError as exc:
                raise InputFileError(
                    str(path), f"is not valid UTF-8 ({exc.reason} at byte {exc.start})"
                ) from exc
            except json.JSONDecodeError as exc:
                raise InputFileError(
                    str(path),
                    f"malformed JSON array ({_json_msg(exc)} at line {exc.lineno} column {exc.colno}); "
                    "fix the JSON, or save one object per line as JSON Lines (.jsonl) so bad rows can be skipped",
                ) from exc
            for row, value in enumerate(data):
                yield row, _as_object(value, path, row), None
            return
    yield from _jsonl_rows(path)


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | RecordError, int]]:
    csv.field_size_limit(sys.maxsize)
    fh = _open_binary(path)
    row, read = -1, 0
    try:
        with fh, io.TextIOWrapper(fh, encoding="utf-8-sig", newline="") as text:
            reader = csv.DictReader(text)
            for row, record in enumerate(reader):
                read = reader.line_num
                # The record ends on line `line_num`; quoted cells may hold line breaks.
                cells = [*record.values(), *record.get(None, [])]
                line = read - sum(len(_LINE_BREAK.findall(v)) for v in cells if isinstance(v, str))
                if None in record:
                    yield (
                        row,
                        RecordError(
                            f"has {len(reader.fieldnames or []) + len(record[None])} values but the header has "
                            f"{len(reader.fieldnames or [])} columns; quote fields that contain commas",
                            reason="malformed_csv",
                            path=str(path),
                            row=row,
                            line=line,
                        ),
                        line,
                    )
                    continue
                yield row, {k: _csv_value(v) for k, v in record.items()}, line
    except _CORRUPT as exc:
        raise _corrupt(path, f"line {read}" if read else None, exc) from exc
    except UnicodeDecodeError as exc:
        raise InputFileError(str(path), f"is not valid UTF-8 after line {read} ({exc.reason})") from exc
    except csv.Error as exc:
        raise InputFileError(str(path), f"malformed CSV after line {read}: {exc}") from exc


class _CellText:
    """Keeps the CSV cell a number was read from as ``source_text`` (for fields that want text)."""

    source_text: str

    def __new__(cls, text: str) -> Self:
        self = super().__new__(cls, text)  # type: ignore[call-arg]
        self.source_text = text
        return self

    def __reduce__(self):
        return (type(self), (self.source_text,))


class CsvInt(_CellText, int):
    """An integer read from a CSV cell; ``source_text`` keeps the cell."""


class CsvFloat(_CellText, float):
    """A float read from a CSV cell; ``source_text`` keeps the cell."""


def _csv_value(value: str | None) -> Any:
    """CSV cells are text; give numbers back as numbers and empty cells as None.

    A number keeps its cell text (``source_text``), so a text field whose value happens to look
    like a number ("4.", "2024") still reads as the text that was written.
    """
    if value is None or value == "":
        return None
    try:
        return CsvInt(value)
    except ValueError:
        pass
    try:
        return CsvFloat(value)
    except ValueError:
        return value


def _table_batches(path: Path, batch_size: int, kind: str) -> Iterator[RowBatch]:
    row = 0
    for record_batch in open_table(path, kind).iter_batches(batch_size):
        rows = record_batch.to_pylist()
        yield RowBatch([(row + i, r) for i, r in enumerate(rows)])
        row += len(rows)


def iter_object_batches(
    rows: Any, batch_size: int = DEFAULT_BATCH_SIZE, source: str = "<rows>"
) -> Iterator[RowBatch]:
    """Batch in-memory rows (an iterable of dicts or a ``datasets.Dataset``) like :func:`iter_row_batches`."""
    try:
        import datasets

        if isinstance(rows, datasets.Dataset):
            row = 0
            for record_batch in rows.with_format("arrow").iter(batch_size=batch_size):
                items = record_batch.to_pylist()
                yield RowBatch([(row + i, r) for i, r in enumerate(items)])
                row += len(items)
            return
    except ImportError:  # pragma: no cover - datasets is a dependency
        pass
    batch = RowBatch()
    for row, value in enumerate(rows):
        batch.rows.append((row, _as_object(value, Path(source), row)))
        if len(batch) >= batch_size:
            yield batch
            batch = RowBatch()
    if batch:
        yield batch
