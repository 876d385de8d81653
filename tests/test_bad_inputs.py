"""The bad-input corpus (tests/fixtures/bad/ plus inputs generated here) through `reward-plugin convert`.

Every case runs twice through the public CLI (in-process, ``reward_plugin.cli.main``):

* ``--on-error raise``: a bad input gives exactly one ``error:`` line on stderr naming the file,
  the row and the field (when there is one) and the fix, exit 1, no traceback and nothing left
  in the output folder (no output, no rejects/stats file, no temporary).
* ``--on-error skip``: a bad row goes to the rejects file with its reason and the stats satisfy
  ``rows_read == rows_written + rows_rejected``; a bad *file* (or template, tokenizer, option)
  stops the run exactly as under ``raise``.

Some inputs are valid data (BOM, CRLF, duplicate rows, negative scores, a tokenizer without a pad
token): those must convert, and to the same ids as the clean input. docs/reliability.md lists
every case with the exact message; ``test_reliability_doc_table_matches_the_messages`` keeps the
two in step (run with ``UPDATE_RELIABILITY_DOC=1`` to rewrite the table after changing a message).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FIXTURES, ROOT, read_hh_rows, write_jsonl

from reward_plugin.cli import main as reward_main

BAD = FIXTURES / "bad"
DOC = ROOT / "docs" / "reliability.md"
PAIR_IDS = ["input_ids_chosen", "input_ids_rejected"]
HUGE_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class Case:
    """One kind of bad input.

    ``outcome``: ``row`` (one bad row: raise stops, skip rejects it), ``file`` (the run stops under
    both modes), ``accepted`` (valid data that converts) or ``policy`` (rows the length policy
    drops: counted under both modes, never an error).
    """

    id: str
    kind: str
    input: str  # a fixture name in tests/fixtures/bad, or "gen:<name>" made by GENERATORS
    outcome: str
    args: tuple[str, ...] = ()
    reason: str | None = None  # row outcomes: the reject reason
    row: int | None = None
    field: str | None = None
    prefix: str | None = None  # file outcomes: how the error line starts ({path}, {tmp}, {bad})
    fix: str = ""  # text of the fix the message must contain
    written: int | None = None  # accepted / policy: rows written
    same_as: str | None = None  # accepted: must give the same ids as converting this fixture
    tokenizer: str | None = None  # "gen:<name>" for a generated tokenizer
    note: str = ""  # for the docs: why an accepted input is accepted


HH = ("--format", "hh-rlhf")
PREF = ("--format", "preference")

CASES = [
    # --- reading ---------------------------------------------------------------------------------
    Case(
        "malformed-json-line",
        "malformed JSON line",
        "malformed_json.jsonl",
        "row",
        HH,
        reason="malformed_json",
        row=1,
        fix="fix or remove this line",
    ),
    Case(
        "truncated-gzip",
        "truncated gzip",
        "truncated.jsonl.gz",
        "file",
        HH,
        prefix="{path}: corrupt or truncated gzip data",
        fix="re-create the file or check it with `gzip -t`",
    ),
    Case(
        "not-gzip",
        "`.gz` name, not gzip data",
        "not_gzip.jsonl.gz",
        "file",
        HH,
        prefix="{path}: has a .gz suffix but is not gzip data",
        fix="decompress or rename it",
    ),
    Case(
        "non-utf8",
        "bytes that are not UTF-8",
        "non_utf8.jsonl",
        "row",
        HH,
        reason="invalid_utf8",
        row=1,
        fix="re-encode the file as UTF-8",
    ),
    Case(
        "bom",
        "UTF-8 byte-order mark",
        "bom.jsonl",
        "accepted",
        HH,
        written=3,
        same_as="ok.jsonl",
        note="the BOM is dropped; same ids as without it",
    ),
    Case(
        "crlf",
        "CRLF line ends",
        "crlf.jsonl",
        "accepted",
        HH,
        written=3,
        same_as="ok.jsonl",
        note="`\\r\\n` ends lines like `\\n`; same ids as the LF file",
    ),
    Case(
        "empty-file",
        "empty file",
        "empty.jsonl",
        "file",
        HH,
        prefix="{path}: has no rows",
        fix="check that it is the file you meant",
    ),
    Case(
        "empty-file-auto",
        "empty file, format auto",
        "empty.jsonl",
        "file",
        (),
        prefix="{path}: no readable rows to detect the dataset format from",
        fix="pass --format",
    ),
    Case(
        "not-an-object",
        "a JSON line that is not an object",
        "not_an_object.jsonl",
        "row",
        HH,
        reason="not_an_object",
        row=1,
        fix="write each row as one object",
    ),
    Case(
        "malformed-json-array",
        "malformed `.json` array",
        "malformed_array.json",
        "file",
        PREF,
        prefix="{path}: malformed JSON array",
        fix="fix the JSON, or save one object per line as JSON Lines",
    ),
    Case(
        "csv-extra-values",
        "CSV row with an unquoted comma",
        "csv_extra_values.csv",
        "row",
        PREF,
        reason="malformed_csv",
        row=1,
        fix="quote fields that contain commas",
    ),
    Case(
        "unsupported-suffix",
        "unsupported file type",
        "unsupported.txt",
        "file",
        HH,
        prefix="{path}: unsupported file type '.txt'",
        fix="supported: .csv, .json",
    ),
    Case(
        "missing-file",
        "file that does not exist",
        "gen:missing",
        "file",
        HH,
        prefix="{path}: no such file or directory",
        fix="check the path",
    ),
    Case(
        "directory",
        "a directory instead of a file",
        "gen:directory",
        "file",
        HH,
        prefix="{path}: is a directory",
        fix="pass a data file instead",
    ),
    Case(
        "unreadable",
        "unreadable file (chmod 000)",
        "gen:unreadable",
        "file",
        HH,
        prefix="{path}: permission denied",
        fix="make the file readable",
    ),
    Case(
        "huge-row",
        "huge single row (50 MB, an extra 50 MB column)",
        "gen:huge_extra_column",
        "accepted",
        HH,
        written=3,
        same_as="ok.jsonl",
        note="no line-length limit; unused columns are ignored",
    ),
    Case(
        "huge-row-identical",
        "huge single row (50 MB) that is bad",
        "gen:huge_identical",
        "policy",
        PREF,
        reason="identical_pair",
        written=2,
        note="the same response twice is a tie by construction: counted and skipped, never an error",
    ),
    # --- fields ----------------------------------------------------------------------------------
    Case(
        "missing-field",
        "missing field",
        "missing_field.jsonl",
        "row",
        HH,
        reason="missing_field",
        row=1,
        field="rejected",
        fix="add it, or pick the --format",
    ),
    Case(
        "null-field",
        "null field",
        "null_field.jsonl",
        "row",
        HH,
        reason="missing_field",
        row=1,
        field="rejected",
        fix="give it a value or remove the row",
    ),
    Case(
        "wrong-type-number",
        "number where text is expected",
        "wrong_type_number.jsonl",
        "row",
        HH,
        reason="wrong_type",
        row=1,
        field="chosen",
        fix="give this field as text",
    ),
    Case(
        "wrong-type-list",
        "list where text is expected",
        "wrong_type_list.jsonl",
        "row",
        HH,
        reason="wrong_type",
        row=1,
        field="chosen",
        fix="give this field as text",
    ),
    Case(
        "near-miss-column",
        "wrong column name, near miss",
        "near_miss_column.jsonl",
        "row",
        PREF,
        reason="missing_field",
        row=0,
        field="chosen",
        fix="did you mean 'choosen'? rename that column to 'chosen'",
    ),
    Case(
        "near-miss-column-auto",
        "wrong column name, format auto",
        "near_miss_column.jsonl",
        "file",
        (),
        prefix="{path}: could not detect the dataset format",
        fix="did you mean 'chosen' for column 'choosen'?",
    ),
    Case(
        "parquet-wrong-schema",
        "Parquet with a wrong schema (other columns)",
        "gen:parquet_wrong_columns",
        "row",
        PREF,
        reason="missing_field",
        row=0,
        field="chosen",
        fix="add it, or pick the --format",
    ),
    Case(
        "parquet-wrong-type",
        "Parquet with a wrong column type (int chosen)",
        "gen:parquet_int_chosen",
        "row",
        PREF,
        reason="wrong_type",
        row=0,
        field="chosen",
        fix="give this field as text",
    ),
    Case(
        "parquet-corrupt",
        "corrupt Parquet file",
        "gen:parquet_corrupt",
        "file",
        PREF,
        prefix="{path}: is not a readable Parquet file",
        fix="check that it was written completely",
    ),
    # --- responses and pairs ---------------------------------------------------------------------
    Case(
        "empty-chosen",
        "empty chosen response (hh-rlhf, default options)",
        "empty_chosen.jsonl",
        "accepted",
        HH,
        written=3,
        note="an empty answer is a real preference: kept and counted in `pairs_flagged` (`empty_response`)",
    ),
    Case(
        "empty-chosen-strict",
        "empty chosen response (hh-rlhf, `allow_empty_response=false`)",
        "empty_chosen.jsonl",
        "row",
        (*HH, "--option", "allow_empty_response=false"),
        reason="empty_response",
        row=1,
        field="chosen",
        fix="pass --option allow_empty_response=true",
    ),
    Case(
        "empty-chosen-real",
        "empty chosen response (real hh-rlhf row 86)",
        "gen:hh_real_100",
        "accepted",
        HH,
        written=100,
        note="kept by default and counted in `pairs_flagged`",
    ),
    Case(
        "turn-marker-in-answer",
        "hh-rlhf final answer that goes on with further turns",
        "turn_marker_in_answer.jsonl",
        "accepted",
        HH,
        written=3,
        note="the answer stays one response (`turn_marker_in_response` in `pairs_flagged`); "
        "`--option split=last_turn` rejects it",
    ),
    Case(
        "empty-rejected",
        "empty rejected response",
        "empty_rejected.jsonl",
        "row",
        PREF,
        reason="empty_response",
        row=1,
        field="rejected",
        fix="pass --option allow_empty_response=true",
    ),
    Case(
        "identical-pair",
        "identical chosen and rejected",
        "identical_pair.jsonl",
        "policy",
        PREF,
        reason="identical_pair",
        written=2,
        note="the same response twice is a tie by construction: counted and skipped, never an error",
    ),
    Case(
        "duplicate-rows",
        "duplicate rows",
        "duplicate_rows.jsonl",
        "accepted",
        HH,
        written=3,
        note="duplicates are valid data and are kept (deduplicate first if you want to)",
    ),
    Case(
        "no-assistant-turn",
        "hh-rlhf transcript without an answer",
        "no_assistant_turn.jsonl",
        "row",
        HH,
        reason="missing_assistant_turn",
        row=1,
        field="chosen",
        fix="use --format preference",
    ),
    Case(
        "prompt-mismatch",
        "hh-rlhf dialogues that differ",
        "prompt_mismatch.jsonl",
        "row",
        HH,
        reason="prompt_mismatch",
        row=1,
        field="rejected",
        fix="pass --option on_prompt_mismatch=implicit",
    ),
    # --- messages --------------------------------------------------------------------------------
    Case(
        "unknown-role",
        "unknown role",
        "unknown_role.jsonl",
        "row",
        PREF,
        reason="unknown_role",
        row=1,
        field="prompt[0].role",
        fix="use one of system, user, assistant",
    ),
    Case(
        "roles-out-of-order",
        "roles out of order (template refuses)",
        "roles_out_of_order.jsonl",
        "row",
        ("--format", "chat", "--chat-template", "mistral"),
        reason="template_error",
        row=1,
        field="messages",
        fix="needs alternating user/assistant turns",
    ),
    Case(
        "reply-not-assistant",
        "reply with a user role",
        "reply_not_assistant.jsonl",
        "row",
        ("--format", "chat"),
        reason="unknown_role",
        row=1,
        field="chosen[0]",
        fix="put the earlier turns in the conversation field",
    ),
    Case(
        "message-without-content",
        "message without content",
        "message_without_content.jsonl",
        "row",
        PREF,
        reason="missing_field",
        row=1,
        field="chosen[0]",
        fix="give every message a 'role' and a 'content'",
    ),
    Case(
        "nested-content-parts",
        "nested content parts",
        "nested_content_parts.jsonl",
        "row",
        PREF,
        reason="wrong_type",
        row=1,
        field="prompt[0].content",
        fix="join the text parts into one string",
    ),
    # --- margins and scores ----------------------------------------------------------------------
    Case(
        "margin-nan",
        "NaN margin",
        "margin_nan.jsonl",
        "row",
        PREF,
        reason="wrong_type",
        row=1,
        field="margin",
        fix="give a finite number or remove the field",
    ),
    Case(
        "margin-inf",
        "infinite margin",
        "margin_inf.jsonl",
        "row",
        PREF,
        reason="wrong_type",
        row=1,
        field="margin",
        fix="give a finite number or remove the field",
    ),
    Case(
        "margin-string",
        "string margin",
        "margin_string.jsonl",
        "row",
        PREF,
        reason="wrong_type",
        row=1,
        field="margin",
        fix="give a finite number or remove the field",
    ),
    Case(
        "strength-out-of-range",
        "out-of-range score (HelpSteer2 strength 5)",
        "score_out_of_range.jsonl",
        "row",
        ("--format", "helpsteer2"),
        reason="out_of_range",
        row=1,
        field="preference_strength",
        fix="use -3..-1 when response_1 is better",
    ),
    Case(
        "scores-reversed",
        "score_chosen below score_rejected",
        "score_reversed.jsonl",
        "row",
        ("--format", "score-pair"),
        reason="score_order",
        row=1,
        field="score_chosen",
        fix="pass --option order=swap",
    ),
    Case(
        "negative-scores",
        "negative scores",
        "negative_scores.jsonl",
        "accepted",
        ("--format", "score-pair"),
        written=2,
        note="scores may be negative; margin = score_chosen - score_rejected = 2.0",
    ),
    Case(
        "shp-bad-label",
        "out-of-range label (SHP labels=2)",
        "shp_bad_label.jsonl",
        "row",
        ("--format", "shp"),
        reason="wrong_type",
        row=1,
        field="labels",
        fix="must be 1 (A preferred) or 0 (B preferred)",
    ),
    Case(
        "llama2-unknown-label",
        "unknown Llama 2 rating",
        "llama2_unknown_label.jsonl",
        "row",
        ("--format", "llama2-labels"),
        reason="unknown_label",
        row=1,
        field="label",
        fix="use one of 'significantly",
    ),
    # --- tokenizer, template, length -------------------------------------------------------------
    Case(
        "tokenizer-missing",
        "tokenizer that is missing",
        "ok.jsonl",
        "file",
        HH,
        tokenizer="gen:missing",
        prefix="tokenizer '{tmp}/no-tokenizer' could not be loaded",
        fix="pass a local tokenizer folder",
    ),
    Case(
        "tokenizer-no-pad",
        "tokenizer without a pad token",
        "ok.jsonl",
        "accepted",
        HH,
        tokenizer="gen:no_pad",
        written=3,
        same_as="ok.jsonl",
        note="conversion stores no padding; the trainer picks a pad token",
    ),
    Case(
        "template-render-error",
        "chat template that fails to render",
        "chat_ok.jsonl",
        "row",
        ("--format", "chat", "--chat-template", "{bad}/template_render_error.jinja"),
        reason="template_error",
        row=0,
        field="chat_template",
        fix="fix the template or pick a shipped one",
    ),
    Case(
        "template-syntax-error",
        "chat template with a syntax error",
        "chat_ok.jsonl",
        "file",
        ("--format", "chat", "--chat-template", "{bad}/template_syntax_error.jinja"),
        prefix="chat template '{bad}/template_syntax_error.jinja': syntax error on line 1",
        fix="endfor",
    ),
    Case(
        "template-unsafe",
        "chat template reaching for `__class__`",
        "chat_ok.jsonl",
        "file",
        ("--format", "chat", "--chat-template", "{bad}/template_unsafe.jinja"),
        prefix="chat template '{bad}/template_unsafe.jinja' is unsafe",
        fix="templates run in a sandbox",
    ),
    Case(
        "template-unknown",
        "chat template that does not exist",
        "chat_ok.jsonl",
        "file",
        ("--format", "chat", "--chat-template", "nope"),
        prefix="unknown chat template 'nope'",
        fix="shipped templates: chatml",
    ),
    Case(
        "max-length-no-room",
        "max_length below the special tokens",
        "ok.jsonl",
        "file",
        (*HH, "--max-length", "2"),
        prefix="`max_length`=2 leaves no room for text",
        fix="use --max-length 3 or more",
    ),
    Case(
        "max-length-drop",
        "max_length smaller than any response (drop)",
        "ok.jsonl",
        "policy",
        (*HH, "--max-length", "6", "--truncation", "drop"),
        reason="too_long",
        written=0,
        note="the policy you chose: counted, never an error; a warning says nothing was written",
    ),
    Case(
        "max-length-left",
        "max_length smaller than any response (left)",
        "ok.jsonl",
        "accepted",
        (*HH, "--max-length", "6"),
        written=3,
        note="responses are cut from the right and counted",
    ),
    Case(
        "long-response",
        "long response (1 MB) with a max_length",
        "gen:long_response",
        "accepted",
        (*HH, "--max-length", "64"),
        written=1,
        note="cut to 64 tokens; counted as response-truncated",
    ),
]

#: Cases whose every row has the problem (so under skip nothing is written, with a warning).
EVERY_ROW_BAD = {"near-miss-column", "parquet-wrong-schema", "parquet-wrong-type", "template-render-error"}

assert len({c.id for c in CASES}) == len(CASES)
assert len({c.kind for c in CASES}) >= 30


# inputs made at test time ----------------------------------------------------------------------


def _ok_rows() -> list[dict]:
    return [json.loads(line) for line in (BAD / "ok.jsonl").read_text(encoding="utf-8").splitlines()]


def _gen_huge_extra_column(tmp: Path) -> Path:
    rows = _ok_rows()
    rows[1] = {**rows[1], "notes": "x" * HUGE_BYTES}
    return write_jsonl(tmp / "huge.jsonl", rows)


def _gen_huge_identical(tmp: Path) -> Path:
    ok = [json.loads(line) for line in (BAD / "preference_ok.jsonl").read_text(encoding="utf-8").splitlines()]
    text = "All work and no play makes Jack a dull boy. " * (HUGE_BYTES // 2 // 44)
    ok[1] = {"prompt": "Repeat a sentence.", "chosen": text, "rejected": text}
    return write_jsonl(tmp / "huge_identical.jsonl", ok)


def _gen_long_response(tmp: Path) -> Path:
    row = _ok_rows()[0]
    row = {**row, "chosen": row["chosen"] + " and so on" * 100_000}
    return write_jsonl(tmp / "long.jsonl", [row])


def _gen_parquet(tmp: Path, table: pa.Table, name: str) -> Path:
    pq.write_table(table, tmp / name)
    return tmp / name


GENERATORS = {
    "missing": lambda tmp: tmp / "missing.jsonl",
    "directory": lambda tmp: (tmp / "a-folder").mkdir() or tmp / "a-folder",
    "unreadable": lambda tmp: _gen_unreadable(tmp),
    "huge_extra_column": _gen_huge_extra_column,
    "huge_identical": _gen_huge_identical,
    "long_response": _gen_long_response,
    "hh_real_100": lambda tmp: write_jsonl(tmp / "hh-real.jsonl", read_hh_rows(100)),
    "parquet_wrong_columns": lambda tmp: _gen_parquet(
        tmp, pa.table({"question": ["a?", "b?"], "answer": ["a", "b"]}), "wrong_columns.parquet"
    ),
    "parquet_int_chosen": lambda tmp: _gen_parquet(
        tmp,
        pa.table({"prompt": ["a?", "b?"], "chosen": [1, 2], "rejected": ["x", "y"]}),
        "int_chosen.parquet",
    ),
    "parquet_corrupt": lambda tmp: (
        (tmp / "corrupt.parquet").write_bytes(b"PAR1" + b"\x00" * 64 + b"PAR1") and tmp / "corrupt.parquet"
    ),
}


def _gen_unreadable(tmp: Path) -> Path:
    path = tmp / "unreadable.jsonl"
    path.write_bytes((BAD / "ok.jsonl").read_bytes())
    path.chmod(0)
    return path


def _running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _no_pad_tokenizer(tmp: Path, minilm_path: str) -> str:
    """The MiniLM tokenizer saved without a pad token."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path)
    tok.pad_token = None
    folder = tmp / "no-pad-tokenizer"
    tok.save_pretrained(folder)
    assert AutoTokenizer.from_pretrained(folder).pad_token is None
    return str(folder)


