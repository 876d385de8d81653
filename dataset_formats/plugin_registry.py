"""The pluggy machinery both registries share (dataset formats here, training stages in reward_plugin).

Two pieces, one per concern:

* :class:`PluginLoader` owns a ``pluggy.PluginManager`` whose name is the marker name and the
  entry-point group; it registers the built-in plugins, then the entry points of the group
  (:func:`load_entry_points`: skipped while tests run unless ``REWARD_PLUGIN_LOAD_PLUGINS``
  names them), runs ``check_pending()`` and remembers which distribution gave which plugin.
* :class:`Collector` runs a ``register_<things>(register)`` hook: each plugin calls ``register``,
  and the collector validates the thing (through the registry's ``make_info``), refuses a
  duplicate name and records which plugin gave what. It caches the result until :meth:`reset`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, Generic, Protocol, TypeVar

import pluggy

from .errors import PluginError

#: Comma-separated entry-point or distribution names to load (unset: all; tests: none).
ALLOWLIST_ENV = "REWARD_PLUGIN_LOAD_PLUGINS"

#: ``(group, plugin name) -> distribution`` of the plugins loaded from entry points.
_DISTRIBUTIONS: dict[tuple[str, str], str] = {}


def allowlist() -> set[str] | None:
    """Names from ``REWARD_PLUGIN_LOAD_PLUGINS`` (comma-separated), or None when unset."""
    value = os.environ.get(ALLOWLIST_ENV)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def load_entry_points(
    manager: pluggy.PluginManager,
    group: str,
    plugin_error: type[Exception] = PluginError,
) -> None:
    """Register every entry point of ``group``, honouring the allowlist; import failures name the plugin.

    Entry points are skipped while the test suite runs (``sys._called_from_test``) unless the
    allowlist names them, so tests are hermetic.

    Args:
        manager: the plugin manager to register the modules in.
        group: the entry-point group (the manager's name).
        plugin_error: the error class raised for a plugin that fails to import, called with the
            plugin's name and the problem (each package raises its own ``PluginError``).
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
            raise plugin_error(
                f"{ep.name} ({dist})",
                f"failed to import entry point {ep.value!r}: {type(exc).__name__}: {exc}; "
                f"set {ALLOWLIST_ENV} to the plugins you want to run without it",
            ) from exc
        manager.register(module, name=ep.name)
        _DISTRIBUTIONS[(group, ep.name)] = dist


class PluginLoader:
    """A plugin manager, its built-in plugins and the entry points of its group, loaded once.

    Args:
        group: the marker, manager and entry-point group name (``dataset_formats``, ``reward_plugin``).
        hookspecs: the module holding the hook specifications.
        default_plugins: module names of the built-in plugins.
        plugin_error: the package's ``PluginError`` class (called with the plugin name and the
            problem); errors of this class pass through a collector unwrapped.
    """

    def __init__(
        self,
        group: str,
        hookspecs: ModuleType,
        default_plugins: Sequence[str],
        plugin_error: type[Exception] = PluginError,
    ):
        self.group = group
        self.default_plugins = tuple(default_plugins)
        self.plugin_error = plugin_error
        self.pm = pluggy.PluginManager(group)
        self.pm.add_hookspecs(hookspecs)
        self._loaded = False

    def load(self) -> pluggy.PluginManager:
        """Register the built-ins and the entry-point plugins (once); return the manager."""
        if self._loaded:
            return self.pm
        self._loaded = True
        for name in self.default_plugins:
            if self.pm.get_plugin(name) is None:
                self.pm.register(importlib.import_module(name), name=name)
        load_entry_points(self.pm, self.group, self.plugin_error)
        self.pm.check_pending()
        return self.pm

    def distribution(self, plugin_name: str) -> str:
        """The distribution that provided a plugin: ``built-in``, its distribution, or ``in-process``."""
        if plugin_name in self.default_plugins or plugin_name.startswith(f"{self.group}."):
            return "built-in"
        return _DISTRIBUTIONS.get((self.group, plugin_name), "in-process")


class _Named(Protocol):
    name: str
    plugin: str


InfoT = TypeVar("InfoT", bound=_Named)


class Collector(Generic[InfoT]):
    """Runs a ``register_<things>(register)`` hook and keeps what the plugins registered, by name.

    Args:
        loader: the :class:`PluginLoader` of the registry.
        hook: the collector hook's name (``register_formats``, ``register_stages``).
        make_info: ``make_info(thing, plugin_name, distribution)`` validates one registered
            thing and returns its info record (with ``name`` and ``plugin``); it raises the
            package's ``PluginError`` for a thing that is not valid.
        duplicate_error: ``duplicate_error(name, plugin, first_plugin)``: the error for a name
            two plugins register.
    """

    def __init__(
        self,
        loader: PluginLoader,
        hook: str,
        make_info: Callable[[Any, str, str], InfoT],
        duplicate_error: Callable[[str, str, str], Exception],
    ):
        self.loader = loader
        self.hook = hook
        self.make_info = make_info
        self.duplicate_error = duplicate_error
        self._cache: dict[str, InfoT] | None = None

    def collect(self) -> dict[str, InfoT]:
        """``{name: info}`` of everything the plugins register (cached until :meth:`reset`).

        Raises:
            PluginError: (the package's) an invalid or duplicate registration, or a hook that failed.
        """
        if self._cache is not None:
            return self._cache
        pm = self.loader.load()
        found: dict[str, InfoT] = {}
        for impl in getattr(pm.hook, self.hook).get_hookimpls():
            try:
                impl.function(register=self._registrar(impl.plugin_name, found))
            except self.loader.plugin_error:
                raise
            except Exception as exc:
                raise self.loader.plugin_error(
                    impl.plugin_name, f"{self.hook} failed: {type(exc).__name__}: {exc}"
                ) from exc
        self._cache = found
        return found

    def _registrar(self, plugin_name: str, found: dict[str, InfoT]) -> Callable[[Any], None]:
        distribution = self.loader.distribution(plugin_name)

        def register(thing: Any) -> None:
            info = self.make_info(thing, plugin_name, distribution)
            if info.name in found:
                raise self.duplicate_error(info.name, plugin_name, found[info.name].plugin)
            found[info.name] = info

        return register

    def reset(self) -> None:
        """Forget the collected things (after a plugin is registered or unregistered)."""
        self._cache = None

    def add_plugin(self, plugin: object, name: str) -> str:
        """Register ``plugin`` in-process under ``name`` and collect; undone if collecting fails."""
        self.loader.load()
        self.loader.pm.register(plugin, name=name)
        self.reset()
        try:
            self.collect()
        except Exception:
            self.loader.pm.unregister(name=name)
            self.reset()
            raise
        return name

    def remove_plugin(self, name: str) -> None:
        """Unregister the plugin called ``name`` and forget the collected things."""
        self.loader.pm.unregister(name=name)
        self.reset()
