"""Untrusted content: hostile chat templates, remote code, pickled weights, overwriting outputs.

The template sandbox itself (each hostile template on its own, bounded time) is tested in
test_rendering.py; here the same attacks come in through ``reward-plugin convert`` (from a file
and from a tokenizer's own ``chat_template``) and must stop the run under ``--on-error skip`` too.
"""

from __future__ import annotations

import ast
import json
import pickle
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import ROOT, read_hh_rows, write_jsonl

from reward_plugin.cli import main as reward_main

CHAT_ROWS = [
    {
        "messages": [{"role": "user", "content": "Hi!"}],
        "chosen": "Hello! How can I help?",
        "rejected": "What?",
    },
    {"messages": [{"role": "user", "content": "Is ice cold?"}], "chosen": "Yes.", "rejected": "No."},
]

ATTACKS = {
    "__class__": "{{ messages.__class__.__mro__[1].__subclasses__() }}",
    "__globals__": "{{ raise_exception.__globals__['os'].system('touch {marker}') }}",
    "import": "{% import 'os' as os %}{{ os.system('touch {marker}') }}",
    "import-via-builtins": "{{ self.__init__.__globals__.__builtins__.__import__('os').system('touch {marker}') }}",
    "file-read": "{% include '/etc/passwd' %}",
    "huge-loop": "{% for i in range(10**9) %}{{ i }}{% endfor %}",
    "nested-loops": "{% for m in messages %}{% for i in range(150000) %}{% for j in range(150000) %}{% endfor %}{% endfor %}{% endfor %}",
}


def _convert(tmp_path: Path, tokenizer: str, template: str, capsys) -> tuple[int, str, float]:
    src = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    argv = ["convert", str(src), "--format", "chat", "--tokenizer", tokenizer, "--chat-template", template]
    argv += ["--on-error", "skip", "--rejects", str(tmp_path / "r.jsonl"), "-o", str(tmp_path / "o.parquet")]
    start = time.monotonic()
    code = reward_main(argv)
    elapsed = time.monotonic() - start
    return code, capsys.readouterr().err, elapsed


@pytest.mark.parametrize("source", ATTACKS.values(), ids=ATTACKS.keys())
def test_hostile_template_file_stops_the_conversion_fast(tmp_path, minilm_path, source, capsys):
    """Even under --on-error skip: the sandbox refusing a template is never one row's problem."""
    marker = tmp_path / "pwned"
    template = tmp_path / "evil.jinja"
    template.write_text(source.replace("{marker}", str(marker)), encoding="utf-8")
    code, err, elapsed = _convert(tmp_path, minilm_path, str(template), capsys)
    assert code == 1 and err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err and "evil.jinja" in err
    assert elapsed < 15, f"the template ran for {elapsed:.1f}s"
    assert not marker.exists()
    assert not (tmp_path / "o.parquet").exists() and not (tmp_path / "r.jsonl").exists()


def test_template_calling_open_fails_every_row_with_a_clear_error(tmp_path, minilm_path, capsys):
    """``open`` does not exist in the sandbox: the name is undefined, so each row fails to render."""
    marker = tmp_path / "pwned"
    template = tmp_path / "evil.jinja"
    template.write_text(
        "{{ open('" + str(marker) + "', 'w') }}{{ messages[0]['content'] }}", encoding="utf-8"
    )
    src = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    argv = [
        "convert",
        str(src),
        "--format",
        "chat",
        "--tokenizer",
        minilm_path,
        "--chat-template",
        str(template),
    ]
    assert reward_main([*argv, "-o", str(tmp_path / "o.parquet")]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"error: {src}, line 1, field 'chat_template': chat template {str(template)!r} failed: UndefinedError: "
        "'open' is undefined; fix the template or pick a shipped one (see templates/README.md)\n"
    )
    assert not marker.exists()


def test_hostile_template_from_the_tokenizer_is_sandboxed_too(tmp_path, minilm_path, capsys):
    from transformers import AutoTokenizer

    marker = tmp_path / "pwned"
    tok = AutoTokenizer.from_pretrained(minilm_path)
    tok.chat_template = ATTACKS["__globals__"].replace("{marker}", str(marker))
    folder = tmp_path / "tok"
    tok.save_pretrained(folder)
    code, err, _ = _convert(tmp_path, str(folder), "tokenizer", capsys)
    assert code == 1 and err.startswith("error: chat template 'tokenizer:") and "is unsafe" in err
    assert not marker.exists()


def test_help_states_that_remote_code_is_off(capsys):
    for command in (["convert", "--help"], ["train", "--help"]):
        with pytest.raises(SystemExit) as info:
            reward_main(command)
        assert info.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "trust" in text and "remote code" in text.lower().replace("_", " ")
    from reward_plugin.config import RewardConfig

    assert RewardConfig(output_dir="unused").trust_remote_code is False