# running ---------------------------------------------------------------------------------------


@dataclass
class Run:
    code: int
    out: str
    err: str
    work: Path
    output: Path
    rejects: Path
    stats: Path


def _prepare(case: Case, tmp: Path, minilm_path: str, monkeypatch) -> tuple[Path, str]:
    if case.input.startswith("gen:"):
        path = GENERATORS[case.input[4:]](tmp)
        if case.input == "gen:unreadable" and _running_as_root():
            # root reads a chmod-000 file anyway; make the permission check see what a user would.
            from dataset_formats import reading

            real_access = os.access
            monkeypatch.setattr(
                reading.os, "access", lambda p, mode: False if Path(p) == path else real_access(p, mode)
            )
    else:
        path = BAD / case.input
    tokenizer = minilm_path
    if case.tokenizer == "gen:missing":
        tokenizer = str(tmp / "no-tokenizer")
    elif case.tokenizer == "gen:no_pad":
        tokenizer = _no_pad_tokenizer(tmp, minilm_path)
    return path, tokenizer


def _run(case: Case, mode: str, tmp: Path, minilm_path: str, capsys, monkeypatch) -> tuple[Run, Path]:
    path, tokenizer = _prepare(case, tmp, minilm_path, monkeypatch)
    work = tmp / "work"
    work.mkdir()
    output, rejects, stats = work / "out.parquet", work / "rejects.jsonl", work / "stats.json"
    args = [a.format(bad=BAD) for a in case.args]
    argv = ["convert", str(path), *args, "--tokenizer", tokenizer, "-o", str(output)]
    argv += ["--on-error", mode, "--rejects", str(rejects), "--stats-json", str(stats), "--no-progress"]
    capsys.readouterr()
    code = reward_main(argv)
    out, err = capsys.readouterr()
    return Run(code, out, err, work, output, rejects, stats), path


