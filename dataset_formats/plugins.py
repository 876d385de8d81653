"""The plugin manager of the dataset-format registry, its built-in plugins and plugin loading."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys

import pluggy

from . import hookspecs
from .errors import PluginError

GROUP = "dataset_formats"
ALLOWLIST_ENV = "REWARD_PLUGIN_LOAD_PLUGINS"

DEFAULT_PLUGINS = (
    "dataset_formats.adapters.hh_rlhf",
    "dataset_formats.adapters.preference",
    "dataset_formats.adapters.chat",
    "dataset_formats.adapters.llamafactory",
    "dataset_formats.adapters.axolotl",
    "dataset_formats.adapters.scores",
    "dataset_formats.adapters.ranking",
    "dataset_formats.adapters.rm_bench",
    "dataset_formats.adapters.detect",
)

pm = pluggy.PluginManager(GROUP)
pm.add_hookspecs(hookspecs)

_loaded = False


def allowlist() -> set[str] | None:
    """Names from ``REWARD_PLUGIN_LOAD_PLUGINS`` (comma-separated), or None when unset."""
    value = os.environ.get(ALLOWLIST_ENV)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def load_entry_points(manager: pluggy.PluginManager, group: str) -> None:
    """Register every entry point of ``group``, honouring the allowlist; import failures name the plugin.

    Entry points are skipped while the test suite runs (``sys._called_from_test``) unless the
    allowlist names them, so tests are hermetic.
    """
    allowed = allowlist()
    if allowed is None and getattr(sys, "_called_from_test", False):
        return
    for ep in importlib.metadata.entry_points(group=group):
        dist = ep.dist.name if ep.dist is not None else "?"
        if allowed is not None and ep.name not in allowed and dist not in allowed:
            continue
        if manager.get_plugin(ep.name) is not None:
            continue
        try:
            module = ep.load()
        except Exception as exc:  # any import-time failure of a third-party plugin
            raise PluginError(
                f"{ep.name} ({dist})",
                f"failed to import entry point {ep.value!r}: {type(exc).__name__}: {exc}; "
                f"set {ALLOWLIST_ENV} to the plugins you want to run without it",
            ) from exc
        manager.register(module, name=ep.name)
        _DISTS[ep.name] = dist


_DISTS: dict[str, str] = {}


def plugin_distribution(plugin_name: str) -> str:
    """The distribution that provided a plugin ("built-in" for ours)."""
    if plugin_name in DEFAULT_PLUGINS or plugin_name.startswith("dataset_formats."):
        return "built-in"
    return _DISTS.get(plugin_name, "in-process")


def load_plugins() -> pluggy.PluginManager:
    """Register the built-ins and the entry-point plugins once; return the manager."""
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    for name in DEFAULT_PLUGINS:
        if pm.get_plugin(name) is None:
            pm.register(importlib.import_module(name), name=name)
    load_entry_points(pm, GROUP)
    pm.check_pending()
    return pm
