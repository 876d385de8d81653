"""Packed training sharded with FSDP2 over two processes equals one process (loss every step, final weights, 1e-4).

Two ``torchrun`` launches of tests/fsdp_packed_worker.py on the CPU (gloo): one process unsharded,
and two processes with ``fully_shard`` on every decoder layer and the model, each training on half
of every global batch. The attention backends run on sharded parameters (DTensors gathered per
layer), so their wiring must survive sharding for the numbers to agree.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).resolve().parent / "fsdp_packed_worker.py"
ROOT = Path(__file__).resolve().parents[1]


def run(tmp_path: Path, processes: int, attention: str) -> dict:
    out = tmp_path / f"{attention}-{processes}.pt"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
         str(WORKER), str(out), "--attention", attention],
        check=False, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out)


@pytest.mark.slow  # two torchrun launches per backend: ~30 s each on an idle 2-core machine
@pytest.mark.parametrize("attention", ["varlen", "segments"])
def test_fsdp2_packed_training_matches_one_process(tmp_path, attention):
    one, two = run(tmp_path, 1, attention), run(tmp_path, 2, attention)
    assert len(one["losses"]) == len(two["losses"]) == 4
    for step, (a, b) in enumerate(zip(two["losses"], one["losses"]), start=1):
        assert abs(a - b) <= 1e-4, f"step {step}: two processes {a!r} vs one {b!r}"
    assert len({round(x, 4) for x in one["losses"]}) > 1  # it trained
    assert set(one["state"]) == set(two["state"])
    for name, want in one["state"].items():
        torch.testing.assert_close(two["state"][name], want, rtol=0, atol=1e-4, msg=name)
