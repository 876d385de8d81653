"""Hook markers and specifications of the dataset-format registry (nothing else lives here)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("dataset_formats")
hookimpl = pluggy.HookimplMarker("dataset_formats")


@hookspec
def register_formats(register: Callable[..., None]) -> None:
    """Register format adapters by calling ``register(adapter)`` once per adapter.

    ``adapter`` is an instance of a :class:`dataset_formats.FormatAdapter` subclass. Names must be
    unique across all plugins; a duplicate is an error naming both plugins.
    """


@hookspec(firstresult=True)
def detect_format(columns: list[str], sample: list[dict[str, Any]]) -> str | None:
    """Return the name of the format that fits ``columns`` and the first rows ``sample``, or None.

    ``firstresult``: the first plugin that returns a name wins. Built-ins are ``trylast`` so
    third-party detectors are asked first.
    """


@hookspec(firstresult=True)
def resolve_dataset(catalog: str, name: str) -> Any:
    """Resolve the dataset ``name`` of the catalog ``catalog`` to its files, format and options.

    A catalog is a file (or folder) that names datasets, such as LLaMA-Factory's
    ``dataset_info.json``. Return a :class:`dataset_formats.catalogs.ResolvedDataset`, or None
    when ``catalog`` is not of a kind this plugin reads. ``firstresult``: the first answer wins;
    the built-in LLaMA-Factory resolver is ``trylast`` and takes any catalog, so a plugin's own
    catalogs are asked about first.
    """
