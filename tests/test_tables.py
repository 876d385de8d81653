"""The one table reader: every kind gives the same rows, schema metadata and counts, and a table
that cannot be read is one InputFileError line naming the file."""

from __future__ import annotations

import gzip

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataset_formats.errors import InputFileError
from dataset_formats.tables import open_table, read_schema, read_table, table_kind

ROWS = [{"input_ids_chosen": [1, 2, k], "margin": float(k)} for k in range(10)]
METADATA = {b"reward_plugin": b'{"format": "test"}'}


def table() -> pa.Table:
    return pa.Table.from_pylist(ROWS).replace_schema_metadata(METADATA)


def write_all(folder) -> dict[str, object]:
    """The same ten rows as every kind of table, keyed by a name."""
    paths = {}
    paths["parquet"] = folder / "t.parquet"
    pq.write_table(table(), paths["parquet"], row_group_size=4)
    paths["parquet.gz"] = folder / "t.parquet.gz"
    paths["parquet.gz"].write_bytes(gzip.compress(paths["parquet"].read_bytes()))
    paths["arrow stream"] = folder / "s.arrow"
    with pa.ipc.new_stream(str(paths["arrow stream"]), table().schema) as sink:
        sink.write_table(table(), max_chunksize=3)
    paths["arrow file"] = folder / "f.arrow"
    with pa.ipc.new_file(str(paths["arrow file"]), table().schema) as sink:
        sink.write_table(table(), max_chunksize=3)
    paths["datasets"] = folder / "ds"
    datasets.Dataset(datasets.table.InMemoryTable(table())).save_to_disk(str(paths["datasets"]))
    paths["one split"] = folder / "dd"
    datasets.DatasetDict({"test": datasets.Dataset(table())}).save_to_disk(str(paths["one split"]))
    return paths


def test_every_kind_reads_the_same_rows_metadata_and_count(tmp_path):
    kinds = {"parquet": "parquet", "parquet.gz": "parquet", "arrow stream": "arrow", "arrow file": "arrow"}
    for name, path in write_all(tmp_path).items():
        opened = open_table(path)
        assert opened.kind == kinds.get(name, "datasets") == table_kind(path), name
        assert opened.num_rows == 10, name
        assert opened.schema.names == ["input_ids_chosen", "margin"], name
        assert read_table(path).to_pylist() == ROWS, name
        batches = list(open_table(path).iter_batches(4))
        assert max(b.num_rows for b in batches) <= 4, name
        assert [r for b in batches for r in b.to_pylist()] == ROWS, name
        if name not in ("datasets", "one split"):  # datasets keeps its own metadata key only
            assert opened.metadata[b"reward_plugin"] == METADATA[b"reward_plugin"], name
            assert read_schema(path).metadata[b"reward_plugin"] == METADATA[b"reward_plugin"], name
    parquet = open_table(tmp_path / "t.parquet")
    assert [b.num_rows for b in parquet.iter_batches()] == [4, 4, 2]  # as stored: one row group at a time
    parts = list(parquet.iter_parts())  # row groups, as the writer re-reads its own output
    assert [type(p) for p in parts] == [pa.Table] * 3 and [p.num_rows for p in parts] == [4, 4, 2]
    assert table_kind(tmp_path / "rows.jsonl") is None and table_kind(tmp_path) is None


def test_unreadable_tables_are_one_line_naming_the_file(tmp_path):
    junk_parquet, junk_arrow = tmp_path / "j.parquet", tmp_path / "j.arrow"
    junk_parquet.write_bytes(b"PAR1 not really parquet")
    junk_arrow.write_bytes(b"junk")
    not_gzip = tmp_path / "n.parquet.gz"
    not_gzip.write_bytes(b"PAR1")
    raw = tmp_path / "rows.jsonl"
    raw.write_text("{}\n")
    two = tmp_path / "two"
    datasets.DatasetDict(
        {"a": datasets.Dataset.from_list(ROWS), "b": datasets.Dataset.from_list(ROWS)}
    ).save_to_disk(str(two))
    cases = {
        tmp_path / "missing.parquet": "no such file or directory; check the path",
        junk_parquet: "is not a readable Parquet file (",
        junk_arrow: "is not a readable Arrow file (IPC stream or file) (",
        not_gzip: "has a .gz suffix but is not gzip data; decompress or rename it",
        raw: "is not a table ('.jsonl'); pass a .parquet or .arrow file or a datasets folder",
        two: f"holds splits ['a', 'b']; pass one split folder, e.g. {str(two / 'a')!r}",
    }
    for path, problem in cases.items():
        with pytest.raises(InputFileError) as info:
            open_table(path).read()
        message = str(info.value)
        assert message.startswith(f"{path}: {problem}") and "\n" not in message, message
        assert isinstance(info.value, OSError)
    with pytest.raises(
        InputFileError, match=r"j.parquet: is not a readable Parquet file .*written completely$"
    ):
        read_schema(junk_parquet)
