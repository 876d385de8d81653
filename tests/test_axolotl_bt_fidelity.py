"""``convert --format axolotl-bt`` gives the token ids Axolotl 0.19's ``bradley_terry.chat_template`` gives.

Axolotl's side runs in its own venv (``.venv-axolotl``, see tests/test_axolotl_e2e.py) in a
subprocess: ``datasets.load_dataset("json")`` of each file, then Axolotl's own
``bradley_terry.chat_template`` ``load(...)`` strategy through its ``TokenizedPromptDataset``, as
``axolotl train`` does. The template is SmolLM2's ChatML, which adds a default system prompt when
the first turn is not a system turn, so an empty system turn and a left-out one differ (by 16
tokens with SmolLM2's tokenizer); the tokenizer is the small BPE fixture with ChatML's two tokens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import ROOT, write_jsonl

PYTHON = Path(os.environ.get("REWARD_PLUGIN_AXOLOTL_PYTHON") or ROOT / ".venv-axolotl" / "bin" / "python")
pytestmark = pytest.mark.skipif(
    not PYTHON.is_file(),
    reason="Axolotl is not installed: run .ci/install-axolotl.sh (creates .venv-axolotl)",
)

ROWS = [
    {"input": "Is 7 prime?", "chosen": "Yes, 7 is prime.", "rejected": "No."},
    {"input": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon, I think."},
]
#: case name -> the ``system`` value of every row (``...``: no ``system`` column at all)
CASES = {"missing": ..., "null": None, "empty": "", "text": "You are terse."}

AXOLOTL_SCRIPT = """
import json, sys
from datasets import load_dataset
from transformers import AutoTokenizer
from axolotl.datasets import TokenizedPromptDataset
from axolotl.prompt_strategies.bradley_terry.chat_template import load
from axolotl.utils.dict import DictDefault

tokenizer_dir, jobs = sys.argv[1], json.loads(sys.argv[2])
tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
cfg = DictDefault({"sequence_len": 512, "reward_model": True, "train_on_inputs": False,
                   "chat_template": "tokenizer_default"})
out = []
for path, drop in jobs:
    strategy = load(tokenizer, cfg, {"drop_system_message": drop})
    data = load_dataset("json", data_files=path, split="train")
    try:
        rows = TokenizedPromptDataset(strategy, data)
        out.append([[r["chosen_ids"], r["rejected_ids"]] for r in rows])
    except Exception as error:
        out.append(f"{type(error).__name__}: {error}")
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def chatml_tokenizer(bpe_tokenizer_path, tmp_path_factory) -> str:
    """The BPE fixture tokenizer with ``<|im_start|>``/``<|im_end|>`` and SmolLM2's chat template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bpe_tokenizer_path)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    template = ROOT / "tests" / "fixtures" / "chat_templates" / "smollm2.jinja"
    tokenizer.chat_template = template.read_text(encoding="utf-8")
    directory = tmp_path_factory.mktemp("chatml_tokenizer")
    tokenizer.save_pretrained(directory)
    return str(directory)


def case_files(folder: Path) -> dict[str, Path]:
    files = {}
    for name, system in CASES.items():
        rows = ROWS if system is ... else [{"system": system, **row} for row in ROWS]
        files[name] = write_jsonl(folder / f"{name}.jsonl", rows)
    return files


def axolotl_ids(tokenizer: str, jobs: list[tuple[str, bool]]) -> list:
    """Per job (file, drop_system_message): [[chosen_ids, rejected_ids] per row] or the error line."""
    env = {**os.environ, "AXOLOTL_DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(
        [str(PYTHON), "-c", AXOLOTL_SCRIPT, tokenizer, json.dumps(jobs)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


def our_ids(tokenizer: str, files: list[Path], output: Path, drop: bool) -> list[list[list[int]]]:
    """``python -m dataset_formats convert --format axolotl-bt`` of ``files``: [chosen, rejected] per row."""
    command = [sys.executable, "-m", "dataset_formats", "convert", *map(str, files), "-o", str(output)]
    command += ["--format", "axolotl-bt", "--tokenizer", tokenizer, "--chat-template", "tokenizer"]
    command += ["--option", "drop_system_message=true"] if drop else []
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pq.read_table(output).to_pylist()
    return [[row["input_ids_chosen"], row["input_ids_rejected"]] for row in table]


def test_axolotl_bt_ids_equal_axolotls_for_each_kind_of_system(chatml_tokenizer, tmp_path):
    files = case_files(tmp_path)
    jobs = [(str(files[name]), drop) for drop in (False, True) for name in CASES]
    theirs = dict(
        zip([(name, drop) for drop in (False, True) for name in CASES], axolotl_ids(chatml_tokenizer, jobs))
    )
    for drop in (False, True):
        ours = our_ids(chatml_tokenizer, list(files.values()), tmp_path / f"ours-{drop}.parquet", drop)
        assert len(ours) == len(ROWS) * len(CASES)
        mine = {name: ours[i * len(ROWS) : (i + 1) * len(ROWS)] for i, name in enumerate(CASES)}
        for name in ("empty", "text"):
            assert mine[name] == theirs[name, drop], (name, drop)
        # Axolotl 0.19 stops on a missing or null system (its strategy reads prompt["system"]); ours
        # leaves the system turn out, which is what Axolotl renders for an empty one it drops.
        for name in ("missing", "null"):
            assert theirs[name, drop] == "KeyError: 'system'"
            assert mine[name] == theirs["empty", True], (name, drop)
    # The cases differ where they should: an empty system turn keeps the default system prompt out.
    default_prompt = len(theirs["empty", True][0][0]) - len(theirs["empty", False][0][0])
    assert default_prompt > 0
    assert theirs["text", False] != theirs["text", True]
