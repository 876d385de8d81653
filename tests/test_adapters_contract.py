"""Contract test over every registered adapter: its fixture rows convert to exactly the expected
pairs (or fail with the expected reason and field), and every pair keeps the PreferencePair
invariants, including rendering with and without a chat template."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from dataset_formats import PreferencePair, RecordError, get_format, list_formats
from dataset_formats.records import ROLES
from dataset_formats.rendering import load_chat_template, render_pair

FORMAT_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "formats"
FORMAT_NAMES = [info.name for info in list_formats()]


def load_cases(name: str) -> list[dict]:
    return json.loads((FORMAT_FIXTURES / f"{name}.json").read_text(encoding="utf-8"))["cases"]


CASES = [
    pytest.param(name, case, id=f"{name}: {case['id']}")
    for name in FORMAT_NAMES
    if (FORMAT_FIXTURES / f"{name}.json").exists()
    for case in load_cases(name)
]


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_every_adapter_has_fixtures_with_good_and_bad_rows(name):
    path = FORMAT_FIXTURES / f"{name}.json"
    assert path.exists(), f"adapter {name!r} has no fixture file {path}"
    cases = load_cases(name)
    assert sum("pairs" in c for c in cases) >= 2
    assert sum("error" in c for c in cases) >= 2
    assert json.loads(path.read_text(encoding="utf-8"))["source"]


def _is_messages(value) -> bool:
    return isinstance(value, list) and all(
        isinstance(m, dict)
        and set(m) == {"role", "content"}
        and m["role"] in ROLES
        and isinstance(m["content"], str)
        for m in value
    )


def check_invariants(adapter, pair: PreferencePair) -> None:
    assert isinstance(pair, PreferencePair)
    assert pair.prompt is None or isinstance(pair.prompt, str) or _is_messages(pair.prompt)
    for response in (pair.chosen, pair.rejected):
        assert isinstance(response, str) or (_is_messages(response) and response)
    if isinstance(pair.prompt, list):
        assert pair.prompt, "an empty prompt list must be None"
        assert pair.prompt[-1]["role"] != "assistant" or pair.meta.get("prompt_mismatch")
    if not pair.is_conversational():
        assert isinstance(pair.chosen, str) and isinstance(pair.rejected, str)
    assert pair.chosen != pair.rejected
    if adapter.produces_margin:
        assert isinstance(pair.margin, float) and math.isfinite(pair.margin) and pair.margin >= 0
    elif pair.margin is not None:
        assert math.isfinite(pair.margin)
    assert isinstance(pair.meta, dict)
    for template in (None, load_chat_template("chatml"), load_chat_template("llama3")):
        text = render_pair(pair, template, bos_token="<s>", eos_token="</s>")
        assert text.chosen.startswith(text.prompt) and text.rejected.startswith(text.prompt)
        assert text.chosen != text.rejected


def _as_dict(pair: PreferencePair) -> dict:
    out = {"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected}
    if pair.margin is not None:
        out["margin"] = pair.margin
    if pair.meta:
        out["meta"] = pair.meta
    if pair.tie is not None:
        out["tie"] = pair.tie
    return out


@pytest.mark.parametrize(("name", "case"), CASES)
def test_fixture_row(name, case):
    adapter = get_format(name)
    options = adapter.make_options(case.get("options"))
    row = copy.deepcopy(case["row"])
    if "error" in case:
        with pytest.raises(RecordError) as info:
            adapter.to_pairs(row, options)
        err = info.value
        assert (err.reason, err.field) == (case["error"]["reason"], case["error"]["field"]), str(err)
        message = str(err)
        assert "\n" not in message and message.startswith(f"field {err.field!r}: ")
        assert str(err.locate("data.parquet", 7)).startswith(
            f"data.parquet, row 7 (0-based), field {err.field!r}: "
        )
        assert str(err.locate(line=8)).startswith(f"data.parquet, line 8, field {err.field!r}: ")
        return
    pairs = adapter.to_pairs(row, options)
    assert row == case["row"], "adapters must not modify the row"
    got = [_as_dict(p) for p in pairs]
    expected = case["pairs"]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        if "margin" in e:
            assert g.get("margin") == pytest.approx(e["margin"], abs=1e-12)
            g["margin"] = e["margin"]
    assert got == expected
    for pair in pairs:
        check_invariants(adapter, pair)


def _doc_sections() -> dict[str, str]:
    text = (Path(__file__).resolve().parents[1] / "docs" / "formats.md").read_text(encoding="utf-8")
    parts = text.split("\n## ")[1:]
    return {part.split("\n", 1)[0].strip(): part for part in parts}


@pytest.mark.parametrize("name", [i.name for i in list_formats() if i.distribution == "built-in"])
def test_docs_have_a_section_per_built_in_adapter_naming_every_option(name):
    import dataclasses

    section = _doc_sections().get(name)
    assert section is not None, f"docs/formats.md has no '## {name}' section"
    assert "```json" in section, "the section needs an input example"
    for field in dataclasses.fields(get_format(name).Options):
        assert f"`{field.name}`" in section, f"option {field.name!r} of {name!r} is not documented"