def _location(case: Case, path: Path) -> str:
    """Where an editor finds the bad row: ``line N`` in JSON Lines and CSV, else ``row N (0-based)``."""
    name = path.name.removesuffix(".gz")
    if name.endswith((".jsonl", ".ndjson")):
        return f"line {case.row + 1}"
    if name.endswith(".csv"):
        return f"line {case.row + 2}"  # after the header; these fixtures have no quoted line breaks
    return f"row {case.row} (0-based)"


def _expected_prefix(case: Case, path: Path, tmp: Path) -> str:
    if case.outcome == "row":
        where = f"{path}, {_location(case, path)}" + (f", field {case.field!r}" if case.field else "")
        return f"error: {where}: "
    return "error: " + case.prefix.format(path=path, tmp=tmp, bad=BAD)


def _ids(path: Path) -> dict:
    table = pq.read_table(path)
    return {name: table.column(name).to_pylist() for name in PAIR_IDS}


_MESSAGES: dict[str, str] = {}
#: Row cases: where the bad row is, as the message says it (``line 2``, ``row 0 (0-based)``).
_WHERE: dict[str, str] = {}


def _doc_message(line: str, tmp: Path, minilm_path: str) -> str:
    text = (
        line.replace(str(BAD), "tests/fixtures/bad").replace(str(tmp), "TMP").replace(minilm_path, "MINILM")
    )
    return text


