"""Fuzzing: random JSON rows for every registered adapter through ``dataset_formats.convert``.

Rows are real fixture rows of the adapter with fields replaced, removed or added (random JSON
values: null, booleans, huge/NaN/inf numbers, odd text, nested lists and objects), plus wholly
random objects. Under ``on_error="skip"`` every row must be written or rejected with a reason and
a message naming its row; the run never raises, and no row is rejected as ``adapter_error`` (the
reason the pipeline gives when an adapter crashes instead of raising a RecordError).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import FIXTURES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dataset_formats as df

FORMAT_FIXTURES = FIXTURES / "formats"
ADAPTERS = sorted(info.name for info in df.list_formats())


def _fixture_rows(name: str) -> list[dict]:
    path = FORMAT_FIXTURES / f"{name}.json"
    if not path.exists():
        return []
    return [
        case["row"]
        for case in json.loads(path.read_text(encoding="utf-8"))["cases"]
        if isinstance(case.get("row"), dict)
    ]


def _keys() -> list[str]:
    keys = {"role", "content", "from", "value", "type", "text", "response", "rating", "Rating", "annotations"}
    for name in ADAPTERS:
        for row in _fixture_rows(name):
            keys.update(row)
            for value in row.values():
                if isinstance(value, list):
                    keys.update(k for item in value if isinstance(item, dict) for k in item)
                elif isinstance(value, dict):
                    keys.update(value)
    return sorted(keys)


KEYS = _keys()
ROLES = ["user", "assistant", "system", "human", "gpt", "bot", "", "USER"]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(
        ROLES + ["\n\nHuman: hi\n\nAssistant: yo", "\n\nAssistant:", "significantly better", "4"]
    )
)
messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": st.text(max_size=20) | scalars}),
    max_size=4,
) | st.lists(
    st.fixed_dictionaries({"from": st.sampled_from(ROLES), "value": st.text(max_size=20)}), max_size=4
)
values = st.recursive(
    scalars | messages,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(KEYS), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def mutated_row(draw, base_rows: list[dict]) -> dict:
    if not base_rows or draw(st.integers(0, 4)) == 0:
        return draw(st.dictionaries(st.sampled_from(KEYS), values, max_size=6))
    row = dict(draw(st.sampled_from(base_rows)))
    for _ in range(draw(st.integers(0, 3))):  # 0: the fixture row as it is
        action = draw(st.sampled_from(["replace", "delete", "add", "nest"]))
        keys = sorted(row)
        if action == "add" or not keys:
            row[draw(st.sampled_from(KEYS))] = draw(values)
        elif action == "delete":
            row.pop(draw(st.sampled_from(keys)))
        elif action == "replace":
            row[draw(st.sampled_from(keys))] = draw(values)
        else:  # change one item inside a list or object value
            key = draw(st.sampled_from(keys))
            value = row[key]
            if isinstance(value, list) and value:
                value = list(value)
                value[draw(st.integers(0, len(value) - 1))] = draw(values)
            elif isinstance(value, dict) and value:
                value = dict(value)
                value[draw(st.sampled_from(sorted(value)))] = draw(values)
            else:
                value = draw(values)
            row[key] = value
    return row


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    from dataset_formats.encoding import load_tokenizer

    return load_tokenizer(minilm_path)


def _dump(row: dict) -> str:
    return json.dumps(row, allow_nan=True)


@pytest.mark.parametrize("name", ADAPTERS)
def test_random_rows_are_written_or_rejected_with_a_reason(name, tokenizer):
    base = _fixture_rows(name)
    template = "chatml" if name in ("chat", "llamafactory") else None

    seen = {"written": 0, "rejected": 0}

    @settings(
        max_examples=int(os.environ.get("FUZZ_EXAMPLES", "25")),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(rows=st.lists(mutated_row(base), min_size=1, max_size=6))
    def check(rows):
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "in.jsonl"
            src.write_text("".join(_dump(r) + "\n" for r in rows), encoding="utf-8")
            rejects = Path(tmp) / "rejects.jsonl"
            stats = df.convert(
                src,
                Path(tmp) / "out.parquet",
                format=name,
                tokenizer=tokenizer,
                chat_template=template,
                max_length=128,
                on_error="skip",
                rejects=rejects,
                progress=False,
            )
            assert stats.rows_read == len(rows) == stats.rows_written + stats.rows_rejected
            assert pq.read_table(Path(tmp) / "out.parquet").num_rows == stats.pairs_written
            entries = [json.loads(line) for line in rejects.read_text(encoding="utf-8").splitlines()]
            rejected_rows = {e["row"] for e in entries}
            assert len(rejected_rows) >= stats.rows_rejected
            for entry in entries:
                assert 0 <= entry["row"] < len(rows)
                assert entry["reason"] and entry["reason"] != "adapter_error", entry
                assert entry["line"] == entry["row"] + 1  # a JSON Lines file: the editor's line
                assert f"line {entry['line']}" in entry["message"] and "\n" not in entry["message"]
            assert sum(stats.rejected_by_reason.values()) == stats.rows_rejected
            seen["written"] += stats.rows_written
            seen["rejected"] += stats.rows_rejected
            table = pq.read_table(Path(tmp) / "out.parquet")
            if "margin" in table.column_names:
                assert all(math.isfinite(m) for m in table.column("margin").to_pylist())

    check()
    # the fuzzing reached both outcomes (mutated fixture rows often stay valid)
    assert seen["rejected"] > 0 and (seen["written"] > 0 or not base), seen
