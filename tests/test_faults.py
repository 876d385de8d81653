"""Faults: killed conversions and training runs, two training processes, broken third-party plugins.

The basic kill test of a conversion (SIGTERM, then SIGKILL and the next run) lives in
test_cli_convert.py and the byte-identical ``--num-proc 2`` parquet in test_convert.py /
test_cli_convert.py; this file adds the cases they do not cover.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, launch_two_processes, read_hh_rows, subprocess_env, write_jsonl
from safetensors.torch import load_file

from reward_plugin.cli import main as reward_main


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the process ended (rc {proc.returncode}) before the expected point:\n{err[-3000:]}")
        assert time.monotonic() < deadline, "timed out waiting for the process"
        time.sleep(0.02)


# (a) conversion killed with workers and side files --------------------------------------------


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc to find worker processes")
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_killed_conversion_with_side_files_and_workers(tmp_path, minilm_path):
    """--num-proc 2, --rejects, --stats-json and a datasets-folder output: SIGTERM leaves none of
    them and no worker behind; after SIGKILL the next run cleans up and succeeds."""
    rows = read_hh_rows(200) * 25
    rows[3] = {"chosen": 1, "rejected": "x"}  # one rejected row, so the rejects file has content
    src = write_jsonl(tmp_path / "big.jsonl", rows)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "dataset_formats", "convert", str(src), "--format", "hh-rlhf"]
    argv += ["--tokenizer", minilm_path, "-o", str(out), "--num-proc", "2", "--on-error", "skip"]
    argv += ["--rejects", str(tmp_path / "rejects.jsonl"), "--stats-json", str(tmp_path / "stats.json")]

    started: list[int] = []

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        started.append(proc.pid)
        _wait_for(
            lambda: len(_children(proc.pid)) >= 2 and any(".tmp-" in p.name for p in tmp_path.iterdir()), proc
        )
        started.extend(_children(proc.pid))
        return proc

    try:
        _kill_and_rerun(start, argv, tmp_path)
    finally:  # never leave a hung conversion or worker behind, even when the test fails
        for pid in started:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _kill_and_rerun(start, argv: list[str], tmp_path: Path) -> None:
    proc = start()
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip().endswith("error: interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.jsonl"]
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(w) for w in workers), "a worker process outlived the interrupted conversion"

    proc = start()
    proc.kill()
    proc.wait(timeout=60)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert "out" not in left and "rejects.jsonl" not in left and "stats.json" not in left
    done = subprocess.run(
        argv, check=False, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300
    )  # the status is asserted next, with stderr
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.jsonl", "out", "rejects.jsonl", "stats.json"]
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["rows_read"] == 5000 == stats["rows_written"] + stats["rows_rejected"]
    assert stats["rows_rejected"] >= 1


# A signal that lands inside multiprocessing.Pool() once its worker-handler thread runs, but before
# the pool has registered its clean-up: the window that once left a re-forked worker holding the
# CLI's stdout/stderr forever. The script sends SIGTERM to itself exactly there.
_SIGNAL_INSIDE_POOL = """
import os, signal, sys, threading
from multiprocessing import pool

start = threading.Thread.start

def start_then_signal(thread):
    start(thread)
    if getattr(thread, "_target", None) is pool.Pool._handle_results:
        os.kill(os.getpid(), signal.SIGTERM)

threading.Thread.start = start_then_signal
from dataset_formats.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_signal_inside_pool_startup_stops_every_worker(tmp_path, minilm_path):
    src = write_jsonl(tmp_path / "in.jsonl", read_hh_rows(200) * 5)
    argv = [sys.executable, "-c", _SIGNAL_INSIDE_POOL, "convert", str(src), "--format", "hh-rlhf"]
    argv += ["--tokenizer", minilm_path, "-o", str(tmp_path / "out.parquet"), "--num-proc", "2"]
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        # communicate() returns only when every process holding the pipes has gone, workers included.
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and err.strip().endswith("error: interrupted"), err[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_interrupts_held_records_then_delivers_to_the_previous_handler():
    from dataset_formats.workers import InterruptsHeld

    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        # The previous handler returns instead of raising: the block stops all the same.
        with pytest.raises(KeyboardInterrupt), InterruptsHeld() as held:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)  # the handler runs here, and only records
            assert held.received == signal.SIGTERM and seen == []
            held.check()
        assert seen == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is not held._record
        with pytest.raises(KeyboardInterrupt), InterruptsHeld():  # Ctrl-C: the default handler raises
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
        with InterruptsHeld() as held:  # no signal: nothing happens
            held.check()
    finally:
        signal.signal(signal.SIGTERM, previous)


