"""Ties: pairs whose source says neither response is better, and what a conversion does with them.

An adapter marks such a pair with ``PreferencePair.tie`` (the kind below) instead of rejecting
the row; the conversion's ``ties`` policy then decides:

* ``skip`` (the default): the pair is not written; the row is counted and written to the rejects
  file with reason ``tie``. A tie's "chosen" side is a coin flip of the source's binarisation,
  and learning it as a preference is noise (docs/benchmarks.md, "Ties on UltraFeedback").
* ``keep``: the pair is written as an ordinary preference, in the source's order (what TRL and
  most trainers do).
* ``tie``: the pair is written with ``tie = true`` in an extra boolean ``tie`` column, which the
  trainer's tie-aware loss (:mod:`reward_plugin.ties`) models as a tie.

Pairs whose two responses are the same text (``identical_responses``) are ties by construction
that nothing can be learnt from; every policy drops them (reason ``identical_pair``), and they
never stop a conversion, not even under ``on_error="raise"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Values of the ``ties`` option of ``convert`` and of a ``train_data`` source.
TIES_CHOICES = ("skip", "keep", "tie")
#: What a conversion does with ties unless told otherwise.
DEFAULT_TIES = "skip"
#: Why a pair is a tie: equal scores, the same response twice, an explicit tie label, or a
#: preference strength of 0 (HelpSteer2/3's "about the same").
TIE_KINDS = ("equal_scores", "identical_responses", "tie_label", "strength_zero")
#: The reject reason of a tie that the ``skip`` policy left out.
TIE_REASON = "tie"


def check_ties(value: Any, name: str = "ties") -> str:
    """``value`` when it is one of :data:`TIES_CHOICES`; else an ``OptionError`` naming ``name``."""
    from .errors import OptionError

    if value not in TIES_CHOICES:
        raise OptionError(f"`{name}` must be one of {', '.join(TIES_CHOICES)}, got {value!r}")
    return value


def empty_tie_counts() -> dict[str, Any]:
    """The ``ties`` entry of the conversion stats before anything is counted."""
    return {
        "detected": 0,
        "by_kind": {},
        "skipped": 0,
        "written_as_preferences": 0,
        "written_as_ties": 0,
    }


def add_tie_counts(total: dict[str, Any], other: Mapping[str, Any]) -> None:
    """Add the tie counters of ``other`` (one batch) to ``total``."""
    for key in ("detected", "skipped", "written_as_preferences", "written_as_ties"):
        total[key] = total.get(key, 0) + other.get(key, 0)
    by_kind = total.setdefault("by_kind", {})
    for kind, count in other.get("by_kind", {}).items():
        by_kind[kind] = by_kind.get(kind, 0) + count


def lookup(row: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` (``metadata.score_chosen``), or ``_MISSING`` when any step is absent.

    A key that itself contains the dot (``{"metadata.score_chosen": 9}``) is found first.
    """
    if path in row:
        return row[path]
    value: Any = row
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return MISSING
        value = value[part]
    return value


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


#: What :func:`lookup` returns for a path that is not in the row.
MISSING: Any = _Missing()
