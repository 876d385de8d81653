"""The dependency floors in pyproject.toml are the versions CI tests in .ci/install-minimums.sh's venv."""

from __future__ import annotations

import re
import sys

import pytest
from conftest import ROOT

tomllib = pytest.importorskip("tomllib") if sys.version_info >= (3, 11) else pytest.importorskip("tomli")


def _floors() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {m[1].lower(): m[2] for d in deps if (m := re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", d))}


def _pins() -> dict[str, str]:
    lines = (ROOT / ".ci" / "minimums.txt").read_text().splitlines()
    return dict(line.lower().split("==") for line in lines if line and not line.startswith("#"))


def test_every_pinned_minimum_is_the_floor_in_pyproject():
    floors, pins = _floors(), _pins()
    assert set(pins) == {
        "torch",
        "transformers",
        "datasets",
        "peft",
        "accelerate",
        "pluggy",
        "pyarrow",
        "jinja2",
    }
    for name, version in pins.items():
        want = tuple(int(x) for x in floors[name].split("."))
        got = tuple(int(x) for x in version.split("."))
        # 5.3 in pyproject means 5.3.0 in the pins: compare padded to the same length.
        assert got[: len(want)] == want and not any(got[len(want) :]), (name, floors[name], version)
