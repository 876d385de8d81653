"""The conversion pipeline end to end: outputs, stats, rejects, margins, determinism, atomicity."""

from __future__ import annotations

import copy
import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import HH_RLHF, read_hh_rows

import dataset_formats as df
from dataset_formats.conversion import ConvertStats, convert, encode_rows
from dataset_formats.errors import OptionError, OutputExistsError, RecordError, UnknownFormatError
from dataset_formats.records import PreferencePair
from dataset_formats.schema import PAIR_COLUMNS
from dataset_formats.writing import PairWriter, remove_stale_temporaries

FOUR = list(PAIR_COLUMNS)


def write_jsonl_gz(path: Path, rows: list) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for row in rows:
            fh.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


@pytest.fixture(scope="module")
def minilm(minilm_path):
    from dataset_formats.encoding import load_tokenizer

    return load_tokenizer(minilm_path)


@pytest.fixture(scope="module")
def hh_file(tmp_path_factory) -> Path:
    return write_jsonl_gz(tmp_path_factory.mktemp("hh") / "hh.jsonl.gz", read_hh_rows(40))


# A small adapter registered in-process (the documented notebook API), for pipeline behaviour that
# no built-in format exercises on its own: several pairs per row, margins on only some rows, crashes.
@dataclass
class _ScoredOptions:
    scale: float = 1.0


class ScoredAdapter(df.FormatAdapter):
    name = "test-scored"
    description = "prompt p, responses a (better) / b, optional margin m, n copies"
    Options = _ScoredOptions
    required_fields = ("p", "a", "b")

    def to_pairs(self, row, options):
        if row.get("crash"):
            raise KeyError("boom")
        if not isinstance(row.get("a"), str):
            raise RecordError(
                f"must be text, got {row.get('a')!r}", field="a", reason="wrong_type", value=row.get("a")
            )
        margin = row.get("m")
        margin = margin * options.scale if isinstance(margin, (int, float)) and margin is not None else margin
        out = []
        for k in range(row.get("n", 1)):
            extra = " more" * (k * 30)
            out.append(
                PreferencePair(row["p"], " " + row["a"] + extra, " " + row["b"] + extra, margin=margin)
            )
        return out


@pytest.fixture
def scored():
    name = df.register_format(ScoredAdapter)
    yield "test-scored"
    df.unregister_format_plugin(name)


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def test_hh_rlhf_parquet_loads_with_datasets_and_matches_direct_tokenization(tmp_path, hh_file, minilm):
    out = tmp_path / "out.parquet"
    stats = convert(hh_file, out, format="hh-rlhf", tokenizer=minilm, progress=False)
    assert stats.rows_read == 40 == stats.rows_written + stats.rows_rejected
    ds = datasets.Dataset.from_parquet(str(out))
    assert FOUR == ds.column_names[:4] and ds.num_rows == stats.pairs_written == stats.rows_written
    rows = read_hh_rows(40)
    for record in ds:
        source = rows[record["source_row"]]
        assert record["input_ids_chosen"] == minilm(source["chosen"])["input_ids"]
        assert record["input_ids_rejected"] == minilm(source["rejected"])["input_ids"]
        assert record["attention_mask_chosen"] == [1] * len(record["input_ids_chosen"])


def test_must_show_whole_hh_file_minilm_and_bpe_with_chat_template(tmp_path, minilm, bpe_tokenizer):
    assert HH_RLHF.exists()
    a = convert(
        HH_RLHF,
        tmp_path / "minilm.parquet",
        format="hh-rlhf",
        tokenizer=minilm,
        max_length=512,
        on_error="skip",
        rejects=tmp_path / "rej.jsonl",
        stats_json=tmp_path / "stats.json",
    )
    assert a.rows_read == 800 and a.rows_read == a.rows_written + a.rows_rejected
    assert json.loads((tmp_path / "stats.json").read_text()) == a.to_dict()
    assert len((tmp_path / "rej.jsonl").read_text().splitlines()) == a.rows_rejected
    assert datasets.Dataset.from_parquet(str(tmp_path / "minilm.parquet")).num_rows == a.pairs_written

    b = convert(
        HH_RLHF,
        tmp_path / "bpe.parquet",
        format="hh-rlhf",
        tokenizer=bpe_tokenizer,
        chat_template="chatml",
        max_length=1024,
        on_error="skip",
    )
    assert b.rows_read == 800 == b.rows_written + b.rows_rejected
    ds = datasets.Dataset.from_parquet(str(tmp_path / "bpe.parquet"))
    assert ds.column_names[:4] == FOUR
    # Independent check: transformers' own Jinja rendering of the same messages, then tokenization.
    adapter = df.get_format("hh-rlhf")
    tok = copy.deepcopy(bpe_tokenizer)  # the session fixture has no chat template and keeps none
    tok.chat_template = (Path(df.__file__).parent.parent / "templates" / "chatml.jinja").read_text()
    rows = read_hh_rows(800)
    for record in ds.select(range(25)):
        (pair,) = adapter.to_pairs(rows[record["source_row"]], adapter.make_options({}))
        messages = pair.prompt + [{"role": "assistant", "content": pair.chosen}]
        text = tok.apply_chat_template(messages, tokenize=False)
        expected = tok(text)["input_ids"]
        if len(expected) <= 1024:
            assert record["input_ids_chosen"] == expected


