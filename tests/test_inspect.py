"""`inspect`: statistics of converted tables checked against plain-Python computations."""

from __future__ import annotations

import json
import math

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import read_hh_rows

from dataset_formats.cli import main as df_main
from dataset_formats.conversion import convert
from dataset_formats.errors import InputFileError
from dataset_formats.inspect import format_report, inspect_output


@pytest.fixture(scope="module")
def converted(tmp_path_factory, minilm_path):
    folder = tmp_path_factory.mktemp("inspect")
    src = folder / "hh.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in read_hh_rows(50)))
    out = folder / "o.parquet"
    convert(
        src, out, format="hh-rlhf", tokenizer=minilm_path, max_length=100, on_error="skip", progress=False
    )
    return out


def nearest_rank(values, p):
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def common_prefix(a, b):
    """The shared prefix as training lays a pair out: each side keeps at least one token."""
    n = 0
    while n < min(len(a), len(b)) - 1 and a[n] == b[n]:
        n += 1
    return n


def test_lengths_and_shared_prefix_match_plain_python(converted):
    table = pq.read_table(converted).to_pydict()
    report = inspect_output(converted)
    assert report["rows"] == len(table["input_ids_chosen"]) and report["kind"] == "parquet"
    for side in ("chosen", "rejected"):
        lengths = [len(x) for x in table[f"input_ids_{side}"]]
        stats = report["tokens"][side]
        assert stats["min"] == min(lengths) and stats["max"] == max(lengths) <= 100
        assert stats["mean"] == pytest.approx(sum(lengths) / len(lengths), rel=1e-12)
        for p in (50, 90, 95, 99):
            assert stats[f"p{p}"] == nearest_rank(lengths, p)
    shared = [common_prefix(a, b) for a, b in zip(table["input_ids_chosen"], table["input_ids_rejected"])]
    assert report["shared_prefix"]["p50"] == nearest_rank(shared, 50)
    assert report["shared_prefix"]["mean"] == pytest.approx(sum(shared) / len(shared), rel=1e-12)
    total = sum(len(x) for x in table["input_ids_chosen"] + table["input_ids_rejected"])
    assert report["shared_prefix"]["fraction_of_tokens"] == pytest.approx(sum(shared) / total, rel=1e-12)
    assert report["margin"] is None and report["problems"] == []
    assert report["conversion"]["format"] == "hh-rlhf" and report["conversion"]["max_length"] == 100


def test_sample_pair_is_decoded_with_the_tokenizer(converted, minilm_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path)
    report = inspect_output(converted, tokenizer=minilm_path, sample_row=3)
    row = pq.read_table(converted).slice(3, 1).to_pylist()[0]
    assert report["sample"]["row"] == 3 and report["sample"]["source_row"] == row["source_row"]
    assert report["sample"]["chosen"] == tok.decode(row["input_ids_chosen"])
    assert report["sample"]["rejected"] == tok.decode(row["input_ids_rejected"])


def test_margin_stats_and_mask_problems(tmp_path):
    ids = [[1, 2, 3], [1, 2], [4]]
    table = pa.table(
        {
            "input_ids_chosen": ids,
            "attention_mask_chosen": [[1, 1, 1], [1, 1], [1, 1]],  # row 2: mask longer than ids
            "input_ids_rejected": [[1, 2, 4], [3], [4, 5]],
            "attention_mask_rejected": [[1, 1, 1], [1], [1, 1]],
            "margin": pa.array([0.0, 1.0, 2.5], type=pa.float32()),
        }
    )
    path = tmp_path / "hand.parquet"
    pq.write_table(table, path)
    report = inspect_output(path)
    assert (
        report["margin"]["min"] == 0.0 and report["margin"]["max"] == 2.5 and report["margin"]["nonzero"] == 2
    )
    assert report["margin"]["mean"] == pytest.approx(3.5 / 3)
    assert report["margin"]["std"] == pytest.approx(
        ((0 - 3.5 / 3) ** 2 + (1 - 3.5 / 3) ** 2 + (2.5 - 3.5 / 3) ** 2) ** 0.5 / 3**0.5
    )
    assert report["problems"] == ["row 2: input_ids_chosen and attention_mask_chosen differ in length"]
    assert report["conversion"] is None
    assert report["shared_prefix"]["max"] == 2 and report["shared_prefix"]["min"] == 0
    text = format_report(report)
    assert "problem: row 2: input_ids_chosen and attention_mask_chosen differ in length" in text
    assert "margin: std" in text


