"""Collects adapters from the plugins: ``list_formats()``, ``get_format()``, ``register_format()``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import plugins
from .adapter import FormatAdapter
from .errors import DuplicateFormatError, PluginError, UnknownFormatError


@dataclass(frozen=True)
class FormatInfo:
    """A registered adapter and where it came from."""

    name: str
    description: str
    plugin: str
    distribution: str
    adapter: FormatAdapter


_cache: dict[str, FormatInfo] | None = None


def _collect() -> dict[str, FormatInfo]:
    global _cache
    if _cache is not None:
        return _cache
    pm = plugins.load_plugins()
    found: dict[str, FormatInfo] = {}
    for impl in pm.hook.register_formats.get_hookimpls():
        plugin_name = impl.plugin_name

        def register(adapter: Any, _plugin: str = plugin_name) -> None:
            if isinstance(adapter, type) and issubclass(adapter, FormatAdapter):
                adapter = adapter()
            if not isinstance(adapter, FormatAdapter):
                raise PluginError(_plugin, f"registered {adapter!r}, which is not a FormatAdapter instance")
            if not adapter.name or not isinstance(adapter.name, str):
                raise PluginError(_plugin, f"adapter {type(adapter).__name__} has no name")
            if adapter.name in found:
                raise DuplicateFormatError(adapter.name, _plugin, found[adapter.name].plugin)
            found[adapter.name] = FormatInfo(
                adapter.name,
                adapter.description,
                _plugin,
                plugins.plugin_distribution(_plugin),
                adapter,
            )

        try:
            impl.function(register=register)
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(plugin_name, f"register_formats failed: {type(exc).__name__}: {exc}") from exc
    _cache = found
    return found


def reset() -> None:
    """Forget the collected adapters (after registering or unregistering a plugin)."""
    global _cache
    _cache = None


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

    plugins.load_plugins()
    plugins.pm.register(_Plugin, name=name)
    reset()
    try:
        _collect()
    except Exception:
        plugins.pm.unregister(name=name)
        reset()
        raise
    return name


def unregister_format_plugin(plugin_name: str) -> None:
    """Remove a plugin registered with :func:`register_format` (or any plugin) by name."""
    plugins.pm.unregister(name=plugin_name)
    reset()


def detect_format(columns: list[str], sample: list[dict[str, Any]]) -> str | None:
    """Ask the plugins which format fits (``firstresult``); None when none does."""
    return plugins.load_plugins().hook.detect_format(columns=columns, sample=sample)