def test_bad_row_under_raise_names_file_row_field_and_leaves_nothing(tmp_path, scored, minilm):
    src = write_jsonl_gz(
        tmp_path / "in.jsonl.gz", [{"p": "q", "a": "x", "b": "y"}, {"p": "q", "a": 7, "b": "y"}]
    )
    out = tmp_path / "out.parquet"
    with pytest.raises(RecordError) as info:
        convert(src, out, format=scored, tokenizer=minilm, rejects=tmp_path / "r.jsonl", progress=False)
    assert str(info.value) == f"{src}, line 2, field 'a': must be text, got 7"
    assert (info.value.path, info.value.row, info.value.line, info.value.field, info.value.reason) == (
        str(src),
        1,
        2,
        "a",
        "wrong_type",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl.gz"]


def test_malformed_line_under_raise_with_two_processes(tmp_path, scored, minilm):
    lines = [json.dumps({"p": "q", "a": f"x{i}", "b": "y"}) for i in range(30)]
    lines[17] = '{"p": "q", "a": '
    src = write_jsonl_gz(tmp_path / "in.jsonl.gz", lines)
    with pytest.raises(RecordError) as info:
        convert(
            src,
            tmp_path / "o.parquet",
            format=scored,
            tokenizer=minilm,
            num_proc=2,
            batch_size=4,
            progress=False,
        )
    assert str(info.value).startswith(f"{src}, line 18: malformed JSON (")
    assert info.value.reason == "malformed_json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl.gz"]


def test_skip_counts_rejects_by_reason_and_writes_the_rejects_file(tmp_path, scored, minilm):
    rows = [
        {"p": "q", "a": "good", "b": "bad"},
        "{not json",
        {"p": "q", "a": None, "b": "bad"},
        {"p": "q", "a": "x", "b": "y", "crash": True},
        {"p": "q", "a": "same", "b": "SAME"},  # MiniLM lowercases: identical ids
        {"p": "q", "a": "ok", "b": "no", "m": float("nan")},
        [1, 2],
    ]
    src = write_jsonl_gz(tmp_path / "in.jsonl.gz", rows)
    stats = convert(
        src,
        tmp_path / "o.parquet",
        format=scored,
        tokenizer=minilm,
        on_error="skip",
        rejects=tmp_path / "rejects.jsonl",
        progress=False,
    )
    assert (stats.rows_read, stats.rows_written, stats.rows_rejected) == (7, 1, 6)
    assert stats.rejected_by_reason == {
        "adapter_error": 1,
        "identical_tokens": 1,
        "invalid_margin": 1,
        "malformed_json": 1,
        "not_an_object": 1,
        "wrong_type": 1,
    }
    entries = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [e["row"] for e in entries] == [1, 2, 3, 4, 5, 6]
    assert [e["line"] for e in entries] == [2, 3, 4, 5, 6, 7]
    assert all(e["file"] == str(src) and e["message"].startswith(f"{src}, line {e['line']}") for e in entries)
    crash = entries[2]
    assert crash["reason"] == "adapter_error"
    assert crash["message"] == f"{src}, line 4: format 'test-scored' failed on this row: KeyError: 'boom'"
    assert entries[1]["field"] == "a" and entries[4]["field"] == "margin"
    assert pq.read_table(tmp_path / "o.parquet").column("source_row").to_pylist() == [0]


