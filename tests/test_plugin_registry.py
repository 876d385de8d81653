"""The pluggy helper both registries use: loading, collecting, validation, duplicates, undo."""

from __future__ import annotations

import types
from dataclasses import dataclass

import pluggy
import pytest

from dataset_formats import plugins as format_plugins
from dataset_formats.errors import DuplicateFormatError
from dataset_formats.errors import PluginError as FormatPluginError
from dataset_formats.plugin_registry import Collector, PluginLoader
from reward_plugin import plugins as stage_plugins
from reward_plugin.errors import PluginError as StagePluginError
from reward_plugin.stages import list_stages
from reward_plugin.stages.registry import _stages

register_stage_plugin = _stages.add_plugin

hookspec = pluggy.HookspecMarker("toys")
hookimpl = pluggy.HookimplMarker("toys")
specs = types.ModuleType("toy_specs")


@hookspec
def register_toys(register):
    """Register toys."""


specs.register_toys = register_toys


class ToyError(Exception):
    def __init__(self, plugin: str, problem: str):
        super().__init__(f"{plugin}: {problem}")


@dataclass(frozen=True)
class ToyInfo:
    name: str
    plugin: str
    distribution: str


def make_info(thing, plugin, distribution):
    if not isinstance(thing, str):
        raise ToyError(plugin, f"not a toy: {thing!r}")
    return ToyInfo(thing, plugin, distribution)


def plugin_of(*names, fail=None):
    class Plugin:
        @staticmethod
        @hookimpl
        def register_toys(register):
            for name in names:
                register(name)
            if fail is not None:
                raise fail

    return Plugin


def toy_collector():
    loader = PluginLoader("toys", specs, (), plugin_error=ToyError)
    return Collector(loader, "register_toys", make_info, lambda n, p, f: ToyError(p, f"{n!r} taken by {f}"))


def test_collects_what_each_plugin_registers_and_where_it_came_from():
    toys = toy_collector()
    toys.add_plugin(plugin_of("ball", "kite"), "a")
    toys.add_plugin(plugin_of("yo-yo"), "b")
    assert toys.collect() == {
        "ball": ToyInfo("ball", "a", "in-process"),
        "kite": ToyInfo("kite", "a", "in-process"),
        "yo-yo": ToyInfo("yo-yo", "b", "in-process"),
    }
    toys.remove_plugin("a")
    assert list(toys.collect()) == ["yo-yo"]


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        (plugin_of("ball"), "second: 'ball' taken by first"),  # a duplicate name
        (plugin_of(7), "second: not a toy: 7"),  # make_info refuses it
        (plugin_of(fail=KeyError("x")), "second: register_toys failed: KeyError: 'x'"),  # the hook crashed
    ],
)
def test_a_bad_plugin_is_named_and_its_registration_undone(plugin, message):
    toys = toy_collector()
    toys.add_plugin(plugin_of("ball"), "first")
    with pytest.raises(ToyError) as info:
        toys.add_plugin(plugin, "second")
    assert str(info.value) == message
    assert toys.loader.pm.get_plugin("second") is None and list(toys.collect()) == ["ball"]


def test_both_packages_use_the_helper_with_their_own_errors():
    assert isinstance(format_plugins.LOADER, PluginLoader) and isinstance(stage_plugins.LOADER, PluginLoader)
    assert format_plugins.LOADER.plugin_error is FormatPluginError
    assert stage_plugins.LOADER.plugin_error is StagePluginError
    assert issubclass(DuplicateFormatError, FormatPluginError)
    assert format_plugins.plugin_distribution("dataset_formats.adapters.hh_rlhf") == "built-in"
    assert stage_plugins.plugin_distribution("reward_plugin.stages.reward") == "built-in"


def test_a_stage_plugin_whose_hook_crashes_is_a_stage_plugin_error():
    from reward_plugin.hookspecs import hookimpl as stage_hookimpl

    class Crashing:
        @staticmethod
        @stage_hookimpl
        def register_stages(register):
            raise RuntimeError("boom")

    with pytest.raises(StagePluginError) as info:
        register_stage_plugin(Crashing, "crashing")
    assert str(info.value) == "plugin 'crashing': register_stages failed: RuntimeError: boom"
    assert stage_plugins.pm.get_plugin("crashing") is None
    assert [i.name for i in list_stages()] == ["pointwise", "reward"]  # the built-in stages