# (d) the rejects file and the stats do not depend on --num-proc ---------------------------------


def test_rejects_and_stats_do_not_depend_on_num_proc(tmp_path, minilm_path, capsys):
    rows = read_hh_rows(200) * 6  # 1200 rows: two batches of 1000, so two workers share the work
    for i in (5, 61, 1117):
        rows[i] = {**rows[i], "rejected": rows[i]["chosen"]}
    rows[40] = {"chosen": None, "rejected": "x"}
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    outputs = {}
    for n in (1, 2):
        argv = ["convert", str(src), "--format", "hh-rlhf", "--tokenizer", minilm_path, "--on-error", "skip"]
        argv += [
            "--num-proc",
            str(n),
            "-o",
            str(tmp_path / f"o{n}.parquet"),
            "--rejects",
            str(tmp_path / f"r{n}.jsonl"),
        ]
        argv += ["--stats-json", str(tmp_path / f"s{n}.json"), "--max-length", "96", "--no-progress"]
        assert reward_main(argv) == 0
        stats = json.loads((tmp_path / f"s{n}.json").read_text())
        for key in ("seconds", "output"):
            stats.pop(key)
        outputs[n] = (
            (tmp_path / f"o{n}.parquet").read_bytes(),
            (tmp_path / f"r{n}.jsonl").read_text(),
            stats,
        )
    assert outputs[1] == outputs[2]
    rejected = [json.loads(l)["row"] for l in outputs[1][1].splitlines()]
    assert {5, 40, 61, 1117} <= set(rejected) and rejected == sorted(rejected)


# (b) training killed and resumed ----------------------------------------------------------------

TRAIN_YAML = """\
model: {model}
train_data: {{path: {data}, format: hh-rlhf, on_error: skip}}
output_dir: {out}
max_length: 64
per_device_train_batch_size: {batch}
gradient_accumulation_steps: 1
learning_rate: 1.0e-3
max_steps: {steps}
save_strategy: {save}
save_steps: {save_steps}
logging_steps: 1
bf16: false
gradient_checkpointing: false
dataloader_num_workers: 0
report_to: none
seed: 11
train_sampling_strategy: {sampling}
"""


@pytest.fixture(scope="module")
def train_data(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("train-data") / "hh.jsonl", read_hh_rows(64))


def _config(
    folder: Path,
    model: str,
    data: Path,
    out: Path,
    *,
    steps: int,
    batch: int = 4,
    save_steps: int = 0,
    sampling: str = "random",
) -> Path:
    save = "steps" if save_steps else "no"
    text = TRAIN_YAML.format(
        model=model,
        data=data,
        out=out,
        steps=steps,
        batch=batch,
        save=save,
        save_steps=save_steps or 500,
        sampling=sampling,
    )
    path = folder / f"{out.name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


#: ``reward-plugin train CONFIG`` whose run, once its first checkpoint is saved (``on_save``), writes
#: the step to the file ``argv[1]`` and waits there for a signal.
HOLD_AFTER_FIRST_SAVE = """
import signal, sys
from pathlib import Path
from transformers import TrainerCallback
from reward_plugin import trainer
from reward_plugin.cli import main

class HoldAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        Path(sys.argv[1]).write_text(str(state.global_step))
        signal.pause()

init = trainer.RewardTrainer.__init__
def init_and_hold(self, *args, **kwargs):
    init(self, *args, **kwargs)
    self.add_callback(HoldAfterSave())
trainer.RewardTrainer.__init__ = init_and_hold
sys.exit(main(["train", sys.argv[2]]))
"""


def _losses(state_file: Path) -> list[tuple[int, float]]:
    history = json.loads(state_file.read_text())["log_history"]
    return [(entry["step"], entry["loss"]) for entry in history if "loss" in entry]


