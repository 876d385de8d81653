"""LLaMA-Factory: the shared dpo_en_demo.json converts; dataset_info.json entries resolve."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import LLAMAFACTORY_DEMO, full_data_file

from dataset_formats import InputFileError, OptionError, detect_format, get_format
from dataset_formats.adapters.llamafactory import resolve_dataset_info
from dataset_formats.rendering import load_chat_template, render_pair

DEMO_ENTRY = {
    "file_name": "dpo_en_demo.json",
    "ranking": True,
    "formatting": "sharegpt",
    "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
}


#: Rows in the repository's slice of dpo_en_demo.json (tests/fixtures/data/README.md), and in the whole file.
SLICE_ROWS, DEMO_ROWS = 30, 300


@pytest.fixture()
def demo_rows():
    return json.loads(LLAMAFACTORY_DEMO.read_text(encoding="utf-8"))


@pytest.mark.parametrize("whole", [False, True], ids=["slice", "whole"])
def test_demo_file_converts_every_row(whole):
    path = full_data_file("llamafactory-dpo_en_demo.json") if whole else LLAMAFACTORY_DEMO
    demo_rows = json.loads(path.read_text(encoding="utf-8"))
    assert detect_format(list(demo_rows[0]), demo_rows[:20]) == "llamafactory"
    adapter = get_format("llamafactory")
    options = adapter.make_options({})
    template = load_chat_template("chatml")
    for row in demo_rows:
        (pair,) = adapter.to_pairs(row, options)
        turns = row["conversations"]
        # independent reading of the row: system turn (if any) + alternating turns + the two replies
        roles = {"system": "system", "human": "user", "gpt": "assistant"}
        assert pair.prompt == [{"role": roles[t["from"]], "content": t["value"]} for t in turns]
        assert (pair.chosen, pair.rejected) == (row["chosen"]["value"], row["rejected"]["value"])
        text = render_pair(pair, template)
        assert text.chosen == text.prompt + row["chosen"]["value"] + "<|im_end|>\n"
    assert len(demo_rows) == (DEMO_ROWS if whole else SLICE_ROWS)


def test_dataset_info_entry_resolves_and_converts(tmp_path, demo_rows):
    shutil.copy(LLAMAFACTORY_DEMO, tmp_path / "dpo_en_demo.json")
    (tmp_path / "dataset_info.json").write_text(
        json.dumps(
            {
                "dpo_en_demo": DEMO_ENTRY,
                "alpaca_en_demo": {"file_name": "alpaca_en_demo.json"},
                "hub_only": {"hf_hub_url": "someone/prefs", "ranking": True},
                "with_images": {"file_name": "x.json", "ranking": True, "columns": {"images": "images"}},
            }
        ),
        encoding="utf-8",
    )
    path, options = resolve_dataset_info(tmp_path, "dpo_en_demo")
    assert path == tmp_path / "dpo_en_demo.json"
    assert options == {
        "formatting": "sharegpt",
        "messages": "conversations",
        "chosen": "chosen",
        "rejected": "rejected",
    }
    adapter = get_format("llamafactory")
    rows = json.loads(path.read_text(encoding="utf-8"))
    assert len(adapter.to_pairs(rows[0], adapter.make_options(options))) == 1

    with pytest.raises(
        OptionError, match=r"no dataset 'dpo_demo'; its ranking datasets: dpo_en_demo, hub_only, with_images"
    ):
        resolve_dataset_info(tmp_path / "dataset_info.json", "dpo_demo")
    with pytest.raises(OptionError, match=r"dataset 'alpaca_en_demo' is not a ranking dataset"):
        resolve_dataset_info(tmp_path, "alpaca_en_demo")
    with pytest.raises(OptionError, match=r"has no local file_name \(it points at 'someone/prefs'\)"):
        resolve_dataset_info(tmp_path, "hub_only")
    with pytest.raises(OptionError, match=r"has a 'images' column"):
        resolve_dataset_info(tmp_path, "with_images")
    with pytest.raises(InputFileError, match="no such file"):
        resolve_dataset_info(tmp_path / "nope.json", "dpo_en_demo")


def test_alpaca_entry_with_renamed_columns_and_tags(tmp_path):
    (tmp_path / "dataset_info.json").write_text(
        json.dumps(
            {
                "mine": {
                    "file_name": "mine.json",
                    "ranking": True,
                    "columns": {
                        "prompt": "question",
                        "query": "context",
                        "chosen": "good",
                        "rejected": "bad",
                    },
                },
                "mine_sharegpt": {
                    "file_name": "m.json",
                    "ranking": True,
                    "formatting": "sharegpt",
                    "columns": {
                        "messages": "messages",
                        "chosen": "chosen",
                        "rejected": "rejected",
                        "system": "sys",
                    },
                    "tags": {
                        "role_tag": "role",
                        "content_tag": "content",
                        "user_tag": "user",
                        "assistant_tag": "assistant",
                    },
                },
            }
        ),
        encoding="utf-8",
    )
    adapter = get_format("llamafactory")
    _, options = resolve_dataset_info(tmp_path, "mine")
    (pair,) = adapter.to_pairs(
        {"question": "Sum:", "context": "2+3", "good": "5", "bad": "6"}, adapter.make_options(options)
    )
    assert pair.prompt == [{"role": "user", "content": "Sum:\n2+3"}] and (pair.chosen, pair.rejected) == (
        "5",
        "6",
    )
    _, options = resolve_dataset_info(tmp_path, "mine_sharegpt")
    row = {
        "messages": [{"role": "user", "content": "Hi"}],
        "sys": "Be nice.",
        "chosen": {"role": "assistant", "content": "Hello"},
        "rejected": {"role": "assistant", "content": "Go"},
    }
    (pair,) = adapter.to_pairs(row, adapter.make_options(options))
    assert pair.prompt == [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Hi"}]
