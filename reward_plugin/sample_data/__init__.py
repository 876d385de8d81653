"""The data bundled with the package: 800 hh-rlhf rows (see README.md in this folder).

``python -m reward_plugin.sample_data`` prints the file's path, so commands in the docs can use it
wherever the package is installed::

    reward-plugin convert "$(python -m reward_plugin.sample_data)" --format hh-rlhf ...
"""

from __future__ import annotations

from pathlib import Path

#: The first 800 rows of hh-rlhf's harmless-base test split, gzipped JSON lines.
HH_RLHF_SAMPLE = Path(__file__).resolve().with_name("hh_rlhf_sample.jsonl.gz")