def test_arrow_and_datasets_folder(tmp_path, converted):
    reference = inspect_output(converted)
    table = pq.read_table(converted)
    with pa.ipc.new_file(str(tmp_path / "f.arrow"), table.schema) as sink:  # IPC *file* format works too
        sink.write_table(table)
    datasets.Dataset.from_parquet(str(converted)).save_to_disk(str(tmp_path / "folder"))
    for path in (tmp_path / "f.arrow", tmp_path / "folder"):
        report = inspect_output(path)
        assert (
            report["tokens"] == reference["tokens"] and report["shared_prefix"] == reference["shared_prefix"]
        )


def test_cli_inspect_human_and_json(converted, minilm_path, capsys):
    assert df_main(["inspect", str(converted), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data == inspect_output(converted)
    assert df_main(["inspect", str(converted), "--tokenizer", minilm_path]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"{converted} (parquet): {data['rows']} pairs"
    assert lines[4].split() == ["tokens", "min", "p50", "p90", "p95", "p99", "max", "mean"]
    assert lines[5].split()[0] == "chosen" and int(lines[5].split()[1]) == data["tokens"]["chosen"]["min"]
    assert "margin: no margin column" in out and "--- chosen ---" in out and "[CLS]" in out


def test_cli_inspect_errors(tmp_path, capsys):
    missing = tmp_path / "nope.parquet"
    assert df_main(["inspect", str(missing)]) == 1
    assert capsys.readouterr().err == f"error: {missing}: no such file or directory; check the path\n"
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"chosen": ["a"], "rejected": ["b"]}), plain)
    assert df_main(["inspect", str(plain)]) == 1
    assert capsys.readouterr().err == (
        f"error: {plain}: has no column 'input_ids_chosen' (columns: chosen, rejected); is it a converted table?\n"
    )
    with pytest.raises(InputFileError, match="is not a readable Arrow file"):
        (tmp_path / "junk.arrow").write_bytes(b"junk")
        inspect_output(tmp_path / "junk.arrow")


def test_inspect_reports_the_prefix_training_shares(tmp_path, converted):
    """The prefix inspect reports is the one the prefix-shared collator lays out, pair by pair."""
    import numpy as np

    from dataset_formats.prefix import shared_prefix_lengths
    from reward_plugin.pairs.collators import PrefixSharedPairCollator
    from reward_plugin.pairs.layout import PREFIX

    four = ["input_ids_chosen", "attention_mask_chosen", "input_ids_rejected", "attention_mask_rejected"]
    rows = pq.read_table(converted).select(four).to_pylist()
    edge = [([5, 6, 7], [5, 6, 7, 8]), ([5, 6, 7, 8], [5, 6]), ([9], [9]), ([1, 2, 3], [1, 2, 3]), ([4], [8])]
    for c, r in edge:  # a side that is a prefix of the other, identical sides, one-token sides
        rows.append(dict(zip(four, (c, [1] * len(c), r, [1] * len(r)))))
    path = tmp_path / "edge.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    batch = PrefixSharedPairCollator(pad_token_id=0, pack=False)(rows)
    trained = (batch["packed_segments"] == PREFIX).sum(dim=1).tolist()
    assert len(trained) == len(rows) and trained[-5:] == [2, 1, 0, 2, 0]
    table = pq.read_table(path)
    by_inspect = shared_prefix_lengths(
        table.column("input_ids_chosen").combine_chunks(), table.column("input_ids_rejected").combine_chunks()
    )
    assert by_inspect.tolist() == trained
    # and in slices (a record batch of a bigger file): the same lengths
    sliced = shared_prefix_lengths(
        table.column("input_ids_chosen").combine_chunks().slice(3, 20),
        table.column("input_ids_rejected").combine_chunks().slice(3, 20),
    )
    assert sliced.tolist() == trained[3:23]
    report = inspect_output(path)["shared_prefix"]
    total = sum(len(r["input_ids_chosen"]) + len(r["input_ids_rejected"]) for r in rows)
    assert (report["min"], report["max"], report["p50"]) == (
        min(trained),
        max(trained),
        nearest_rank(trained, 50),
    )
    assert report["mean"] == pytest.approx(np.mean(trained), rel=1e-12)
    assert report["fraction_of_tokens"] == pytest.approx(sum(trained) / total, rel=1e-12)
