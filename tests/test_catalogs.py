"""The ``resolve_dataset`` hook: a third-party plugin resolves its own catalog everywhere a catalog
is taken (``convert --dataset-info``, ``train_data: {dataset_info, dataset}``), and LLaMA-Factory's
``dataset_info.json`` still resolves through the built-in, last-asked implementation."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import read_hh_rows, write_jsonl

import dataset_formats as df
from dataset_formats import hookspecs, plugins
from reward_plugin.cli import main
from reward_plugin.stages.sources import parse_sources

CATALOG_SUFFIX = ".hh-catalog.json"


class HHCatalog:
    """A third-party catalog: ``{name: {"files": [...], "options": {...}}}`` of hh-rlhf files."""

    @staticmethod
    @hookspecs.hookimpl
    def resolve_dataset(catalog, name):
        if not catalog.endswith(CATALOG_SUFFIX):
            return None
        entry = json.loads(Path(catalog).read_text(encoding="utf-8"))[name]
        files = tuple(str(Path(catalog).parent / f) for f in entry["files"])
        return df.ResolvedDataset(files, "hh-rlhf", entry.get("options", {}))


class Garbage:
    @staticmethod
    @hookspecs.hookimpl
    def resolve_dataset(catalog, name):
        return (catalog, name)


@pytest.fixture
def hh_catalog(tmp_path):
    plugins.load_plugins().register(HHCatalog, name="hh-catalog")
    write_jsonl(tmp_path / "a.jsonl", read_hh_rows(5))
    write_jsonl(tmp_path / "b.jsonl", read_hh_rows(8)[5:])
    catalog = tmp_path / f"mine{CATALOG_SUFFIX}"
    catalog.write_text(json.dumps({"harmless": {"files": ["a.jsonl", "b.jsonl"]}}), encoding="utf-8")
    yield catalog
    plugins.pm.unregister(name="hh-catalog")


def lf_catalog(folder: Path) -> Path:
    rows = [{"instruction": "q", "input": "", "chosen": "good", "rejected": "bad"}]
    (folder / "lf.json").write_text(json.dumps(rows), encoding="utf-8")
    info = {"lf_pairs": {"file_name": "lf.json", "ranking": True}}
    (folder / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    return folder / "dataset_info.json"


def test_the_plugin_resolves_its_catalog_and_the_built_in_the_rest(hh_catalog, tmp_path):
    resolved = df.resolve_dataset(hh_catalog, "harmless")
    assert resolved == df.ResolvedDataset(
        (str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")), "hh-rlhf", {}
    )
    # a dataset_info.json is not the plugin's: LLaMA-Factory's resolver (trylast) answers
    info = lf_catalog(tmp_path)
    lf = df.resolve_dataset(tmp_path, "lf_pairs")
    assert (lf.paths, lf.format, lf.options) == (
        (str(info.parent / "lf.json"),),
        "llamafactory",
        {"formatting": "alpaca"},
    )
    impls = plugins.pm.hook.resolve_dataset.get_hookimpls()
    builtin = [i for i in impls if i.plugin_name == "dataset_formats.adapters.llamafactory"]
    assert builtin and builtin[0].trylast


def test_convert_and_train_data_take_the_plugin_catalog(hh_catalog, tmp_path, bpe_tokenizer_path):
    out = tmp_path / "out.parquet"
    args = ["convert", "--dataset-info", str(hh_catalog), "--dataset", "harmless", "--tokenizer"]
    assert main([*args, bpe_tokenizer_path, "-o", str(out), "--no-progress"]) == 0
    # both files, read as hh-rlhf (the plugin's format): one pair per row
    assert pq.read_table(out).num_rows == 8
    (source,) = parse_sources({"dataset_info": str(hh_catalog), "dataset": "harmless"}, "train_data")
    assert source.paths == [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    assert source.format == "hh-rlhf"


def test_a_bad_answer_names_the_plugin_and_an_unread_catalog_is_one_error(tmp_path):
    plugins.load_plugins().register(Garbage, name="garbage-catalog")
    try:
        with pytest.raises(df.PluginError, match=r"^plugin 'garbage-catalog': resolve_dataset returned \("):
            df.resolve_dataset(tmp_path / "x.json", "name")
    finally:
        plugins.pm.unregister(name="garbage-catalog")
    with pytest.raises(df.InputFileError, match=r"dataset_info.json: no such file$"):
        df.resolve_dataset(tmp_path, "name")
