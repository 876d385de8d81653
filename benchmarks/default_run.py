"""Measure the embedded default run (`reward-plugin train` with no config), whole call.

Runs the default in this process with optional overrides and prints one JSON line: held-out
accuracy with its 95% Wilson interval and pair count, the train loss (mean over the run and
the last logged window), train steps and the wall time of the whole ``run_training`` call
(data conversion, model loading, training, evaluation, statistics, saving) with its CPU time
(user + system seconds of this process: on a machine shared with other work, CPU seconds divided
by the cores used estimates the wall time on idle cores).

    python benchmarks/default_run.py                       # the default as shipped
    python benchmarks/default_run.py -- --learning_rate 1e-4 --num_train_epochs 3
    python benchmarks/default_run.py --split-seed 1         # another held-out split

``--split-seed`` changes the seed of the train/held-out split and of training (``seed``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split-seed", type=int, default=None, help="seed of the split and of training")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, help="-- then --key value overrides")
    args = parser.parse_args(argv)
    overrides = [t for t in args.overrides if t != "--"] if args.overrides else []
    if args.split_seed is not None:
        overrides += ["--seed", str(args.split_seed)]

    from reward_plugin.hosts.runner import run_training
    from reward_plugin.metrics import wilson_interval

    with tempfile.TemporaryDirectory(prefix="default-run-") as tmp:
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        result = run_training(None, [*overrides, "--output_dir", tmp, "--report_to", "none"])
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    history = result.trainer.state.log_history
    losses = [entry["loss"] for entry in history if "loss" in entry]
    per_epoch = [
        (round(e["epoch"], 2), e["eval_accuracy"], e["eval_num_pairs"])
        for e in history
        if "eval_accuracy" in e
    ]
    m = result.eval_metrics or {}
    pairs = int(m.get("eval_num_pairs", 0))
    correct = round(m.get("eval_accuracy", float("nan")) * pairs) if pairs else 0
    low, high = wilson_interval(correct / pairs, pairs)
    report = {
        "overrides": overrides,
        "eval_accuracy": m.get("eval_accuracy"),
        "eval_ci95": [round(low, 4), round(high, 4)],
        "eval_pairs": pairs,
        "eval_loss": m.get("eval_loss"),
        "train_loss_mean": result.train_metrics.get("train_loss"),
        "train_loss_last_log": losses[-1] if losses else None,
        "steps": result.trainer.state.global_step,
        "train_runtime_s": result.train_metrics.get("train_runtime"),
        "eval_accuracy_by_epoch": per_epoch,
        "whole_call_s": round(seconds, 1),
        # On a machine shared with other work, CPU seconds / 2 estimates the wall time on 2 idle cores.
        "whole_call_cpu_s": round(cpu, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
