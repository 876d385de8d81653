"""reward_plugin: pairwise (Bradley-Terry) reward-model training on top of transformers.Trainer.

from reward_plugin import RewardConfig, RewardTrainer
trainer = RewardTrainer(model="path/or/name", args=RewardConfig(output_dir="out"), train_dataset=ds)
trainer.train()
"""

from .errors import ConfigError, DataError, PluginError, RewardPluginError, UnknownStageError
from .hookspecs import hookimpl

_LAZY = {
    "RewardConfig": ".config",
    "RewardTrainer": ".trainer",
    "RewardDataCollatorWithPadding": ".pairs.collators",
    "pairwise_loss": ".loss",
    "RewardScorer": ".serving.scorer",
}

__all__ = [
    "ConfigError",
    "DataError",
    "PluginError",
    "RewardConfig",
    "RewardDataCollatorWithPadding",
    "RewardPluginError",
    "RewardScorer",
    "RewardTrainer",
    "UnknownStageError",
    "hookimpl",
    "pairwise_loss",
]


def __getattr__(name: str):
    # torch/transformers load only when the trainer API is used, so the CLI starts fast.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'reward_plugin' has no attribute {name!r}")
