"""The tokenizer identity travels with a converted table, and training on another tokenizer is refused.

Through the CLI as a user runs it: ``convert`` with one tokenizer, then ``train`` on a model whose
tokenizer differs (a one-line error naming both), the same with ``--accept_tokenizer_mismatch``
(trains), and on a copy of the converting tokenizer in another folder (trains).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from conftest import ROOT, build_bpe_tokenizer, tiny_llama_config
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from dataset_formats.tokenizer_identity import identity_mismatch, stored_identity
from reward_plugin.cli import main

SAMPLE = ROOT / "reward_plugin" / "sample_data" / "hh_rlhf_sample.jsonl.gz"


@pytest.fixture(scope="module")
def table(tmp_path_factory, bpe_tokenizer_path) -> Path:
    """The first 24 rows of the bundled sample converted with the 2000-token BPE tokenizer."""
    folder = tmp_path_factory.mktemp("identity")
    rows = folder / "rows.jsonl"
    import gzip

    with gzip.open(SAMPLE, "rt", encoding="utf-8") as source:
        rows.write_text("".join(line for _, line in zip(range(24), source)), encoding="utf-8")
    out = folder / "pairs.parquet"
    argv = ["convert", str(rows), "--format", "hh-rlhf", "--tokenizer", bpe_tokenizer_path, "-o", str(out)]
    assert main([*argv, "--max-length", "64", "--on-error", "skip", "--no-progress"]) == 0
    return out


def model_dir(folder: Path, tokenizer_path: str) -> Path:
    """A tiny Llama (2000-token embedding, enough for either tokenizer's ids) with that tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    torch.manual_seed(0)
    config = tiny_llama_config(vocab_size=2000, pad_token_id=tokenizer.pad_token_id)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_convert_stores_the_identity(table, bpe_tokenizer_path):
    tokenizer = AutoTokenizer.from_pretrained(bpe_tokenizer_path)
    meta = json.loads(pq.read_schema(table).metadata[b"reward_plugin"])
    identity = meta["tokenizer_identity"]
    assert identity["name"] == bpe_tokenizer_path
    assert identity["vocab_size"] == len(tokenizer) == 2000
    assert identity["special_token_ids"] == {
        "bos_token_id": tokenizer.convert_tokens_to_ids("<s>"),
        "eos_token_id": tokenizer.convert_tokens_to_ids("</s>"),
        "unk_token_id": None,
        "pad_token_id": tokenizer.convert_tokens_to_ids("<pad>"),
    }
    # An independent hash of the vocabulary file the tokenizer folder holds: every (token, id) by id.
    vocab = json.loads((Path(bpe_tokenizer_path) / "tokenizer.json").read_text())["model"]["vocab"]
    items = sorted(vocab.items(), key=lambda item: (item[1], item[0]))
    assert (
        identity["vocab_sha256"] == hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()
    )
    assert stored_identity(table) == identity
    assert identity_mismatch(identity, tokenizer) is None


def train_argv(tmp_path: Path, model: Path, table: Path) -> list[str]:
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: {model}\ntrain_data: {table}\noutput_dir: {tmp_path / 'out'}\nmax_steps: 1\n"
        "per_device_train_batch_size: 4\nsave_strategy: 'no'\nreport_to: none\n",
        encoding="utf-8",
    )
    return ["train", str(config)]


def test_training_on_another_tokenizer_is_a_one_line_error(tmp_path, table, bpe_tokenizer_path, capsys):
    other_path = tmp_path / "other-tokenizer"
    build_bpe_tokenizer(other_path, vocab_size=1000)
    model = model_dir(tmp_path / "model", str(other_path))
    assert main(train_argv(tmp_path, model, table)) != 0
    err = capsys.readouterr().err.strip().splitlines()
    stored = stored_identity(table)
    other = AutoTokenizer.from_pretrained(model)
    from dataset_formats.tokenizer_identity import tokenizer_identity

    current = tokenizer_identity(other)
    assert err[-1] == (
        f"error: {table} was converted with tokenizer '{bpe_tokenizer_path}' (vocabulary 2000, sha256 "
        f"{stored['vocab_sha256'][:8]}), but this run's tokenizer is '{model}' (vocabulary 1000, sha256 "
        f"{current['vocab_sha256'][:8]}): the vocabulary differs (2000 vs 1000 tokens); convert the data again "
        f"with `--tokenizer {model}`, or set `accept_tokenizer_mismatch: true` to train on it anyway"
    )
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.safetensors"))
    # Accepted on purpose: it trains.
    assert main([*train_argv(tmp_path, model, table), "--accept_tokenizer_mismatch", "true"]) == 0
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_the_same_tokenizer_in_another_folder_trains(tmp_path, table, bpe_tokenizer_path):
    copy = tmp_path / "copy"
    shutil.copytree(bpe_tokenizer_path, copy)
    model = model_dir(tmp_path / "model", str(copy))
    assert main(train_argv(tmp_path, model, table)) == 0
