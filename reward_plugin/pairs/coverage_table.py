"""The committed model-coverage table (``coverage.json``) and what the layouts read from it.

Kept apart from :mod:`.coverage` (the proof that writes the table, which builds collators and
models) so that :mod:`.layout` can consult the table without importing the proof.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

#: The results of ``python -m reward_plugin.pairs.coverage --write``.
COVERAGE_FILE = Path(__file__).with_name("coverage.json")


@lru_cache(maxsize=1)
def load_coverage() -> dict[str, dict[str, Any]]:
    """The committed results, by model type."""
    data = json.loads(COVERAGE_FILE.read_text(encoding="utf-8"))
    return {entry["model_type"]: entry for entry in data["models"]}


def model_type_reason(
    model_type: str | None, implementation: str = "sdpa", attention: str = "segments"
) -> str | None:
    """Why the fast layouts are refused for ``model_type`` (from the committed results), or None when proven exact.

    Args:
        model_type: ``config.model_type`` of the model.
        implementation: its attention implementation (``sdpa``, ``eager``; ``flex_attention`` runs the
            dense mask through the model's own attention and is judged by the ``sdpa/mask`` result).
        attention: ``segments`` or ``mask`` (``RewardConfig.pair_attention``).
    """
    entry = load_coverage().get(model_type or "")
    if entry is None:
        return (
            f"model_type={model_type!r} is not among the types checked on the fast layouts (docs/models.md)"
        )
    if entry["reason"] is not None:
        return f"model_type={model_type!r}: {entry['reason']}"
    if implementation == "flex_attention":
        implementation, attention = "sdpa", "mask"
    path = f"{implementation}/{attention}"
    if path in entry["fast"]:
        return None
    error = entry["errors"].get(path)
    detail = f"differs from the standard forward by {error:.1e}" if isinstance(error, float) else error
    proven = ", ".join(entry["fast"])
    return f"model_type={model_type!r} with {path} {detail or 'was not checked'} (exact: {proven})"
