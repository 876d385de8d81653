"""The trainer's arguments: defaults, ``max_length`` given to the trainer, what data preparation reads."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..config import RewardConfig
from ..errors import ConfigError

logger = logging.getLogger(__name__)


def reward_args(model: Any, args: RewardConfig | None, max_length: int | None) -> RewardConfig:
    """``args`` (default: ``output_dir="<model>-reward"``) with ``max_length`` applied."""
    if args is None:
        name = (
            model if isinstance(model, str) else getattr(getattr(model, "config", None), "_name_or_path", "")
        )
        args = RewardConfig(output_dir=f"{Path(str(name or 'model')).name or 'model'}-reward")
    elif not isinstance(args, RewardConfig):
        raise ConfigError(
            f"`args` must be a reward_plugin.RewardConfig, got {type(args).__name__}; build one with "
            "RewardConfig(output_dir=..., ...)"
        )
    if max_length is not None:
        if args.max_length is not None and args.max_length != max_length:
            logger.warning(
                "max_length=%d given to the trainer overrides args.max_length=%d", max_length, args.max_length
            )
        args.max_length = max_length
    if args.n_gpu > 1:
        raise ConfigError(
            "RewardTrainer does not run under nn.DataParallel (several GPUs in one process); launch with "
            "`accelerate launch` or `torchrun`, or expose one GPU with CUDA_VISIBLE_DEVICES"
        )
    return args


def given_tokenizer(model: Any, model_init: Any, processing_class: Any, tokenizer: Any) -> Any:
    """The tokenizer given as ``processing_class`` or by its old name ``tokenizer`` (None when neither);
    raises when there is no model to train or the two names carry different tokenizers."""
    if model is None and model_init is None:
        raise ConfigError("pass `model` (a model or a name/path) or `model_init`")
    if tokenizer is not None and processing_class is not None and tokenizer is not processing_class:
        raise ConfigError("pass the tokenizer once: `processing_class` or its old name `tokenizer`, not both")
    return processing_class if processing_class is not None else tokenizer


def all_datasets(train_dataset: Any, eval_dataset: Any) -> list[Any]:
    """The train set and every eval set (a dict's values), the ones given."""
    evals = eval_dataset.values() if isinstance(eval_dataset, dict) else [eval_dataset]
    return [ds for ds in [train_dataset, *evals] if ds is not None]


def dataset_options(args: RewardConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`reward_plugin.data.prepare_dataset` that come from ``args``."""
    return {
        "dataset_format": args.dataset_format,
        "max_length": args.max_length,
        "truncation": args.truncation,
        "chat_template": args.chat_template,
        "format_options": args.dataset_format_options,
        "on_error": args.dataset_on_error,
        "num_proc": args.dataset_num_proc,
    }
