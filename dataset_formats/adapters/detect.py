"""The built-in ``detect_format`` hook: asks the built-in adapters, most specific layout first."""

from __future__ import annotations

from typing import Any

from ..hookspecs import hookimpl

#: Built-in formats in the order they are asked. Specific layouts (extra score/rank/label
#: columns, tool-specific column names) come before the generic ``chosen``/``rejected`` ones,
#: and ``hh-rlhf`` (transcripts with Human/Assistant markers) before plain ``preference``.
DETECTION_ORDER = (
    "ranking",
    "shp",
    "helpsteer2",
    "score-pair",
    "rewardbench2",
    "rm-bench",
    "rewardbench",
    "llama2-labels",
    "llamafactory",
    "axolotl-bt",
    "chat",
    "hh-rlhf",
    "preference",
)


@hookimpl(trylast=True)
def detect_format(columns: list[str], sample: list[dict[str, Any]]) -> str | None:
    """The first built-in format (in :data:`DETECTION_ORDER`) whose adapter accepts the rows, then
    any other registered adapter (by name) whose ``detect`` does; None when none fits."""
    from ..registry import list_formats

    formats = {info.name: info.adapter for info in list_formats()}
    names = [n for n in DETECTION_ORDER if n in formats] + sorted(set(formats) - set(DETECTION_ORDER))
    for name in names:
        if formats[name].detect(list(columns), list(sample)):
            return name
    return None
