"""LLaMA-Factory's own ``llama3_lora_reward.yaml`` run as a user checking a config runs it: what the whole command costs.

The published example (``tests/fixtures/hosts/llamafactory/llama3_lora_reward.yaml``, byte for byte
as LLaMA-Factory shipped it) goes through ``reward-plugin train`` with three keys changed:
``model_name_or_path`` (SmolLM2-135M-Instruct saved as a plain folder, ``benchmarks/smollm2.py``:
Llama-3-8B cannot be downloaded here), ``dataset_dir`` (LLaMA-Factory's own ``dpo_en_demo``, all 300
rows, from ``../shared/data``) and ``max_steps`` (``--steps``, 1 by default). Everything else is the
example's: LoRA rank 8 on all linear layers, ``cutoff_len`` 2048, batch 1 x 8 accumulated pairs, bf16.

The command's output is read as it arrives and every line (progress-bar updates included) gets a
timestamp, which with the Trainer's own ``train_runtime`` splits the wall time into phases:

* start -> data ready: interpreter start, conversion of the 300 rows, model loading;
* training: the Trainer's ``train_runtime`` (its loop: the optimizer steps), ending at the last
  training progress-bar update;
* after training: from the last training progress-bar update to the command's exit (reward
  statistics, the adapter, tokenizer, card and ``reward_stats.json`` written, interpreter exit).

Usage::

    python benchmarks/llamafactory_example.py            # --steps 1
    python benchmarks/llamafactory_example.py --steps 2 --keep /tmp/lf-run
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
EXAMPLE = ROOT / "tests" / "fixtures" / "hosts" / "llamafactory" / "llama3_lora_reward.yaml"
#: LLaMA-Factory's own data/dataset_info.json entry for the demo file
DATASET_INFO = EXAMPLE.parent / "dataset_info.json"
DATA = Path(os.environ.get("REWARD_PLUGIN_TEST_DATA") or ROOT.parent / "shared" / "data")
DEMO = DATA / "llamafactory-dpo_en_demo.json"

#: a training progress-bar update of the Trainer, which has no description: " 30%|###   | 3/10 [00:12<..."
#: (conversion and saving bars start with theirs: "Writing model shards: 100%|...| 1/1 [...")
TRAIN_RUNTIME = re.compile(r"train_runtime\W+([0-9.]+)")
STEP_BAR = re.compile(r"^\s*\d+%\|[^|]*\| (\d+)/(\d+) \[")


def edited_example(model_dir: Path, data_dir: Path, steps: int) -> str:
    """The published example with ``model_name_or_path`` replaced and ``dataset_dir``/``max_steps`` added."""
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    lines = [
        f"model_name_or_path: {model_dir}" if line.startswith("model_name_or_path:") else line
        for line in lines
    ]
    return "\n".join([*lines, "", f"dataset_dir: {data_dir}", f"max_steps: {steps}"]) + "\n"


def data_folder(folder: Path) -> Path:
    """LLaMA-Factory's data layout: the demo file and its own ``dataset_info.json`` entry."""
    folder.mkdir(parents=True)
    (folder / "dpo_en_demo.json").write_bytes(DEMO.read_bytes())
    shutil.copyfile(DATASET_INFO, folder / "dataset_info.json")
    return folder


def timed_run(config: Path, cwd: Path, steps: int) -> dict:
    """Run ``reward-plugin train config`` and split its wall time by the timestamps of its stderr."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env["PYTHONUNBUFFERED"] = (
        "1"  # progress bars end in "\r", not "\n": a line-buffered stderr would hold them
    )
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "reward_plugin", "train", str(config)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    events: list[tuple[float, str]] = []
    buffer = b""
    assert proc.stdout is not None
    while chunk := proc.stdout.read1(4096):
        now = time.monotonic() - start
        buffer += chunk
        parts = re.split(rb"[\r\n]", buffer)
        buffer = parts.pop()
        events += [(now, part.decode("utf-8", "replace")) for part in parts if part.strip()]
    if buffer.strip():
        events.append((time.monotonic() - start, buffer.decode("utf-8", "replace")))
    code = proc.wait()
    total = time.monotonic() - start
    if code != 0:
        tail = "\n".join(text for _, text in events[-30:])
        raise SystemExit(f"reward-plugin train exited {code}:\n{tail}")
    # Training bars count up to max_steps; conversion and saving bars count other things.
    bars = [
        (t, int(m.group(1)))
        for t, text in events
        for m in [STEP_BAR.search(text)]
        if m and int(m.group(2)) == steps
    ]
    if not bars:
        raise SystemExit("no training progress bar found in the output")
    last = max(t for t, done in bars if done == steps)
    # The Trainer's own clock of its loop ({'train_runtime': ...} on stdout): the progress bar's
    # first line is not a start mark (it can arrive with the first step's end).
    runtime = [float(m.group(1)) for _, text in events for m in [TRAIN_RUNTIME.search(text)] if m]
    if not runtime:
        raise SystemExit("no train_runtime in the output")
    first = last - runtime[-1]
    pairs_line = next((text for _, text in events if "train pairs:" in text), "")
    return {
        "total_s": total,
        "before_training_s": first,
        "training_s": last - first,
        "after_training_s": total - last,
        "pairs": pairs_line.split("train pairs:")[-1].strip(),
        "stats_pass": any("separate pass" in text for _, text in events),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1, help="max_steps (each is 8 accumulated pairs)")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    if not DEMO.is_file():
        raise SystemExit(f"{DEMO} is absent: set REWARD_PLUGIN_TEST_DATA to the folder holding it")
    from smollm2 import save_reward_folder

    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model_dir = work / "smollm2"
        if not (model_dir / "config.json").is_file():
            save_reward_folder(model_dir)
        data_dir = work / "data"
        if not data_dir.is_dir():
            data_folder(data_dir)
        config = work / "llama3_lora_reward.yaml"
        config.write_text(edited_example(model_dir, data_dir, args.steps), encoding="utf-8")
        result = timed_run(config, work, args.steps)
        saved = work / "saves" / "llama3-8b" / "lora" / "reward"
        written = sorted(p.name for p in saved.iterdir()) if saved.is_dir() else []

    print(f"LLaMA-Factory llama3_lora_reward.yaml, SmolLM2-135M-Instruct, max_steps {args.steps} (x 8 pairs)")
    print(f"train/eval pairs: {result['pairs']}; separate statistics pass: {result['stats_pass']}")
    print("| phase | seconds | share |")
    print("| --- | ---: | ---: |")
    for key, name in [
        ("before_training_s", "start -> first step (conversion, model loading)"),
        ("training_s", f"the {args.steps} training step(s)"),
        ("after_training_s", "after the last step -> exit (statistics, save)"),
        ("total_s", "whole command"),
    ]:
        print(f"| {name} | {result[key]:.1f} | {result[key] / result['total_s']:.0%} |")
    print(f"written: {', '.join(written)}")


if __name__ == "__main__":
    main()
