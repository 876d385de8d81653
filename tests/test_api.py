"""The public Python API of both packages resolves as documented, whatever was imported first."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = """
import inspect, sys
{first}
import dataset_formats, reward_plugin
# importing the packages alone stays light (the CLI's `formats` answers without transformers)
assert {first!r} or "transformers" not in sys.modules, "importing the packages pulled in transformers"
assert callable(dataset_formats.convert) and inspect.isfunction(dataset_formats.convert), dataset_formats.convert
assert inspect.isfunction(dataset_formats.encode_rows)
assert dataset_formats.ConvertStats.__name__ == "ConvertStats"
for name in ("list_formats", "get_format", "register_format", "detect_format", "hookimpl", "PAIR_COLUMNS"):
    assert hasattr(dataset_formats, name), name
for name in ("RewardConfig", "RewardTrainer", "RewardDataCollatorWithPadding", "pairwise_loss"):
    assert hasattr(reward_plugin, name), name
print("ok")
"""


@pytest.mark.parametrize(
    "first",
    [
        "",
        "import dataset_formats.conversion",
        "from dataset_formats.conversion import convert",
        "import reward_plugin.trainer",
    ],
)
def test_public_names_resolve(first):
    result = subprocess.run(
        [sys.executable, "-c", CHECK.format(first=first)],
        check=False,  # the exit status is asserted below, with the child's stderr
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
