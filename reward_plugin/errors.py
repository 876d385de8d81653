"""Errors raised by the trainer plugin; the CLI prints the base class as one line."""

from __future__ import annotations


class RewardPluginError(Exception):
    """Base class of every error raised by :mod:`reward_plugin`."""


class ConfigError(RewardPluginError, ValueError):
    """A bad configuration value or key; the message names it and says how to fix it."""


class DataError(RewardPluginError, ValueError):
    """A training/eval dataset without the columns the trainer needs."""


class UnknownStageError(RewardPluginError, LookupError):
    """A stage name that no registered plugin provides."""

    def __init__(self, name: str, available: list[str]):
        self.name = name
        self.available = sorted(available)
        super().__init__(f"unknown stage {name!r}; available stages: {', '.join(self.available)}")


class PluginError(RewardPluginError, RuntimeError):
    """A stage plugin failed to load or registered something invalid."""

    def __init__(self, plugin: str, problem: str):
        self.plugin = plugin
        self.problem = problem
        super().__init__(f"plugin {plugin!r}: {problem}")


class UnsupportedModelError(RewardPluginError, ValueError):
    """A model architecture a fast pair-batching mode cannot run exactly."""
