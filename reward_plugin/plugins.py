"""The plugin manager of the stage registry, its built-in plugins and plugin loading."""

from __future__ import annotations

import importlib

import pluggy

from dataset_formats.errors import PluginError as _FormatPluginError
from dataset_formats.plugins import load_entry_points

from . import hookspecs
from .errors import PluginError

GROUP = "reward_plugin"

DEFAULT_PLUGINS = ("reward_plugin.stages.reward",)

pm = pluggy.PluginManager(GROUP)
pm.add_hookspecs(hookspecs)

_loaded = False


def load_plugins() -> pluggy.PluginManager:
    """Register the built-in stages and the ``reward_plugin`` entry points once; return the manager."""
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    for name in DEFAULT_PLUGINS:
        if pm.get_plugin(name) is None:
            try:
                pm.register(importlib.import_module(name), name=name)
            except ModuleNotFoundError as exc:
                if exc.name != name:
                    raise
    try:
        load_entry_points(pm, GROUP)
    except _FormatPluginError as exc:
        raise PluginError(exc.plugin, exc.problem) from exc
    pm.check_pending()
    return pm
