"""Collects adapters from the plugins: ``list_formats()``, ``get_format()``, ``register_format()``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import plugins
from .adapter import FormatAdapter
from .errors import DuplicateFormatError, PluginError, UnknownFormatError
from .plugin_registry import Collector


@dataclass(frozen=True)
class FormatInfo:
    """A registered adapter and where it came from."""

    name: str
    description: str
    plugin: str
    distribution: str
    adapter: FormatAdapter


def _format_info(adapter: Any, plugin: str, distribution: str) -> FormatInfo:
    """Check one adapter a plugin registered (a class is instantiated) and describe it."""
    if isinstance(adapter, type) and issubclass(adapter, FormatAdapter):
        adapter = adapter()
    if not isinstance(adapter, FormatAdapter):
        raise PluginError(plugin, f"registered {adapter!r}, which is not a FormatAdapter instance")
    if not adapter.name or not isinstance(adapter.name, str):
        raise PluginError(plugin, f"adapter {type(adapter).__name__} has no name")
    return FormatInfo(adapter.name, adapter.description, plugin, distribution, adapter)


_formats: Collector[FormatInfo] = Collector(
    plugins.LOADER, "register_formats", _format_info, DuplicateFormatError
)


def _collect() -> dict[str, FormatInfo]:
    return _formats.collect()


def reset() -> None:
    """Forget the collected adapters (after registering or unregistering a plugin)."""
    _formats.reset()


def list_formats() -> list[FormatInfo]:
    """Every registered adapter, sorted by name."""
    return sorted(_collect().values(), key=lambda info: info.name)


def get_format(name: str) -> FormatAdapter:
    """The adapter registered as ``name``; ``UnknownFormatError`` lists the valid names."""
    formats = _collect()
    if name not in formats:
        raise UnknownFormatError(name, list(formats))
    return formats[name].adapter


def register_format(adapter: FormatAdapter | type[FormatAdapter], *, plugin_name: str | None = None) -> str:
    """Register an adapter in-process (notebooks, tests): wraps it in a tiny plugin. Returns the plugin name."""
    from .hookspecs import hookimpl

    instance = adapter() if isinstance(adapter, type) else adapter
    name = plugin_name or f"in-process:{instance.name}"

    class _Plugin:
        @staticmethod
        @hookimpl
        def register_formats(register):
            register(instance)

    return _formats.add_plugin(_Plugin, name)


def unregister_format_plugin(plugin_name: str) -> None:
    """Remove a plugin registered with :func:`register_format` (or any plugin) by name."""
    _formats.remove_plugin(plugin_name)


def detect_format(columns: list[str], sample: list[dict[str, Any]]) -> str | None:
    """Ask the plugins which format fits (``firstresult``); None when none does."""
    return plugins.load_plugins().hook.detect_format(columns=columns, sample=sample)