def test_pairs_of_one_row_are_rejected_separately_and_the_row_still_counts_once(tmp_path, scored, minilm):
    src = write_jsonl_gz(tmp_path / "in.jsonl.gz", [{"p": "q", "a": "x", "b": "y", "n": 3}])
    stats = convert(
        src,
        tmp_path / "o.parquet",
        format=scored,
        tokenizer=minilm,
        max_length=20,
        truncation="drop",
        rejects=tmp_path / "r.jsonl",
        progress=False,
    )
    assert (stats.rows_read, stats.rows_written, stats.rows_rejected) == (1, 1, 0)
    assert (stats.pairs_written, stats.pairs_rejected) == (1, 2)
    entries = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [(e["pair"], e["reason"], e["field"]) for e in entries] == [
        (1, "too_long", "chosen"),
        (2, "too_long", "chosen"),
    ]


def test_truncation_policy_counts(tmp_path, hh_file, minilm):
    left = convert(
        hh_file, tmp_path / "l.parquet", format="hh-rlhf", tokenizer=minilm, max_length=64, progress=False
    )
    table = pq.read_table(tmp_path / "l.parquet")
    longest = max(
        max(map(len, table.column(c).to_pylist())) for c in ("input_ids_chosen", "input_ids_rejected")
    )
    assert longest <= 64 and left.rows_truncated > 0
    assert left.pairs_prompt_truncated >= left.pairs_response_truncated
    drop = convert(
        hh_file,
        tmp_path / "d.parquet",
        format="hh-rlhf",
        tokenizer=minilm,
        max_length=64,
        truncation="drop",
        progress=False,
    )
    assert drop.rejected_by_reason.get("too_long") == drop.rows_rejected > 0
    assert drop.rows_read == drop.rows_written + drop.rows_rejected


@pytest.mark.parametrize("output", ["o.parquet", "o.arrow"])
def test_margins_on_some_rows_get_a_zero_filled_column_even_after_a_batch_without(
    tmp_path, scored, minilm, output
):
    from dataset_formats.tables import read_table

    rows = [{"p": "q", "a": f"a{i}", "b": f"b{i}"} for i in range(6)] + [
        {"p": "q", "a": "z", "b": "w", "m": 2}
    ]
    src = write_jsonl_gz(tmp_path / "in.jsonl.gz", rows)
    stats = convert(
        src,
        tmp_path / output,
        format=scored,
        tokenizer=minilm,
        batch_size=2,
        format_options={"scale": "0.5"},
        progress=False,
    )
    table = read_table(tmp_path / output)
    assert stats.margin and table.column_names == [*FOUR, "margin", "source_row"]
    assert table.column("margin").to_pylist() == [0.0] * 6 + [1.0]
    in_memory, _ = encode_rows(rows, format=scored, tokenizer=minilm, format_options={"scale": 0.5})
    assert in_memory.equals(table.replace_schema_metadata(None))
    no_margin = convert(
        src,
        tmp_path / "n.parquet",
        format=scored,
        tokenizer=minilm,
        progress=False,
        batch_size=2,
        on_error="skip",
    )
    assert no_margin.margin


@pytest.mark.parametrize("num_proc", [1, 2])
def test_output_is_byte_identical_across_runs_and_processes(tmp_path, hh_file, minilm, num_proc):
    first = convert(
        hh_file,
        tmp_path / "a.parquet",
        format="hh-rlhf",
        tokenizer=minilm,
        max_length=128,
        batch_size=7,
        progress=False,
    )
    again = convert(
        hh_file,
        tmp_path / "b.parquet",
        format="hh-rlhf",
        tokenizer=minilm,
        max_length=128,
        batch_size=7,
        num_proc=num_proc,
        progress=False,
    )
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    assert first.to_dict() | {"seconds": 0, "output": ""} == again.to_dict() | {"seconds": 0, "output": ""}


def test_arrow_and_datasets_folder_outputs(tmp_path, hh_file, minilm):
    convert(hh_file, tmp_path / "o.parquet", format="hh-rlhf", tokenizer=minilm, progress=False)
    reference = pq.read_table(tmp_path / "o.parquet").to_pydict()
    convert(hh_file, tmp_path / "o.arrow", format="hh-rlhf", tokenizer=minilm, progress=False)
    assert datasets.Dataset.from_file(str(tmp_path / "o.arrow")).to_dict() == reference
    with pa.ipc.open_stream(str(tmp_path / "o.arrow")) as reader:
        assert reader.read_all().to_pydict() == reference
    convert(hh_file, tmp_path / "folder", format="hh-rlhf", tokenizer=minilm, progress=False)
    folder = datasets.load_from_disk(str(tmp_path / "folder"))
    assert folder.column_names[:4] == FOUR and folder.to_dict() == reference
    assert _temporaries(tmp_path) == []


