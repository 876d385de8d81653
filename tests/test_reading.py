"""Reading raw rows: every input kind, row numbers, per-row parse errors, file errors, streaming."""

from __future__ import annotations

import csv
import gzip
import json
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataset_formats.errors import InputFileError, RecordError
from dataset_formats.reading import count_rows, input_kind, iter_row_batches, peek_rows

ROWS = [
    {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go", "score": 1},
    {"chosen": 'a, "quoted"\nline', "rejected": "b", "score": 2},
    {"chosen": "ünïcödé ✓", "rejected": "c", "score": 3},
]


def _all(path, batch_size=1000):
    return [item for batch in iter_row_batches(path, batch_size) for item in batch]


def _write_jsonl(path, rows, opener=open):
    with opener(path, "wt", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def _write_csv(path, rows, opener=open):
    with opener(path, "wt", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.parametrize(
    "name",
    [
        "d.jsonl",
        "d.jsonl.gz",
        "d.ndjson",
        "d.json",
        "d.json.gz",
        "lines.json",
        "d.parquet",
        "d.csv",
        "d.csv.gz",
        "ds",
    ],
)
def test_every_kind_gives_the_same_rows_with_row_numbers(tmp_path, name):
    path = tmp_path / name
    if name.startswith("d.json") and name != "d.jsonl" and not name.startswith("d.jsonl"):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "wt", encoding="utf-8") as fh:
            json.dump(ROWS, fh)
    elif name == "lines.json":  # JSON Lines under a .json name, as `datasets.to_json` writes it
        _write_jsonl(path, ROWS)
    elif ".jsonl" in name or name.endswith(".ndjson"):
        _write_jsonl(path, ROWS, gzip.open if name.endswith(".gz") else open)
    elif name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    elif ".csv" in name:
        _write_csv(path, ROWS, gzip.open if name.endswith(".gz") else open)
    else:
        import datasets

        datasets.Dataset.from_list(ROWS).save_to_disk(str(path))
    got = _all(path, batch_size=2)
    assert [r for r, _ in got] == [0, 1, 2]
    assert [row for _, row in got] == ROWS
    assert [len(b) for b in iter_row_batches(path, 2)] == [2, 1]


def test_malformed_json_line_is_a_row_error_and_the_other_rows_survive(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{"a": 2,\n\n{"a": 3}\n[1, 2]\n', encoding="utf-8")
    got = _all(path)
    assert [r for r, _ in got] == [0, 1, 3, 4]  # the blank line 3 keeps its number
    assert got[0][1] == {"a": 1} and got[2][1] == {"a": 3}
    error = got[1][1]
    assert isinstance(error, RecordError) and error.reason == "malformed_json"
    assert (error.row, error.line) == (1, 2)
    assert str(error).startswith(f"{path}, line 2: malformed JSON (")
    assert "'{\"a\": 2,'" in str(error)
    assert isinstance(got[3][1], RecordError) and got[3][1].reason == "not_an_object"
    assert str(got[3][1]).startswith(
        f"{path}, line 5: expected a JSON object with named fields, got list [1, 2]; "
    )


def test_bom_crlf_and_non_utf8_lines(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": "x"}\r\n{"a": "\xff\xfe"}\r\n{"a": "z"}\r\n')
    got = _all(path)
    assert got[0] == (0, {"a": "x"}) and got[2] == (2, {"a": "z"})
    assert got[1][1].reason == "invalid_utf8"
    assert str(got[1][1]) == (
        f"{path}, line 2: line is not valid UTF-8 (byte b'\\xff' at offset 7); re-encode the file as UTF-8"
    )


def test_csv_cells_numbers_and_empty_cells(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt,chosen,rejected,margin\np,c,r,1.5\np2,c2,r2,\n", encoding="utf-8")
    assert [row for _, row in _all(path)] == [
        {"prompt": "p", "chosen": "c", "rejected": "r", "margin": 1.5},
        {"prompt": "p2", "chosen": "c2", "rejected": "r2", "margin": None},
    ]


def test_csv_row_with_too_many_values_is_a_row_error(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("chosen,rejected\na,b\na,b,c\n", encoding="utf-8")
    got = _all(path)
    assert got[0][1] == {"chosen": "a", "rejected": "b"}
    assert got[1][1].reason == "malformed_csv" and f"{path}, line 3: has 3 values" in str(got[1][1])


def test_line_numbers_of_line_oriented_files(tmp_path):
    """The 1-based line an editor shows: JSON Lines line = row + 1 (blank lines counted); a CSV
    row's line is where its record starts (after the header and any quoted line breaks)."""
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"a": 1}\n\n{"a": 2}\n', encoding="utf-8")
    (batch,) = iter_row_batches(jsonl)
    assert batch.line_of() == {0: 1, 2: 3}
    csv_path = tmp_path / "d.csv"
    csv_path.write_text('chosen,rejected\n"two\nlines",b\n\nc,"x\r\ny\rz"\ne,f\n', encoding="utf-8")
    (batch,) = iter_row_batches(csv_path)
    assert [r for r, _ in batch] == [0, 1, 2]
    assert batch.line_of() == {0: 2, 1: 5, 2: 8}
    array = tmp_path / "d.json"
    array.write_text('[{"a": 1}, 7]', encoding="utf-8")
    (batch,) = iter_row_batches(array)
    assert batch.lines is None and batch.line_of() == {}
    assert str(batch.rows[1][1]).startswith(f"{array}, row 1 (0-based): expected a JSON object")


def test_file_errors_are_one_line_input_file_errors(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(InputFileError) as info:
        _all(missing)
    assert str(info.value) == f"{missing}: no such file or directory; check the path"
    assert isinstance(info.value, OSError)

    with pytest.raises(InputFileError, match="is a directory, not a file"):
        _all(tmp_path)

    odd = tmp_path / "d.txt"
    odd.write_text("x")
    with pytest.raises(InputFileError, match=r"unsupported file type '\.txt'"):
        _all(odd)

    fake_gz = tmp_path / "d.jsonl.gz"
    fake_gz.write_text('{"a": 1}\n')
    with pytest.raises(InputFileError, match="has a .gz suffix but is not gzip data"):
        _all(fake_gz)


def test_truncated_gzip_raises_after_the_rows_it_could_read(tmp_path):
    path = tmp_path / "big.jsonl.gz"
    _write_jsonl(path, [{"i": i, "text": "x" * 50 + str(i)} for i in range(3000)], gzip.open)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    seen = []
    with pytest.raises(InputFileError) as info:
        for batch in iter_row_batches(path, 100):
            seen.extend(batch)
    assert seen, "rows before the corruption are read"
    assert str(info.value).startswith(f"{path}: corrupt or truncated gzip data after line ")
    assert str(info.value).endswith("re-create the file or check it with `gzip -t`")


def test_broken_parquet_is_an_input_file_error(tmp_path):
    path = tmp_path / "d.parquet"
    path.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(InputFileError, match="is not a readable Parquet file"):
        _all(path)


def test_kind_peek_and_count(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    assert input_kind(path) == "parquet"
    assert count_rows(path) == 3
    assert peek_rows(path, 2) == ROWS[:2]
    jsonl = tmp_path / "d.jsonl"
    _write_jsonl(jsonl, ROWS)
    assert count_rows(jsonl) is None


@pytest.mark.parametrize("kind", ["jsonl.gz", "parquet", "csv"])
def test_reading_streams_in_batches(tmp_path, kind):
    """Peak Python memory while iterating stays far below the size of the data as Python objects."""
    rows = [
        {"chosen": f"chosen text number {i} " * 8, "rejected": f"rejected {i} " * 8} for i in range(20000)
    ]
    path = tmp_path / f"big.{kind}"
    if kind == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=500)
    elif kind == "csv":
        _write_csv(path, rows)
    else:
        _write_jsonl(path, rows, gzip.open)
    del rows
    tracemalloc.start()
    whole = [row for batch in iter_row_batches(path, 200) for _, row in batch]
    whole_size = tracemalloc.get_traced_memory()[0]
    n_rows = len(whole)
    del whole
    tracemalloc.stop()
    tracemalloc.start()
    n = 0
    for batch in iter_row_batches(path, 200):
        n += len(batch)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == n_rows == 20000
    assert peak < whole_size / 5, (peak, whole_size)