def _final_state(out: Path) -> Path:
    checkpoints = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return checkpoints[-1] / "trainer_state.json"


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_resumed_training_matches_an_uninterrupted_run(tmp_path, tiny_llama_dir, train_data, capsys):
    steps, save_steps = 6, 2
    # uninterrupted reference, in this process
    ref_out = tmp_path / "reference"
    assert (
        reward_main(
            [
                "train",
                str(
                    _config(tmp_path, tiny_llama_dir, train_data, ref_out, steps=steps, save_steps=save_steps)
                ),
            ]
        )
        == 0
    )

    # the same run in a subprocess, killed (SIGKILL) once its first checkpoint is complete: the run
    # holds after that save until the kill, so the kill never comes too late (after the last step)
    out = tmp_path / "killed"
    config = _config(tmp_path, tiny_llama_dir, train_data, out, steps=steps, save_steps=save_steps)
    saved = tmp_path / "saved"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_AFTER_FIRST_SAVE, str(saved), str(config)],
        cwd=ROOT,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(saved.exists, proc, timeout=240)
    assert saved.read_text() == str(save_steps)
    proc.kill()
    proc.wait(timeout=60)
    assert not (out / "model.safetensors").exists(), (
        "the run finished before it was killed; nothing was tested"
    )
    done = sorted(
        int(p.name.split("-")[1]) for p in out.glob("checkpoint-*") if (p / "trainer_state.json").exists()
    )
    assert done and done[-1] < steps
    # a kill during a save leaves a checkpoint folder without trainer_state.json: resume must skip it
    partial = out / f"checkpoint-{steps + 100}"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"partial")

    assert reward_main(["train", str(config), "--resume"]) == 0
    capsys.readouterr()
    ref_weights = load_file(str(ref_out / "model.safetensors"))
    got_weights = load_file(str(out / "model.safetensors"))
    assert set(ref_weights) == set(got_weights)
    for name, value in ref_weights.items():
        torch.testing.assert_close(got_weights[name], value, atol=1e-5, rtol=0, msg=name)
    ref_losses = _losses(_final_state(ref_out))
    got_losses = _losses(out / f"checkpoint-{steps}" / "trainer_state.json")
    assert [s for s, _ in got_losses] == [s for s, _ in ref_losses] == list(range(1, steps + 1))
    for (step, got), (_, want) in zip(got_losses, ref_losses):
        assert abs(got - want) <= 1e-5, (step, got, want)


# (c) two processes (gloo) against one -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("sampling", ["random", "group_by_length"])
def test_two_process_training_matches_one_process(tmp_path, tiny_llama_dir, train_data, capsys, sampling):
    """accelerate launch --num_processes 2 --cpu: per-device batch 2 on two processes has the same
    global batch as 4 on one; the logged loss of every step agrees within 1e-4.
    With the default random sampler (seeded) and with length grouping (grouped by the global batch)
    the two processes split each global batch of the same order.
    """
    pytest.importorskip("accelerate")
    steps = 6
    one = tmp_path / "one"
    config = _config(
        tmp_path, tiny_llama_dir, train_data, one, steps=steps, batch=4, save_steps=steps, sampling=sampling
    )
    assert reward_main(["train", str(config)]) == 0
    capsys.readouterr()
    two = tmp_path / "two"
    config = _config(
        tmp_path, tiny_llama_dir, train_data, two, steps=steps, batch=2, save_steps=steps, sampling=sampling
    )
    peaks: dict[int, int] = {}
    stderr = launch_two_processes(
        ["reward_plugin", "train", str(config)], timeout=300, watch=lambda proc: _watch_peak_rss(proc, peaks)
    )
    # The data was prepared once: the main process converted it, the other one memory-mapped the file.
    assert stderr.count("train data converted from") == 1, stderr[-4000:]
    assert stderr.count("(not converted again)") == 1, stderr[-4000:]
    assert len(peaks) == 2, peaks
    print(
        f"peak RSS per worker ({sampling}): " + ", ".join(f"{kib / 1024:.0f} MiB" for kib in peaks.values())
    )
    want_state = json.loads((one / f"checkpoint-{steps}" / "trainer_state.json").read_text())
    got_state = json.loads((two / f"checkpoint-{steps}" / "trainer_state.json").read_text())
    # two processes really shared the data: an epoch takes as many steps as with one process
    assert [e["epoch"] for e in got_state["log_history"]] == [e["epoch"] for e in want_state["log_history"]]
    want = _losses(one / f"checkpoint-{steps}" / "trainer_state.json")
    got = _losses(two / f"checkpoint-{steps}" / "trainer_state.json")
    assert [s for s, _ in got] == [s for s, _ in want] == list(range(1, steps + 1))
    for (step, g), (_, w) in zip(got, want):
        assert abs(g - w) <= 1e-4, (step, g, w)
    ref = load_file(str(one / "model.safetensors"))
    two_weights = load_file(str(two / "model.safetensors"))
    for name, value in ref.items():
        torch.testing.assert_close(two_weights[name], value, atol=1e-4, rtol=0, msg=name)


