"""The one table reader: Parquet files, Arrow IPC files and streams, and ``datasets`` folders.

Everything that reads a table (a converted table, a Parquet input, a prepared copy) goes through
:func:`open_table` (kind, schema and its metadata, row count, whole table, record batches),
:func:`read_schema` (the schema alone, cheaply) or :func:`table_kind` (is it a table at all). A file
that cannot be read raises :class:`~dataset_formats.errors.InputFileError`: one line naming the
file, what is wrong and what to do.

Kinds: ``parquet`` (``.parquet``, ``.pq``; gzip-compressed too, ``.parquet.gz``), ``arrow``
(``.arrow``: an IPC stream, as ``convert`` writes, or an IPC file) and ``datasets`` (a
``datasets.save_to_disk`` folder, or a ``DatasetDict`` folder with a single split).
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import InputFileError

KINDS = ("parquet", "arrow", "datasets")
PARQUET_SUFFIXES = (".parquet", ".pq")
ARROW_SUFFIXES = (".arrow",)
#: Files of which any one marks a ``datasets.save_to_disk`` folder.
DATASETS_FOLDER_FILES = ("state.json", "dataset_dict.json", "dataset_info.json")
_CORRUPT = (EOFError, zlib.error, gzip.BadGzipFile)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def is_datasets_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written by ``datasets.save_to_disk``."""
    p = Path(path)
    return p.is_dir() and any((p / name).exists() for name in DATASETS_FOLDER_FILES)


def table_kind(path: str | os.PathLike) -> str | None:
    """``parquet``, ``arrow`` or ``datasets`` by the path's suffix (or folder); None for anything else."""
    p = Path(path)
    if p.is_dir():
        return "datasets" if is_datasets_folder(p) else None
    name = p.name.lower().removesuffix(".gz")
    suffix = os.path.splitext(name)[1]
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in ARROW_SUFFIXES and not p.name.lower().endswith(".gz"):
        return "arrow"
    return None


@dataclass
class TableFile:
    """An open table.

    Attributes:
        path: the file or folder.
        kind: ``parquet``, ``arrow`` or ``datasets``.
        schema: its Arrow schema (with the metadata ``convert`` stored).
    """

    path: Path
    kind: str
    schema: pa.Schema
    _batches: Callable[[int | None], Iterator[pa.RecordBatch]]
    _read: Callable[[], pa.Table]
    _rows: Callable[[], int]
    _parts: Callable[[], Iterator[pa.Table]] | None = None

    @property
    def metadata(self) -> dict[bytes, bytes]:
        """The schema's key/value metadata ({} when it has none)."""
        return dict(self.schema.metadata or {})

    @property
    def num_rows(self) -> int:
        """The number of rows (from the Parquet footer or the folder, without reading the data)."""
        return self._rows()

    def iter_batches(self, batch_size: int | None = None) -> Iterator[pa.RecordBatch]:
        """The rows as record batches of at most ``batch_size`` rows (None: as stored).

        Raises:
            InputFileError: the data past the header cannot be read (names the file and the row).
        """
        row = 0
        try:
            for batch in self._batches(batch_size):
                yield batch
                row += batch.num_rows
        except (pa.ArrowException, OSError, *_CORRUPT) as exc:
            raise InputFileError(
                str(self.path),
                f"{_KIND_NAMES[self.kind]} read failed after {row} rows: {_one_line(exc)}; re-create the file",
            ) from exc

    def iter_parts(self) -> Iterator[pa.Table | pa.RecordBatch]:
        """The rows in their stored parts: a Parquet file's row groups (tables), else record batches."""
        if self._parts is None:
            yield from self.iter_batches()
            return
        try:
            yield from self._parts()
        except (pa.ArrowException, OSError, *_CORRUPT) as exc:
            raise InputFileError(
                str(self.path), f"{_KIND_NAMES[self.kind]} read failed: {_one_line(exc)}; re-create the file"
            ) from exc

    def read(self) -> pa.Table:
        """The whole table (memory-mapped where the kind allows)."""
        try:
            return self._read()
        except (pa.ArrowException, OSError, *_CORRUPT) as exc:
            raise InputFileError(
                str(self.path),
                f"{_KIND_NAMES[self.kind]} read failed: {_one_line(exc)}; re-create the file",
            ) from exc


_KIND_NAMES = {"parquet": "Parquet", "arrow": "Arrow", "datasets": "datasets folder"}


def open_table(path: str | os.PathLike, kind: str | None = None) -> TableFile:
    """Open the table at ``path`` (its kind from the suffix unless ``kind`` is given).

    Raises:
        InputFileError: missing, not a table, or unreadable (one line naming the file).
    """
    p = Path(path)
    if not p.exists():
        raise InputFileError(str(p), "no such file or directory; check the path")
    kind = kind or table_kind(p)
    if kind == "datasets":
        return _open_datasets(p)
    if kind == "parquet":
        return _open_parquet(p)
    if kind == "arrow":
        return _open_arrow(p)
    if p.is_dir():
        raise InputFileError(str(p), "is a directory, not a table file or a datasets.save_to_disk folder")
    raise InputFileError(
        str(p), f"is not a table ({p.suffix!r}); pass a .parquet or .arrow file or a datasets folder"
    )


