"""`reward-plugin formats/convert` and `python -m dataset_formats`: exit codes, output, exact error lines."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
from conftest import LLAMAFACTORY_DEMO, ROOT, read_hh_rows

from dataset_formats.cli import main as df_main


def write_jsonl_gz(path: Path, rows: list) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for row in rows:
            fh.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


@pytest.fixture(scope="module")
def hh_file(tmp_path_factory) -> Path:
    return write_jsonl_gz(tmp_path_factory.mktemp("hh") / "hh.jsonl.gz", read_hh_rows(30))


def run(argv, capsys):
    code = df_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def convert_cli(argv, capsys):
    return run(["convert", *argv], capsys)


def test_formats_lists_builtins_with_origin(capsys):
    code, out, err = run(["formats"], capsys)
    assert code == 0 and err == ""
    header, *lines = out.splitlines()
    assert header.split() == ["name", "origin", "description"]
    hh = next(line for line in lines if line.startswith("hh-rlhf "))
    assert hh.split()[1] == "built-in"
    code, out, _ = run(["formats", "--json"], capsys)
    data = {item["name"]: item for item in json.loads(out)}
    assert data["hh-rlhf"]["origin"] == "built-in" and data["hh-rlhf"]["description"]
    assert {"name": "allow_empty_response", "type": "bool", "default": True} in data["hh-rlhf"]["options"]


def test_formats_shows_an_in_process_plugin(capsys):
    import dataset_formats as df

    class Mine(df.FormatAdapter):
        name = "mine"
        description = "my rows"

    plugin = df.register_format(Mine)
    try:
        code, out, _ = run(["formats"], capsys)
    finally:
        df.unregister_format_plugin(plugin)
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith("mine "))
    assert "in-process:mine (in-process)" in line and line.endswith("my rows")


def test_convert_prints_a_summary_and_writes_stats(tmp_path, hh_file, minilm_path, capsys):
    out_file, stats_file = tmp_path / "o.parquet", tmp_path / "stats.json"
    code, out, err = convert_cli(
        [
            hh_file,
            "--tokenizer",
            minilm_path,
            "-o",
            out_file,
            "--max-length",
            128,
            "--stats-json",
            stats_file,
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    stats = json.loads(stats_file.read_text())
    assert stats["format"] == "hh-rlhf"  # detected
    assert stats["rows_read"] == 30 == stats["rows_written"] + stats["rows_rejected"]
    assert {"rows_truncated", "rejected_by_reason", "tokenizer", "max_length"} <= set(stats)
    assert (
        out.splitlines()[0]
        == f"rows read: 30, written: {stats['rows_written']}, rejected: {stats['rows_rejected']}"
    )
    assert out.splitlines()[-1] == f"wrote {out_file}"
    assert datasets.Dataset.from_parquet(str(out_file)).num_rows == stats["pairs_written"]


def test_bad_row_is_one_error_line_exit_1_and_no_output(tmp_path, minilm_path, capsys):
    rows = read_hh_rows(3)
    rows[1] = {"chosen": 42, "rejected": rows[1]["rejected"]}
    src = write_jsonl_gz(tmp_path / "in.jsonl.gz", rows)
    out_file = tmp_path / "o.parquet"
    code, out, err = convert_cli(
        [src, "--format", "hh-rlhf", "--tokenizer", minilm_path, "-o", out_file], capsys
    )
    assert code == 1 and out == ""
    assert err.startswith(f"error: {src}, line 2, field 'chosen': ") and err.count("\n") == 1
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl.gz"]

    rejects = tmp_path / "rejects.jsonl"
    code, out, err = convert_cli(
        [
            src,
            "--format",
            "hh-rlhf",
            "--tokenizer",
            minilm_path,
            "-o",
            out_file,
            "--on-error",
            "skip",
            "--rejects",
            rejects,
        ],
        capsys,
    )
    assert code == 0 and "rejected by reason: wrong_type: 1" in out
    (entry,) = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert (entry["file"], entry["row"], entry["field"], entry["reason"]) == (
        str(src),
        1,
        "chosen",
        "wrong_type",
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["{missing}", "-o", "{out}"], "error: {missing}: no such file or directory; check the path\n"),
        (
            ["{src}", "-o", "{existing}"],
            "error: {existing}: output already exists; pass --overwrite to replace it\n",
        ),
        (["{src}", "-o", "{out}", "--option", "oops"], "error: --option expects KEY=VALUE, got 'oops'\n"),
        (
            ["{src}", "-o", "{out}", "--format", "hh-rlhf", "--option", "nope=1"],
            "error: format 'hh-rlhf' has no option 'nope'; its options: split, on_prompt_mismatch, allow_empty_response\n",
        ),
        (
            ["{src}", "-o", "{out}", "--format", "zzz"],
            "error: unknown dataset format 'zzz'; available formats: ",
        ),
        (
            ["-o", "{out}"],
            "error: no INPUT given; pass one or more input files (or --dataset-info and --dataset)\n",
        ),
        (
            ["{src}", "-o", "{out}", "--dataset", "x"],
            "error: --dataset-info and --dataset go together: give both, or neither\n",
        ),
        (["{src}", "-o", "{out}", "--max-length", "1"], "error: `max_length`=1 leaves no room for text: "),
        (
            ["{src}", "-o", "{out}", "--chat-template", "nope"],
            "error: unknown chat template 'nope'; shipped templates: ",
        ),
    ],
)
def test_convert_error_lines(tmp_path, hh_file, minilm_path, capsys, argv, expected):
    existing = tmp_path / "existing.parquet"
    existing.write_text("x")
    names = {
        "missing": tmp_path / "missing.jsonl",
        "out": tmp_path / "o.parquet",
        "src": hh_file,
        "existing": existing,
    }
    argv = [a.format(**names) for a in argv] + ["--tokenizer", minilm_path, "--no-progress"]
    code, out, err = convert_cli(argv, capsys)
    assert code == 1 and out == ""
    assert err.startswith(expected.format(**names)) and err.count("\n") == 1
    assert not (tmp_path / "o.parquet").exists()


def test_missing_tokenizer_is_an_error_line(tmp_path, hh_file, capsys):
    code, _, err = convert_cli(
        [hh_file, "-o", tmp_path / "o.parquet", "--tokenizer", tmp_path / "no-tok"], capsys
    )
    assert code == 1 and err.startswith(f"error: tokenizer '{tmp_path / 'no-tok'}' could not be loaded (")


def test_llamafactory_dataset_info(tmp_path, bpe_tokenizer_path, capsys):
    info = tmp_path / "dataset_info.json"
    (tmp_path / "dpo_en_demo.json").write_bytes(LLAMAFACTORY_DEMO.read_bytes())
    info.write_text(
        json.dumps(
            {
                "dpo_en_demo": {
                    "file_name": "dpo_en_demo.json",
                    "ranking": True,
                    "formatting": "sharegpt",
                    "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
                }
            }
        )
    )
    out_file = tmp_path / "o.parquet"
    code, out, err = convert_cli(
        [
            "--dataset-info",
            info,
            "--dataset",
            "dpo_en_demo",
            "--tokenizer",
            bpe_tokenizer_path,
            "--chat-template",
            "chatml",
            "-o",
            out_file,
            "--stats-json",
            tmp_path / "s.json",
        ],
        capsys,
    )
    assert code == 0, err
    assert out.startswith("rows read: 30, written: 30, rejected: 0\n")  # the repository's slice
    stats = json.loads((tmp_path / "s.json").read_text())
    assert (
        stats["format"] == "llamafactory"
        and stats["rows_read"] == 30 == stats["rows_written"] + stats["rows_rejected"]
    )
    assert pq.read_table(out_file).num_rows == stats["pairs_written"]


def test_num_proc_2_gives_identical_bytes(tmp_path, hh_file, minilm_path, capsys):
    common = [hh_file, "--format", "hh-rlhf", "--tokenizer", minilm_path, "--max-length", "64"]
    assert convert_cli([*common, "-o", tmp_path / "a.parquet"], capsys)[0] == 0
    assert convert_cli([*common, "-o", tmp_path / "b.parquet", "--num-proc", "2"], capsys)[0] == 0
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def _cli(*args, **kwargs):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    # check=False: the callers assert the exit status (and read stderr when it is not 0)
    return subprocess.run(
        [sys.executable, *args], check=False, capture_output=True, text=True, env=env, cwd=ROOT, **kwargs
    )


def test_python_m_dataset_formats_and_reward_plugin(tmp_path, hh_file, minilm_path):
    done = _cli(
        "-m",
        "dataset_formats",
        "convert",
        str(hh_file),
        "--tokenizer",
        minilm_path,
        "-o",
        str(tmp_path / "o.parquet"),
        "--format",
        "nope",
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("error: unknown dataset format 'nope'; available formats: ")
    assert done.stderr.count("\n") == 1
    done = _cli("-m", "dataset_formats", "formats")
    assert done.returncode == 0 and "hh-rlhf" in done.stdout
    from reward_plugin.cli import main as reward_main

    assert (
        reward_main(
            [
                "convert",
                str(hh_file),
                "--tokenizer",
                minilm_path,
                "-o",
                str(tmp_path / "r.parquet"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert pq.read_table(tmp_path / "r.parquet").num_rows > 0


@pytest.mark.slow
def test_killed_conversion_leaves_no_output_and_no_temporaries(tmp_path, minilm_path):
    """SIGTERM: clean exit 130, nothing left. SIGKILL: the next run removes the dead run's temporary."""
    rows = read_hh_rows(800) * 10
    src = write_jsonl_gz(tmp_path / "big.jsonl.gz", rows)
    out_file = tmp_path / "o.parquet"
    argv = [
        "-m",
        "dataset_formats",
        "convert",
        str(src),
        "--format",
        "hh-rlhf",
        "--tokenizer",
        minilm_path,
        "-o",
        str(out_file),
        "--on-error",
        "skip",
    ]

    def start_and_wait_for_temporary():
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.Popen(
            [sys.executable, *argv],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while not any(".tmp-" in p.name for p in tmp_path.iterdir()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        return proc

    proc = start_and_wait_for_temporary()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip().endswith("error: interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.jsonl.gz"]

    proc = start_and_wait_for_temporary()
    proc.kill()
    proc.wait(timeout=60)
    assert not out_file.exists()
    assert any(".tmp-" in p.name for p in tmp_path.iterdir())  # SIGKILL cannot clean up...
    done = _cli(*argv[:-2], "--max-length", "8", "--truncation", "drop", "--on-error", "skip")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.jsonl.gz", "o.parquet"]  # ...the next run does