def test_existing_outputs_need_overwrite(tmp_path, hh_file, minilm):
    out = tmp_path / "o.parquet"
    out.write_text("precious")
    with pytest.raises(OutputExistsError) as info:
        convert(hh_file, out, format="hh-rlhf", tokenizer=minilm, progress=False)
    assert str(info.value) == f"{out}: output already exists; pass --overwrite to replace it"
    assert out.read_text() == "precious"
    stats_file = tmp_path / "s.json"
    stats_file.write_text("{}")
    with pytest.raises(OutputExistsError, match="s.json: output already exists"):
        convert(hh_file, tmp_path / "new.parquet", format="hh-rlhf", tokenizer=minilm, stats_json=stats_file)
    assert not (tmp_path / "new.parquet").exists()
    convert(hh_file, out, format="hh-rlhf", tokenizer=minilm, overwrite=True, progress=False)
    assert pq.read_table(out).num_rows > 0
    folder = tmp_path / "folder"
    folder.mkdir()
    convert(hh_file, folder, format="hh-rlhf", tokenizer=minilm, overwrite=True, progress=False)
    assert datasets.load_from_disk(str(folder)).num_rows > 0


def test_failing_writer_leaves_nothing_and_stale_temporaries_are_cleaned(tmp_path):
    out = tmp_path / "o.parquet"
    batch = pa.RecordBatch.from_pylist(
        [{c: [1, 2] for c in FOUR} | {"source_row": 0}], schema=df.pair_schema(with_margin=False)
    )
    with pytest.raises(RuntimeError), PairWriter(out) as writer:
        writer.write(batch)
        assert _temporaries(tmp_path)
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    dead = tmp_path / ".o.parquet.tmp-999999999-abcd"  # a pid that cannot be running
    dead.write_text("half")
    assert remove_stale_temporaries(out) == [dead]
    assert list(tmp_path.iterdir()) == []


def test_encode_rows_accepts_dicts_and_datasets(tmp_path, minilm):
    rows = read_hh_rows(12)
    table, stats = encode_rows(rows, format="hh-rlhf", tokenizer=minilm, max_length=96)
    assert (
        isinstance(stats, ConvertStats) and stats.rows_read == 12 == stats.rows_written + stats.rows_rejected
    )
    same, _ = encode_rows(datasets.Dataset.from_list(rows), format="hh-rlhf", tokenizer=minilm, max_length=96)
    assert table.equals(same) and table.column_names == [*FOUR, "source_row"]
    with pytest.raises(RecordError, match=r"^my rows, row 0 \(0-based\), field 'chosen'"):
        encode_rows([{"chosen": 3, "rejected": "x"}], format="hh-rlhf", tokenizer=minilm, source="my rows")


def test_option_errors(tmp_path, hh_file, minilm):
    with pytest.raises(UnknownFormatError, match="unknown dataset format 'nope'; available formats: "):
        convert(hh_file, tmp_path / "o.parquet", format="nope", tokenizer=minilm)
    with pytest.raises(OptionError, match="`on_error` must be one of raise, skip, got 'ignore'"):
        convert(hh_file, tmp_path / "o.parquet", format="hh-rlhf", tokenizer=minilm, on_error="ignore")
    with pytest.raises(OptionError, match="unsupported output type '.csv'"):
        convert(hh_file, tmp_path / "o.csv", format="hh-rlhf", tokenizer=minilm)
    with pytest.raises(OptionError, match="`num_proc` must be a positive integer, got 0"):
        convert(hh_file, tmp_path / "o.parquet", format="hh-rlhf", tokenizer=minilm, num_proc=0)
    assert os.listdir(tmp_path) == []


def test_without_a_template_choice_the_tokenizers_own_template_renders_conversations(bpe_tokenizer):
    rows = read_hh_rows(6)
    tok = copy.deepcopy(bpe_tokenizer)
    tok.chat_template = (Path(df.__file__).parent.parent / "templates" / "chatml.jinja").read_text()

    def ids(tokenizer, template):
        table, _ = encode_rows(rows, format="hh-rlhf", tokenizer=tokenizer, chat_template=template)
        return table.column("input_ids_chosen").to_pylist()

    assert ids(tok, None) == ids(tok, "chatml") != ids(tok, "hh-rlhf")
    # A tokenizer without a template keeps the plain hh-rlhf transcript, byte for byte.
    assert (
        ids(bpe_tokenizer, None)
        == ids(bpe_tokenizer, "hh-rlhf")
        == [bpe_tokenizer(r["chosen"])["input_ids"] for r in rows]
    )