def _watch_peak_rss(proc: subprocess.Popen, peaks: dict[int, int]) -> None:
    """Record the peak RSS (VmHWM, KiB) of every ``reward_plugin train`` process below ``proc``."""
    while proc.poll() is None:
        todo, seen = [proc.pid], set()
        while todo:
            pid = todo.pop()
            seen.add(pid)
            todo += [c for c in _children(pid) if c not in seen]
        for pid in seen - {proc.pid}:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            if (
                b"reward_plugin" in cmdline
                and b"train" in cmdline
                and b"accelerate.commands.launch" not in cmdline
            ):
                hwm = next(
                    (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0
                )
                peaks[pid] = max(peaks.get(pid, 0), hwm)
        time.sleep(0.2)


# (e) broken third-party plugins, end to end ------------------------------------------------------


def _fake_distribution(root: Path, dist: str, entry_points: str, modules: dict[str, str]) -> None:
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(entry_points, encoding="utf-8")
    for name, body in modules.items():
        (root / f"{name}.py").write_text(body, encoding="utf-8")


BAD_ADAPTER = """\
from dataset_formats import hookimpl

class NoName:
    pass

@hookimpl
def register_formats(register):
    register(NoName())
"""

GOOD_ADAPTER = """\
from dataset_formats import FormatAdapter, PreferencePair, hookimpl

class Pairs(FormatAdapter):
    name = "good-pairs"
    description = "good/bad text pairs"
    required_fields = ("good", "bad")

    def to_pairs(self, row, options):
        return [PreferencePair(None, row["good"], row["bad"])]

@hookimpl
def register_formats(register):
    register(Pairs())
"""


@pytest.mark.slow  # installs a plugin distribution and converts twice: over half a minute each on two cores
@pytest.mark.parametrize(
    ("module", "body", "expected"),
    [
        (
            "crashy_formats_xyz",
            "raise ImportError('needs the package foo')\n",
            (
                "error: plugin 'crashy (crashy-formats)': failed to import entry point 'crashy_formats_xyz': "
                "ImportError: needs the package foo; set REWARD_PLUGIN_LOAD_PLUGINS to the plugins you want to run "
                "without it"
            ),
        ),
        (
            "crashy_formats_xyz",
            BAD_ADAPTER,
            "error: plugin 'crashy': registered <crashy_formats_xyz.NoName object",
        ),
    ],
    ids=["raises-on-import", "registers-a-bad-adapter"],
)
def test_broken_plugin_is_named_and_the_allowlist_runs_without_it(
    tmp_path, minilm_path, module, body, expected
):
    site = tmp_path / "site"
    _fake_distribution(site, "crashy-formats", f"[dataset_formats]\ncrashy = {module}\n", {module: body})
    _fake_distribution(
        site,
        "good-formats",
        "[dataset_formats]\ngood = good_formats_xyz\n",
        {"good_formats_xyz": GOOD_ADAPTER},
    )
    src = write_jsonl(tmp_path / "in.jsonl", [{"good": "Paris.", "bad": "Lyon."}, {"good": "4", "bad": "5"}])
    env = subprocess_env(PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    convert = [
        "-m",
        "reward_plugin",
        "convert",
        str(src),
        "--format",
        "good-pairs",
        "--tokenizer",
        minilm_path,
    ]

    done = subprocess.run(
        [sys.executable, *convert, "-o", str(tmp_path / "a.parquet")],
        check=False,  # the status is asserted below, with stderr
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith(expected), done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "a.parquet").exists()

    env["REWARD_PLUGIN_LOAD_PLUGINS"] = "good"
    done = subprocess.run(
        [sys.executable, *convert, "-o", str(tmp_path / "b.parquet")],
        check=False,  # the status is asserted below, with stderr
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "rows read: 2, written: 2, rejected: 0" in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "reward_plugin", "formats"],
        check=False,  # the status is asserted below, with stderr
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "good-pairs" in done.stdout and "crashy" not in done.stdout


def test_a_stuck_pool_clean_up_is_bounded(monkeypatch):
    """Pool.terminate() that never returns (a worker killed mid-message): the workers are killed."""
    import multiprocessing
    import threading

    from dataset_formats import workers

    release = threading.Event()

    class StuckPool:
        def terminate(self):
            release.wait()  # never returns on its own

    others = set(multiprocessing.active_children())
    worker = multiprocessing.get_context("fork").Process(
        target=signal.pause, daemon=True
    )  # waits for a signal
    worker.start()
    monkeypatch.setattr(workers, "STOP_SECONDS", 0.5)
    started = time.monotonic()
    try:
        workers._stop(StuckPool(), others)
        assert time.monotonic() - started < 10
        worker.join(10)
        assert not worker.is_alive() and worker.exitcode == -signal.SIGKILL
    finally:
        release.set()  # let the stuck clean-up thread end
        if worker.is_alive():
            worker.kill()
