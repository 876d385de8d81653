"""The stage registry: what the ``register_stages`` hooks register, looked up by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dataset_formats.plugin_registry import ALLOWLIST_ENV, Collector

from .. import plugins
from ..errors import PluginError, UnknownStageError
from .base import Stage


@dataclass(frozen=True)
class StageInfo:
    """A registered stage and where it came from."""

    name: str
    description: str
    plugin: str
    distribution: str
    stage: Stage


def plugin_distribution(plugin_name: str) -> str:
    """The distribution that provided a stage plugin (``"built-in"`` for ours)."""
    return plugins.plugin_distribution(plugin_name)


def _stage_info(stage: Any, plugin: str, distribution: str) -> StageInfo:
    """Check one stage a plugin registered (a class is instantiated) and describe it."""
    if isinstance(stage, type) and issubclass(stage, Stage):
        stage = stage()
    if not isinstance(stage, Stage):
        raise PluginError(plugin, f"registered {stage!r}, which is not a reward_plugin.stages.Stage instance")
    if not isinstance(stage.name, str) or not stage.name:
        raise PluginError(plugin, f"stage {type(stage).__name__} has no name; set its `name`")
    return StageInfo(stage.name, stage.description, plugin, distribution, stage)


def _duplicate(name: str, plugin: str, first_plugin: str) -> PluginError:
    return PluginError(
        plugin,
        f"stage {name!r} is already registered by plugin {first_plugin!r}; "
        f"uninstall one of the two or leave one out of {ALLOWLIST_ENV}",
    )


_stages: Collector[StageInfo] = Collector(plugins.LOADER, "register_stages", _stage_info, _duplicate)


def reset() -> None:
    """Forget the collected stages (after registering or unregistering a plugin)."""
    _stages.reset()


def list_stages() -> list[StageInfo]:
    """Every registered stage, sorted by name."""
    return sorted(_stages.collect().values(), key=lambda info: info.name)


def get_stage(name: str) -> Stage:
    """The stage registered as ``name``.

    Raises:
        UnknownStageError: no plugin registers ``name``; the message lists the registered names.
    """
    stages = _stages.collect()
    if name not in stages:
        raise UnknownStageError(name, list(stages))
    return stages[name].stage


def register_stage(stage: Stage | type[Stage], *, plugin_name: str | None = None) -> str:
    """Register a stage in-process (notebooks, tests) as a tiny plugin; return the plugin's name.

    Raises:
        PluginError: ``stage`` is not a :class:`Stage` or its name is taken.
    """
    from ..hookspecs import hookimpl

    instance = stage() if isinstance(stage, type) else stage
    name = plugin_name or f"in-process:{getattr(instance, 'name', '?')}"

    class _Plugin:
        @staticmethod
        @hookimpl
        def register_stages(register):
            register(instance)

    return _stages.add_plugin(_Plugin, name)


def unregister_stage_plugin(plugin_name: str) -> None:
    """Remove a plugin (for instance one added by :func:`register_stage`) by name."""
    _stages.remove_plugin(plugin_name)