def read_table(path: str | os.PathLike) -> pa.Table:
    """The whole table at ``path``."""
    return open_table(path).read()


def read_schema(path: str | os.PathLike) -> pa.Schema:
    """The schema of the table at ``path``, without reading its rows (nor importing ``datasets``)."""
    p = Path(path)
    if table_kind(p) == "datasets":
        arrows = sorted(p.glob("*.arrow")) or sorted(p.glob("*/*.arrow"))
        if not arrows:
            raise InputFileError(str(p), "is a datasets folder without .arrow files; save it again")
        p = arrows[0]
        kind = "arrow"
    else:
        kind = table_kind(p)
    if kind == "parquet" and not p.name.lower().endswith(".gz"):
        try:
            return pq.read_schema(p)
        except (pa.ArrowException, OSError) as exc:
            raise _unreadable(p, "parquet", exc) from exc
    return open_table(p, kind).schema


def _unreadable(path: Path, kind: str, exc: BaseException) -> InputFileError:
    what = "a readable Parquet file" if kind == "parquet" else "a readable Arrow file (IPC stream or file)"
    return InputFileError(
        str(path), f"is not {what} ({_one_line(exc)}); check that it was written completely"
    )


def _open_parquet(path: Path) -> TableFile:
    try:
        if path.name.lower().endswith(".gz"):
            with open(path, "rb") as fh:
                if fh.read(2) != b"\x1f\x8b":
                    raise InputFileError(
                        str(path), "has a .gz suffix but is not gzip data; decompress or rename it"
                    )
            source = gzip.open(path, "rb")  # noqa: SIM115 - the ParquetFile reads it as long as it lives
            pf = pq.ParquetFile(pa.PythonFile(source, mode="r"))
        else:
            pf = pq.ParquetFile(path)
    except InputFileError:
        raise
    except PermissionError as exc:
        raise InputFileError(str(path), "permission denied; make the file readable") from exc
    except (pa.ArrowException, OSError, *_CORRUPT) as exc:
        raise _unreadable(path, "parquet", exc) from exc

    def batches(batch_size: int | None) -> Iterator[pa.RecordBatch]:
        if batch_size is not None:
            yield from pf.iter_batches(batch_size=batch_size)
            return
        for group in range(pf.num_row_groups):  # one row group in memory at a time
            yield from pf.read_row_group(group).to_batches()

    def row_groups() -> Iterator[pa.Table]:
        return (pf.read_row_group(group) for group in range(pf.num_row_groups))

    return TableFile(
        path, "parquet", pf.schema_arrow, batches, pf.read, lambda: pf.metadata.num_rows, row_groups
    )


def _open_arrow(path: Path) -> TableFile:
    try:
        try:
            reader: Any = pa.ipc.open_stream(pa.memory_map(str(path)))
        except pa.ArrowInvalid:
            reader = pa.ipc.open_file(pa.memory_map(str(path)))
    except PermissionError as exc:
        raise InputFileError(str(path), "permission denied; make the file readable") from exc
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, "arrow", exc) from exc
    state: dict[str, pa.Table] = {}

    def read() -> pa.Table:
        # Read once: memory-mapped, so the whole table costs no copy, and a stream can be read once.
        if "table" not in state:
            state["table"] = reader.read_all()
        return state["table"]

    def batches(batch_size: int | None) -> Iterator[pa.RecordBatch]:
        for batch in read().to_batches():
            yield from _sliced(batch, batch_size)

    return TableFile(path, "arrow", reader.schema, batches, read, lambda: read().num_rows)


def _sliced(batch: pa.RecordBatch, batch_size: int | None) -> Iterator[pa.RecordBatch]:
    if batch_size is None or batch.num_rows <= batch_size:
        yield batch
        return
    for start in range(0, batch.num_rows, batch_size):
        yield batch.slice(start, batch_size)


def load_datasets_folder(path: str | os.PathLike) -> Any:
    """The ``datasets.Dataset`` saved in a folder (memory-mapped); a ``DatasetDict`` of one split gives that split.

    Raises:
        InputFileError: not loadable, or a ``DatasetDict`` with several splits (naming one to pass).
    """
    import datasets

    p = Path(path)
    try:
        loaded = datasets.load_from_disk(str(p))
    except Exception as exc:  # datasets raises several unrelated types for a broken folder
        raise InputFileError(
            str(p), f"is not a loadable datasets folder ({type(exc).__name__}: {exc})"
        ) from exc
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if len(splits) != 1:
            raise InputFileError(
                str(p), f"holds splits {splits}; pass one split folder, e.g. {str(p / splits[0])!r}"
            )
        loaded = loaded[splits[0]]
    return loaded


def _open_datasets(path: Path) -> TableFile:
    dataset = load_datasets_folder(path)
    table = dataset.data.table

    def batches(batch_size: int | None) -> Iterator[pa.RecordBatch]:
        if batch_size is None:
            yield from table.to_batches()
            return
        for part in dataset.with_format("arrow").iter(batch_size=batch_size):
            yield from part.combine_chunks().to_batches()

    return TableFile(path, "datasets", table.schema, batches, lambda: table, lambda: len(dataset))
