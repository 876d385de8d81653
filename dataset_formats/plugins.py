"""The plugin manager of the dataset-format registry, its built-in plugins and plugin loading."""

from __future__ import annotations

import pluggy

from . import hookspecs
from .plugin_registry import ALLOWLIST_ENV, PluginLoader, allowlist, load_entry_points

__all__ = [
    "ALLOWLIST_ENV",
    "DEFAULT_PLUGINS",
    "GROUP",
    "allowlist",
    "load_entry_points",
    "load_plugins",
    "plugin_distribution",
    "pm",
]

GROUP = "dataset_formats"

DEFAULT_PLUGINS = (
    "dataset_formats.adapters.hh_rlhf",
    "dataset_formats.adapters.preference",
    "dataset_formats.adapters.chat",
    "dataset_formats.adapters.llamafactory",
    "dataset_formats.adapters.axolotl",
    "dataset_formats.adapters.scores",
    "dataset_formats.adapters.ranking",
    "dataset_formats.adapters.rm_bench",
    "dataset_formats.adapters.rewardbench",
    "dataset_formats.adapters.detect",
)

LOADER = PluginLoader(GROUP, hookspecs, DEFAULT_PLUGINS)
pm = LOADER.pm


def load_plugins() -> pluggy.PluginManager:
    """Register the built-ins and the entry-point plugins once; return the manager."""
    return LOADER.load()


def plugin_distribution(plugin_name: str) -> str:
    """The distribution that provided a plugin ("built-in" for ours)."""
    return LOADER.distribution(plugin_name)
