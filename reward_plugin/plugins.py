"""The plugin manager of the stage registry, its built-in plugins and plugin loading."""

from __future__ import annotations

import pluggy

from dataset_formats.plugin_registry import PluginLoader
from dataset_formats.plugin_registry import load_entry_points as _load_entry_points

from . import hookspecs
from .errors import PluginError

GROUP = "reward_plugin"

DEFAULT_PLUGINS = ("reward_plugin.stages.reward", "reward_plugin.pointwise.stage")

LOADER = PluginLoader(GROUP, hookspecs, DEFAULT_PLUGINS, plugin_error=PluginError)
pm = LOADER.pm


def load_plugins() -> pluggy.PluginManager:
    """Register the built-in stages and the ``reward_plugin`` entry points once; return the manager."""
    return LOADER.load()


def load_entry_points(manager: pluggy.PluginManager, group: str = GROUP) -> None:
    """Register the entry points of ``group`` (see :func:`dataset_formats.plugin_registry.load_entry_points`)."""
    _load_entry_points(manager, group, PluginError)


def plugin_distribution(plugin_name: str) -> str:
    """The distribution that provided a stage plugin (``"built-in"`` for ours)."""
    return LOADER.distribution(plugin_name)