def _assert_clean_failure(run: Run, case: Case, path: Path, tmp: Path) -> str:
    assert run.code == 1, (run.out, run.err)
    assert run.out == ""
    lines = run.err.splitlines()
    assert len(lines) == 1, run.err
    (line,) = lines
    assert "Traceback" not in run.err
    assert line.startswith(_expected_prefix(case, path, tmp)), line
    assert case.fix in line, line
    assert len(line) < 1000, "the message must stay one short line, whatever the size of the row"
    assert list(run.work.iterdir()) == [], "a failed run must leave no output, rejects, stats or temporary"
    return line


def _read_stats(run: Run) -> dict:
    stats = json.loads(run.stats.read_text())
    assert stats["rows_read"] == stats["rows_written"] + stats["rows_rejected"]
    assert pq.read_table(run.output).num_rows == stats["pairs_written"]
    return stats


def _unreadable_is_real() -> bool:
    return not _running_as_root()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_on_error_raise(case, tmp_path, minilm_path, capsys, monkeypatch):
    run, path = _run(case, "raise", tmp_path, minilm_path, capsys, monkeypatch)
    if case.outcome in ("row", "file"):
        line = _assert_clean_failure(run, case, path, tmp_path)
        _MESSAGES[case.id] = _doc_message(line, tmp_path, minilm_path)
        if case.outcome == "row":
            _WHERE[case.id] = _location(case, path)
        return
    assert run.code == 0, run.err
    stats = _read_stats(run)
    assert stats["rows_written"] == case.written
    if case.outcome == "policy":
        assert stats["rejected_by_reason"] == {case.reason: stats["rows_read"] - case.written}
        if case.written:  # ties by construction: the rest of the file is written
            _MESSAGES[case.id] = _doc_message(run.out.splitlines()[2], tmp_path, minilm_path)
            return
        assert "warning: no pairs were written" in run.err
        _MESSAGES[case.id] = _doc_message(
            next(l for l in run.err.splitlines() if l.startswith("warning:")), tmp_path, minilm_path
        )
        return
    assert stats["rows_rejected"] == 0 and run.rejects.read_text() == ""
    _check_accepted(case, run, stats, tmp_path, minilm_path, capsys)
    _MESSAGES[case.id] = ""


