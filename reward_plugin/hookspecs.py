"""Hook markers and specifications of the stage registry (nothing else lives here)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("reward_plugin")
hookimpl = pluggy.HookimplMarker("reward_plugin")


@hookspec
def register_stages(register: Callable[..., None]) -> None:
    """Register training stages by calling ``register(stage)`` once per stage.

    ``stage`` is an instance of a :class:`reward_plugin.stages.Stage` subclass; names are unique.
    """


@hookspec
def register_commands(cli: argparse._SubParsersAction) -> None:
    """Add sub-commands to the ``reward-plugin`` CLI (``cli.add_parser(...)``; set ``func``)."""
