"""Atomic writers for paired tables: Parquet, Arrow IPC stream, or a ``datasets.save_to_disk`` folder.

Every writer writes to a temporary path in the output's own folder and moves it into place with
``os.replace`` only when :meth:`PairWriter.commit` runs, so an interrupted or failed conversion never
leaves a partial output behind. Temporary files left by a killed process are removed by the next
writer of the same output. The output kind follows the path: ``.parquet`` / ``.pq``, ``.arrow``
(Arrow IPC *stream* format, what ``datasets.Dataset.from_file`` reads), or anything else (a
folder written with ``datasets.Dataset.save_to_disk``).

Parquet output is deterministic: the same batches give a byte-identical file (fixed row-group
size, fixed compression, no timestamps in the metadata).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import OptionError, OutputExistsError
from .schema import MARGIN_COLUMN, SOURCE_ROW_COLUMN
from .tables import open_table

if TYPE_CHECKING:  # Python 3.11+ has typing.Self; annotations are not evaluated at run time
    from typing_extensions import Self

logger = logging.getLogger(__name__)

OUTPUT_KINDS = ("parquet", "arrow", "datasets")
#: Pairs per Parquet row group (independent of how the input was batched, so output is reproducible).
ROW_GROUP_SIZE = 4096
#: Schema metadata key holding the conversion settings (format, tokenizer, length policy) as JSON.
METADATA_KEY = b"reward_plugin"
_TMP_MARK = ".tmp-"


def output_kind(path: str | os.PathLike) -> str:
    """``parquet``, ``arrow`` or ``datasets`` for an output path (by suffix; no suffix = folder)."""
    suffix = Path(path).suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".arrow":
        return "arrow"
    if suffix in ("", ".hf", ".dataset"):
        return "datasets"
    raise OptionError(
        f"{os.fspath(path)}: unsupported output type {suffix!r}; use .parquet, .arrow, or a folder name "
        "without a suffix (datasets.save_to_disk)"
    )


def temporary_path(path: Path, tag: str = "") -> Path:
    """A fresh temporary name next to ``path`` that :func:`remove_stale_temporaries` recognizes."""
    return path.parent / f".{path.name}{_TMP_MARK}{os.getpid()}-{tag}{secrets.token_hex(4)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete temporaries of ``path`` left by processes that no longer run; return what was removed."""
    removed = []
    pattern = os.path.join(glob.escape(str(path.parent)), f".{glob.escape(path.name)}{_TMP_MARK}*")
    for candidate in glob.glob(pattern):
        tail = candidate.rsplit(_TMP_MARK, 1)[1]
        try:
            pid = int(tail.split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and _pid_alive(pid):
            continue
        _remove(Path(candidate))
        removed.append(Path(candidate))
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _with_margin(table: pa.Table | pa.RecordBatch, schema: pa.Schema) -> pa.Table | pa.RecordBatch:
    """Add a ``margin`` column of 0.0 (rows without a margin) so ``table`` matches ``schema``."""
    zeros = pa.array([0.0] * table.num_rows, type=pa.float32())
    position = schema.get_field_index(MARGIN_COLUMN)
    table = table.add_column(position, schema.field(MARGIN_COLUMN), zeros)
    return table.replace_schema_metadata(schema.metadata)


class PairWriter:
    """Write record batches of the paired schema to one output, atomically.

    The schema is fixed by the first batch. When a later batch carries a ``margin`` column and the
    earlier ones did not, the rows already written get ``margin = 0.0`` (rare: it means only some
    source rows give a margin); batches without ``margin`` after ones with it get 0.0 as well.

    Args:
        path: the output path; its suffix picks the kind (see :func:`output_kind`).
        overwrite: replace an existing output (otherwise :class:`OutputExistsError`).
        metadata: settings stored as JSON under the schema metadata key ``reward_plugin``.
        empty_schema: the schema of an output with no rows.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        overwrite: bool = False,
        metadata: dict[str, Any] | None = None,
        empty_schema: pa.Schema | None = None,
    ):
        self.path = Path(path)
        self.kind = output_kind(self.path)
        self.overwrite = overwrite
        self.metadata = {METADATA_KEY: json.dumps(metadata or {}, sort_keys=True).encode()}
        self.empty_schema = empty_schema
        if self.path.exists() and not overwrite:
            raise OutputExistsError(str(self.path))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path)
        self._tmp = self._temp_path()
        self._schema: pa.Schema | None = None
        self._sink: Any = None
        self._buffer: list[pa.RecordBatch] = []
        self._buffered = 0
        self.rows = 0
        self._closed = False

    def _temp_path(self) -> Path:
        return temporary_path(self.path)

    @property
    def schema(self) -> pa.Schema | None:
        """The output schema (None until the first non-empty batch)."""
        return self._schema

    # writing -----------------------------------------------------------------------------------

    def write(self, batch: pa.RecordBatch) -> None:
        """Append one batch (any size; Parquet row groups are re-cut to :data:`ROW_GROUP_SIZE`)."""
        if self._closed:
            raise RuntimeError("write() after commit() or abort()")
        if batch.num_rows == 0:
            return
        if self._schema is None:
            self._open(batch.schema.with_metadata(self.metadata))
        assert self._schema is not None
        has = MARGIN_COLUMN in batch.schema.names
        if has and MARGIN_COLUMN not in self._schema.names:
            self._add_margin_to_written()
        elif not has and MARGIN_COLUMN in self._schema.names:
            batch = _with_margin(batch, self._schema)
        batch = batch.replace_schema_metadata(self.metadata)
        if batch.schema != self._schema:
            batch = batch.cast(self._schema)
        self.rows += batch.num_rows
        self._buffer.append(batch)
        self._buffered += batch.num_rows
        while self._buffered >= ROW_GROUP_SIZE:
            self._flush(ROW_GROUP_SIZE)

    def _open(self, schema: pa.Schema) -> None:
        self._schema = schema
        if self.kind == "parquet":
            self._sink = pq.ParquetWriter(self._tmp, schema, compression="zstd")
        else:  # arrow and datasets both go through an Arrow IPC stream file
            self._sink = pa.ipc.new_stream(str(self._arrow_path()), schema)

    def _arrow_path(self) -> Path:
        return self._tmp if self.kind == "arrow" else self._tmp.with_name(self._tmp.name + ".arrow")

    def _flush(self, rows: int | None = None) -> None:
        if not self._buffer:
            return
        table = pa.Table.from_batches(self._buffer, schema=self._schema)
        take = table.num_rows if rows is None else min(rows, table.num_rows)
        head, rest = table.slice(0, take), table.slice(take)
        if self.kind == "parquet":
            self._sink.write_table(head, row_group_size=take)
        else:
            for chunk in head.to_batches():
                self._sink.write_batch(chunk)
        self._buffer = rest.combine_chunks().to_batches() if rest.num_rows else []
        self._buffered = rest.num_rows

    def _add_margin_to_written(self) -> None:
        """Rewrite what was written so far with a 0.0 ``margin`` column (schema upgrade)."""
        assert self._schema is not None
        names = self._schema.names
        # Same place as pair_schema(with_margin=True): after the four pair columns, before provenance.
        position = names.index(SOURCE_ROW_COLUMN) if SOURCE_ROW_COLUMN in names else len(names)
        new_schema = self._schema.insert(position, pa.field(MARGIN_COLUMN, pa.float32(), nullable=False))
        new_schema = new_schema.with_metadata(self.metadata)
        old_path = self._tmp if self.kind == "parquet" else self._arrow_path()
        self._sink.close()
        self._tmp = self._temp_path()
        self._open(new_schema)
        written = open_table(old_path, "parquet" if self.kind == "parquet" else "arrow")
        for part in written.iter_parts():  # Parquet row groups (kept as they were), Arrow batches
            if self.kind == "parquet":
                self._sink.write_table(_with_margin(part, new_schema), row_group_size=part.num_rows)
            else:
                self._sink.write_batch(_with_margin(part, new_schema))
        _remove(old_path)
        self._buffer = [_with_margin(b, new_schema) for b in self._buffer]

    # finishing ---------------------------------------------------------------------------------

    def commit(self) -> int:
        """Finish the output and move it into place; return the number of rows written."""
        if self._closed:
            raise RuntimeError("commit() called twice")
        try:
            if self._schema is None:
                schema = self.empty_schema
                if schema is None:
                    raise OptionError("no rows were written and no schema is known for an empty output")
                self._open(schema.with_metadata(self.metadata))
            self._flush()
            self._sink.close()
            self._sink = None
            if self.kind == "datasets":
                self._save_datasets_folder()
            if self.path.exists() and not self.overwrite:
                raise OutputExistsError(str(self.path))
            self._move_into_place()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.rows

    def _save_datasets_folder(self) -> None:
        import datasets

        arrow = self._arrow_path()
        folder = self._tmp
        dataset = datasets.Dataset.from_file(str(arrow))
        dataset.save_to_disk(str(folder))
        del dataset
        _remove(arrow)

    def _move_into_place(self) -> None:
        target_is_file = self.path.is_file() or self.path.is_symlink()
        if not self.path.exists() or (target_is_file and self._tmp.is_file()):
            os.replace(self._tmp, self.path)
            return
        # Replacing a folder (or a file by a folder): move the old one aside first.
        trash = temporary_path(self.path, "old-")
        os.replace(self.path, trash)
        try:
            os.replace(self._tmp, self.path)
        except BaseException:
            os.replace(trash, self.path)
            raise
        _remove(trash)

    def abort(self) -> None:
        """Drop everything written so far; the output path is left as it was."""
        self._closed = True
        if self._sink is not None:
            try:
                self._sink.close()
            except (OSError, pa.ArrowException) as exc:  # the sink may already be broken
                logger.debug("closing the aborted output %s failed (%s); removing it anyway", self._tmp, exc)
            self._sink = None
        _remove(self._tmp)
        _remove(self._tmp.with_name(self._tmp.name + ".arrow"))
        self._buffer = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and not self._closed:
            self.abort()