def _check_accepted(case: Case, run: Run, stats: dict, tmp: Path, minilm_path: str, capsys) -> None:
    got = _ids(run.output)
    if case.same_as:
        reference = tmp / "reference.parquet"
        code = reward_main(
            ["convert", str(BAD / case.same_as), *HH, "--tokenizer", minilm_path, "-o", str(reference)]
        )
        capsys.readouterr()
        assert code == 0 and got == _ids(reference)
    if case.id in ("empty-chosen", "empty-chosen-real"):
        assert stats["pairs_flagged"] == {"empty_response": 1}
    if case.id == "turn-marker-in-answer":
        assert stats["pairs_flagged"] == {"turn_marker_in_response": 1}
    if case.id == "duplicate-rows":
        assert got["input_ids_chosen"][0] == got["input_ids_chosen"][1] != got["input_ids_chosen"][2]
    if case.id == "negative-scores":
        assert pq.read_table(run.output).column("margin").to_pylist() == [2.0, 2.0]
    if case.id in ("max-length-left", "long-response"):
        assert stats["rows_truncated"] == stats["rows_written"] and stats["pairs_response_truncated"] >= 1
        assert all(
            len(ids) <= int(case.args[-1]) for ids in got["input_ids_chosen"] + got["input_ids_rejected"]
        )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_on_error_skip(case, tmp_path, minilm_path, capsys, monkeypatch):
    run, path = _run(case, "skip", tmp_path, minilm_path, capsys, monkeypatch)
    if case.outcome == "file":
        _assert_clean_failure(run, case, path, tmp_path)
        return
    assert run.code == 0, run.err
    stats = _read_stats(run)
    rejects = [json.loads(line) for line in run.rejects.read_text().splitlines()]
    if case.outcome == "accepted":
        assert stats["rows_rejected"] == 0 and rejects == [] and stats["rows_written"] == case.written
        return
    if case.outcome == "policy":
        assert stats["rows_written"] == case.written
        assert {r["reason"] for r in rejects} == {case.reason} and len(rejects) == stats["rows_rejected"]
        return
    bad = [r for r in rejects if r["row"] == case.row]
    assert len(bad) == 1, rejects
    (entry,) = bad
    assert (entry["file"], entry["reason"], entry["field"]) == (str(path), case.reason, case.field)
    assert entry["message"].startswith(_expected_prefix(case, path, tmp_path)[len("error: ") :])
    assert case.fix in entry["message"]
    assert stats["rejected_by_reason"].get(case.reason, 0) >= 1
    assert stats["rows_rejected"] == len({r["row"] for r in rejects}) >= 1
    if case.id in EVERY_ROW_BAD:
        assert stats["rows_written"] == 0 and "warning: no pairs were written" in run.err
    else:  # the good rows around the bad one are kept
        assert stats["rows_written"] == stats["rows_read"] - stats["rows_rejected"] >= 1