def _remote_code_folder(folder: Path, marker: Path, kind: str) -> Path:
    """A folder whose config points at custom code that would create ``marker`` when imported."""
    folder.mkdir()
    (folder / "custom_code.py").write_text(f"open({str(marker)!r}, 'w').close()\n", encoding="utf-8")
    if kind == "tokenizer":
        config = {
            "tokenizer_class": "EvilTokenizer",
            "auto_map": {"AutoTokenizer": ["custom_code.EvilTokenizer", None]},
        }
        (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    config = {
        "model_type": "evil",
        "auto_map": {
            "AutoConfig": "custom_code.EvilConfig",
            "AutoModelForSequenceClassification": "custom_code.EvilModel",
        },
    }
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def test_convert_refuses_a_tokenizer_with_custom_code(tmp_path, capsys):
    marker = tmp_path / "ran"
    folder = _remote_code_folder(tmp_path / "evil-tok", marker, "tokenizer")
    src = write_jsonl(tmp_path / "hh.jsonl", read_hh_rows(3))
    code = reward_main(["convert", str(src), "--tokenizer", str(folder), "-o", str(tmp_path / "o.parquet")])
    err = capsys.readouterr().err
    (line,) = [l for l in err.splitlines() if l.startswith("error:")]  # transformers may log a warning first
    assert code == 1 and line.startswith(f"error: tokenizer {str(folder)!r} could not be loaded (")
    assert line.endswith("pass --trust-remote-code only if you trust that code")
    assert not marker.exists()


def test_train_refuses_a_model_with_custom_code(tmp_path, bpe_tokenizer_path, capsys):
    marker = tmp_path / "ran"
    folder = _remote_code_folder(tmp_path / "evil-model", marker, "model")
    src = write_jsonl(tmp_path / "hh.jsonl", read_hh_rows(8))
    code = reward_main(["train", str(_train_yaml(tmp_path, folder, bpe_tokenizer_path, src))])
    err = capsys.readouterr().err
    (line,) = [l for l in err.splitlines() if l.startswith("error:")]
    assert code == 1 and "Traceback" not in err, err
    assert line.endswith(
        "remote code is off by default: set trust_remote_code: true only if you trust that code"
    )
    assert not marker.exists()


def _train_yaml(tmp_path: Path, model: Path, tokenizer: str, data: Path) -> Path:
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: {model}\ntokenizer: {tokenizer}\ntrain_data: {{path: {data}, format: hh-rlhf}}\n"
        f"output_dir: {tmp_path / 'out'}\nmax_steps: 1\nreport_to: none\n",
        encoding="utf-8",
    )
    return config


class _Payload:
    """Unpickling this creates a file: what a malicious pytorch_model.bin can do."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_pickled_weights_are_never_unpickled(tmp_path, tiny_llama_dir, bpe_tokenizer_path, capsys):
    marker = tmp_path / "unpickled"
    folder = tmp_path / "bin-model"
    folder.mkdir()
    (folder / "config.json").write_text((Path(tiny_llama_dir) / "config.json").read_text(), encoding="utf-8")
    with open(folder / "pytorch_model.bin", "wb") as fh:
        pickle.dump({"model.embed_tokens.weight": _Payload(marker)}, fh)
    src = write_jsonl(tmp_path / "hh.jsonl", read_hh_rows(8))
    code = reward_main(["train", str(_train_yaml(tmp_path, folder, bpe_tokenizer_path, src))])
    err = capsys.readouterr().err
    (line,) = [l for l in err.splitlines() if l.startswith("error:")]
    assert code == 1 and "Traceback" not in err and "only safetensors weights are loaded" in line, err
    assert not marker.exists()


UNSAFE_CALLS = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("dill", "load"),
    ("marshal", "loads"),
    ("yaml", "load"),
}


def test_no_unsafe_deserialization_in_the_code():
    """No pickle/marshal/yaml.load, eval or exec; any torch.load passes weights_only=True."""
    problems = []
    for path in sorted((ROOT / "dataset_formats").rglob("*.py")) + sorted(
        (ROOT / "reward_plugin").rglob("*.py")
    ):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if isinstance(func, ast.Name) and func.id in ("eval", "exec"):
                problems.append(f"{where}: {func.id}()")
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                pair = (func.value.id, func.attr)
                if pair in UNSAFE_CALLS:
                    problems.append(f"{where}: {pair[0]}.{pair[1]}()")
                if pair == ("torch", "load"):
                    safe = any(
                        k.arg == "weights_only"
                        and isinstance(k.value, ast.Constant)
                        and k.value.value is True
                        for k in node.keywords
                    )
                    if not safe:
                        problems.append(f"{where}: torch.load without weights_only=True")
    assert problems == []


def test_convert_never_overwrites_without_overwrite(tmp_path, minilm_path, capsys):
    src = write_jsonl(tmp_path / "hh.jsonl", read_hh_rows(4))
    targets = {"out": tmp_path / "o.parquet", "rejects": tmp_path / "r.jsonl", "stats": tmp_path / "s.json"}
    for path in targets.values():
        path.write_text("precious")
    argv = ["convert", str(src), "--format", "hh-rlhf", "--tokenizer", minilm_path, "-o", str(targets["out"])]
    argv += ["--rejects", str(targets["rejects"]), "--stats-json", str(targets["stats"])]
    for kept in targets.values():  # each existing file alone is enough to refuse the run
        for path in targets.values():
            path.unlink(missing_ok=True)
        kept.write_text("precious")
        assert reward_main(argv) == 1
        err = capsys.readouterr().err
        assert err == f"error: {kept}: output already exists; pass --overwrite to replace it\n"
        assert kept.read_text() == "precious"
        assert [p.name for p in tmp_path.iterdir() if p.name != "hh.jsonl"] == [kept.name]
    assert reward_main([*argv, "--overwrite"]) == 0
    assert pq.read_table(targets["out"]).num_rows == 4
    assert json.loads(targets["stats"].read_text())["rows_read"] == 4
