"""Training stages: the :class:`Stage` base class and the registry host tools look stages up in.

A stage is one kind of training run (the built-in ``reward`` stage trains a pairwise reward
model). Plugins register stages through the ``register_stages(register)`` hook; the built-in
stage is registered the same way, with ``trylast=True``. A host tool (our ``reward-plugin
train`` runner, the Axolotl plugin) resolves a name with :func:`get_stage` and drives the
stage's steps::

    stage = get_stage("reward")
    cfg = stage.validate_config(section)          # the YAML mapping of the run
    result = stage.run(cfg)                        # or call the build_* steps one by one

Modules: :mod:`.base` (the :class:`Stage` base class and :class:`StageResult`), :mod:`.registry`
(the stages the plugins register, by name), :mod:`.checkpoints` (where a resumed run continues),
:mod:`.sources` (a run's data sources) and :mod:`.reward` (the built-in ``reward`` stage).
"""

from __future__ import annotations

from .base import Stage, StageResult
from .checkpoints import last_complete_checkpoint, resolve_checkpoint
from .registry import (
    StageInfo,
    get_stage,
    list_stages,
    plugin_distribution,
    register_stage,
    reset,
    unregister_stage_plugin,
)

__all__ = [
    "Stage",
    "StageInfo",
    "StageResult",
    "get_stage",
    "last_complete_checkpoint",
    "list_stages",
    "plugin_distribution",
    "register_stage",
    "reset",
    "resolve_checkpoint",
    "unregister_stage_plugin",
]