def test_unreadable_file_for_real_when_not_root(tmp_path, minilm_path, capsys):
    """With a real chmod 000 (only meaningful when not root; root reads the file anyway)."""
    if _running_as_root():
        pytest.skip("running as root: chmod 000 does not stop root reading; the corpus case simulates it")
    path = _gen_unreadable(tmp_path)
    try:
        code = reward_main(
            ["convert", str(path), *HH, "--tokenizer", minilm_path, "-o", str(tmp_path / "o.parquet")]
        )
    finally:
        path.chmod(0o644)
    err = capsys.readouterr().err
    assert code == 1 and err == f"error: {path}: permission denied; make the file readable\n"


def test_real_hh_rlhf_rows_with_an_empty_chosen_answer_are_kept_unless_asked(tmp_path, minilm_path, capsys):
    """Rows 86 and 516 of the harmless-base test split have an empty final chosen answer."""
    n = 520
    src = write_jsonl(tmp_path / "hh.jsonl", read_hh_rows(n))
    rejects, stats = tmp_path / "rejects.jsonl", tmp_path / "stats.json"
    argv = ["convert", str(src), *HH, "--tokenizer", minilm_path, "--on-error", "skip"]
    argv += ["--rejects", str(rejects), "--stats-json", str(stats)]
    kept = tmp_path / "kept.parquet"
    assert reward_main([*argv, "-o", str(kept)]) == 0
    assert rejects.read_text() == ""
    assert json.loads(stats.read_text())["pairs_flagged"] == {"empty_response": 2}
    assert 86 in pq.read_table(kept).column("source_row").to_pylist()
    argv += ["--overwrite", "--option", "allow_empty_response=false"]
    assert reward_main([*argv, "-o", str(tmp_path / "strict.parquet")]) == 0
    empty = [json.loads(l) for l in rejects.read_text().splitlines()]
    assert [r["row"] for r in empty] == [86, 516]
    assert all(r["reason"] == "empty_response" and r["field"] == "chosen" for r in empty)


