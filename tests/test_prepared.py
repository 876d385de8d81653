"""Prepared data: raw sources converted once into a memory-mapped Arrow file, reused until an input changes."""

from __future__ import annotations

import logging

import pyarrow.parquet as pq
import pytest
from conftest import read_hh_rows, write_jsonl
from datasets.table import MemoryMappedTable

from dataset_formats import convert
from dataset_formats.encoding import load_tokenizer
from reward_plugin.stages.sources import load_sources, parse_sources


@pytest.fixture
def log(caplog):
    caplog.set_level(logging.INFO, logger="reward_plugin")
    return caplog


def _messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def test_raw_source_is_converted_once_and_memory_mapped(tmp_path, bpe_tokenizer_path, log):
    tokenizer = load_tokenizer(bpe_tokenizer_path)
    src = write_jsonl(tmp_path / "hh.jsonl", read_hh_rows(30))
    sources = parse_sources({"path": str(src), "format": "hh-rlhf"}, "train_data")
    prepared = tmp_path / "out" / "_prepared_data"

    first = load_sources(sources, tokenizer=tokenizer, max_length=64, prepared_dir=prepared)
    assert isinstance(first.data, MemoryMappedTable) and first.cache_files
    assert sum("data converted from" in m for m in _messages(log)) == 1

    # Independent reference: the toolkit's own conversion of the same file, read into memory.
    convert([str(src)], tmp_path / "ref.parquet", format="hh-rlhf", tokenizer=tokenizer, max_length=64)
    assert first.to_dict() == pq.read_table(tmp_path / "ref.parquet").to_pydict()

    log.clear()
    again = load_sources(sources, tokenizer=tokenizer, max_length=64, prepared_dir=prepared)
    assert again.cache_files == first.cache_files and again.to_dict() == first.to_dict()
    assert not any("data converted from" in m for m in _messages(log))
    assert sum("not converted again" in m for m in _messages(log)) == 1

    # A changed setting or a changed file converts again, into a new file.
    log.clear()
    shorter = load_sources(sources, tokenizer=tokenizer, max_length=48, prepared_dir=prepared)
    write_jsonl(src, read_hh_rows(31))
    longer = load_sources(sources, tokenizer=tokenizer, max_length=64, prepared_dir=prepared)
    assert sum("data converted from" in m for m in _messages(log)) == 2
    assert len(longer) == len(first) + 1 and shorter.cache_files != first.cache_files
    assert len(list(prepared.glob("*.arrow"))) == 3


def test_tokenized_parquet_is_memory_mapped(tmp_path, bpe_tokenizer_path, log):
    tokenizer = load_tokenizer(bpe_tokenizer_path)
    src = write_jsonl(tmp_path / "hh.jsonl", read_hh_rows(20))
    table = tmp_path / "pairs.parquet"
    convert([str(src)], table, format="hh-rlhf", tokenizer=tokenizer)
    sources = parse_sources(str(table), "train_data")

    loaded = load_sources(sources, tokenizer=None, prepared_dir=tmp_path / "_prepared_data")
    assert isinstance(loaded.data, MemoryMappedTable)
    want = pq.read_table(table).to_pydict()
    assert {k: loaded[k] for k in want} == want
