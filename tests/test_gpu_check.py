"""benchmarks/gpu_check.py --dry-run: the prepared GPU check runs end to end on the CPU (so it cannot rot)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "gpu_check.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--json", str(out)],
        check=False, capture_output=True, text=True, timeout=1200, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(out.read_text())
    checks = {(c["backend"], c["window"]): c for c in found["checks"]}
    for backend in ("segments", "varlen (reference)", "varlen (flex)"):
        for window in (None, 64):
            check = checks[(backend, window)]
            assert check["max_abs_error"] <= 1e-5, check  # float32 against the dense mask
            if backend != "varlen (flex)":  # no flex backward on the CPU
                assert check["max_abs_grad_error"] <= 1e-5, check
    systems = {r["system"]: r for r in found["speed"]}
    assert set(systems) == {"trl", "varlen", "segments"}
    assert all(r["pairs_per_s"] > 0 for r in systems.values())
    assert "| varlen (reference) | float32 |" in result.stdout