# docs/reliability.md -----------------------------------------------------------------------------

DOC_START, DOC_END = "<!-- bad-inputs:start -->", "<!-- bad-inputs:end -->"


def _cell(text: str) -> str:
    return "`` " + text.replace("|", "\\|") + " ``" if text else ""


def _doc_table(messages: dict[str, str]) -> str:
    rows = [
        "| # | bad input | input | `--on-error raise` (stderr) | `--on-error skip` |",
        "| --- | --- | --- | --- | --- |",
    ]
    for i, case in enumerate(CASES, 1):
        where = case.input[4:] + " (made by the test)" if case.input.startswith("gen:") else case.input
        args = " ".join(a.format(bad="tests/fixtures/bad") for a in case.args)
        where = f"`{where}`" + (f" `{args}`" if args else "")
        if case.outcome == "row":
            skip = f"{_WHERE[case.id]} rejected: `{case.reason}`"
            raise_cell = _cell(messages[case.id])
        elif case.outcome == "file":
            skip = "same error (the file/setting is unusable)"
            raise_cell = _cell(messages[case.id])
        elif case.outcome == "policy":
            skip = f"rows rejected: `{case.reason}`"
            raise_cell = f"exit 0, rows rejected: `{case.reason}`; " + _cell(messages[case.id])
        else:
            skip = "accepted"
            raise_cell = f"accepted: {case.note}"
        rows.append(f"| {i} | {case.kind} | {where} | {raise_cell} | {skip} |")
    return "\n".join(rows) + "\n"


def test_reliability_doc_table_matches_the_messages(tmp_path_factory, minilm_path, capsys, monkeypatch):
    missing = [c for c in CASES if c.id not in _MESSAGES]
    for case in missing:  # when run alone: collect the messages now
        tmp = tmp_path_factory.mktemp(case.id)
        with monkeypatch.context() as patch:
            run, path = _run(case, "raise", tmp, minilm_path, capsys, patch)
        if case.outcome == "row":
            _WHERE[case.id] = _location(case, path)
        lines = [l for l in run.err.splitlines() if l.startswith(("error:", "warning:"))]
        _MESSAGES[case.id] = (
            _doc_message(lines[0], tmp, minilm_path) if lines and case.outcome != "accepted" else ""
        )
    table = _doc_table(_MESSAGES)
    text = DOC.read_text(encoding="utf-8")
    start, end = text.index(DOC_START) + len(DOC_START) + 1, text.index(DOC_END)
    if os.environ.get("UPDATE_RELIABILITY_DOC"):
        text = text[:start] + table + text[end:]
        DOC.write_text(text, encoding="utf-8")
        end = start + len(table)
    assert text[start:end] == table, "docs/reliability.md is out of date: rerun with UPDATE_RELIABILITY_DOC=1"


@pytest.mark.parametrize(
    ("fmt", "row", "field", "fix"),
    [
        (
            "preference",
            {"Chosen": "a", "rejected": "b"},
            "chosen",
            "did you mean 'Chosen'? rename that column to 'chosen'",
        ),
        (
            "preference",
            {"chosen": "a", "rejectd": "b"},
            "rejected",
            "did you mean 'rejectd'? rename that column to 'rejected'",
        ),
        # siblings are other fields, never suggested as typos of each other
        (
            "helpsteer2",
            {"prompt": "p", "response_2": "b", "preference_strength": 1},
            "response_1",
            "add it, or pick the --format that matches these columns",
        ),
        (
            "shp",
            {"history": "h", "human_ref_A": "a", "human_ref_B": "b", "score_B": 1, "labels": 1},
            "score_A",
            "add it, or pick the --format that matches these columns",
        ),
    ],
)
def test_missing_field_suggests_only_real_near_misses(fmt, row, field, fix):
    import dataset_formats as df

    adapter = df.get_format(fmt)
    with pytest.raises(df.RecordError) as info:
        adapter.to_pairs(row, adapter.make_options({}))
    assert (info.value.field, info.value.reason) == (field, "missing_field")
    assert str(info.value).endswith(fix)
