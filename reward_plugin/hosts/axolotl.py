"""Axolotl host: run our ``reward`` stage inside ``axolotl train`` as an Axolotl plugin.

Enable it with one line of the Axolotl YAML, the plugin's entry in ``plugins:``. A reward-model
config (``reward_model: true``, as in Axolotl's own reward-model examples) then runs the ``reward``
stage; any other config needs ``reward_stage: reward`` to turn the plugin on, so the plugin can stay
listed in configs that train other things. Configure it with top-level ``reward_*`` keys
(Axolotl drops unknown keys inside ``datasets:`` entries, so per-run settings live at the top)::

    base_model: path/to/model
    plugins:
      - reward_plugin.hosts.axolotl.RewardPlugin
    reward_stage: reward                 # turns the plugin on (implied by reward_model: true)
    reward_dataset_format: hh-rlhf       # any `reward-plugin formats` name, or auto
    datasets:
      - path: data/train.jsonl.gz        # raw rows, converted by the dataset toolkit
    sequence_len: 512

When on, the plugin (1) loads the ``datasets:``/``test_datasets:`` files
through the stage (so every dataset-toolkit format works, raw hh-rlhf and score/ranking data
included), (2) makes Axolotl build our :class:`~reward_plugin.RewardTrainer` (margin,
centering, reward metrics, our collator) from Axolotl's training arguments, and (3) adds the
reward statistics (``reward_stats.json``, ``reward_mean``/``reward_std`` in ``config.json``)
to the exported model. ``reward_model: true`` is implied (Axolotl then loads the model with
``AutoModelForSequenceClassification``, ``num_labels=1``).

The key mapping (:func:`stage_settings`, :func:`to_reward_config`) does not need Axolotl; the
plugin class does (``pip install 'reward-plugin[axolotl]'``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from dataset_formats.on_error import DEFAULT_ON_ERROR

from ..errors import ConfigError, PluginError
from .axolotl_fit import dataset_format, fit_axolotl_config

try:  # the mapping helpers above the plugin stay importable without Axolotl
    from axolotl.integrations.base import BasePlugin
except ImportError as _exc:  # pragma: no cover - depends on the environment
    BasePlugin = object  # type: ignore[assignment,misc]
    _AXOLOTL_IMPORT_ERROR: ImportError | None = _exc
else:
    _AXOLOTL_IMPORT_ERROR = None

logger = logging.getLogger(__name__)

__all__ = ["RewardPlugin", "RewardPluginArgs", "active", "stage_settings", "to_reward_config"]

#: The plugin's entry in an Axolotl ``plugins:`` list.
PLUGIN_NAME = "reward_plugin.hosts.axolotl.RewardPlugin"


class RewardPluginArgs(BaseModel):
    """The top-level Axolotl config keys of the plugin (merged into Axolotl's config schema)."""

    reward_stage: str | None = Field(
        None,
        description="stage to run (`reward-plugin stages`); unset: `reward` when reward_model is true, else off",
    )
    reward_dataset_format: str | None = Field(None, description="format of raw data files, or auto (default)")
    reward_dataset_options: dict[str, Any] | None = Field(None, description="options of that format")
    reward_on_error: Literal["raise", "skip"] | None = Field(
        None, description="bad raw rows: raise (default) or skip"
    )
    reward_chat_template: str | None = Field(None, description="chat template: bundled name or .jinja path")
    reward_max_length: int | None = Field(
        None, description="cut sequences longer than this (default sequence_len)"
    )
    reward_truncation: Literal["left", "right"] | None = Field(None, description="side cut (default left)")
    reward_margin: bool | float | None = Field(
        None,
        description="true (default): the data's margins; false: none; a number: this margin for every pair",
    )
    reward_center_rewards_coefficient: float | None = Field(None, description="weight of mean((rc + rr)^2)")
    reward_pair_batching: Literal["standard", "prefix_shared", "packed", "auto"] | None = Field(
        None, description="forward-pass layout of a pair (RewardConfig.pair_batching)"
    )
    reward_pair_attention: Literal["auto", "segments", "mask", "varlen", "flex"] | None = Field(
        None, description="attention of the fast layouts (RewardConfig.pair_attention)"
    )
    reward_group_loss: Literal["bradley_terry", "plackett_luce", "best_vs_rest"] | None = Field(
        None,
        description="loss over grouped tables (convert --groups): bradley_terry (default), plackett_luce, best_vs_rest",
    )
    reward_disable_dropout: bool | None = Field(None, description="set every dropout to 0 (default true)")
    reward_save_stats: bool | None = Field(None, description="save reward mean/std (default true)")


#: Axolotl's fused LoRA kernel switches (causal-LM models only).
LORA_KERNEL_KEYS = ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "lora_embedding_kernel")
#: The plugin's keys, in the order of :class:`RewardPluginArgs`.
PLUGIN_KEYS = tuple(RewardPluginArgs.model_fields)
#: Plugin keys -> RewardConfig fields they set directly.
_FIELD_KEYS = {
    "reward_dataset_format": "dataset_format",
    "reward_chat_template": "chat_template",
    "reward_truncation": "truncation",
    "reward_center_rewards_coefficient": "center_rewards_coefficient",
    "reward_pair_batching": "pair_batching",
    "reward_pair_attention": "pair_attention",
    "reward_group_loss": "group_loss",
    "reward_disable_dropout": "disable_dropout",
    "reward_save_stats": "save_reward_stats",
}


def _get(cfg: Mapping[str, Any], key: str) -> Any:
    value = cfg.get(key) if hasattr(cfg, "get") else getattr(cfg, key, None)
    return value


def stage_name(cfg: Mapping[str, Any]) -> str | None:
    """The stage the plugin runs for this Axolotl config, or None when the plugin is off.

    ``reward_stage`` names it; without that key a reward-model config (``reward_model: true``, what
    Axolotl's own reward-model examples set) runs ``reward``, so listing the plugin is the one line
    that switches such a config over. Any other config leaves the plugin off.
    """
    name = _get(cfg, "reward_stage")
    if name:
        return str(name)
    return "reward" if _get(cfg, "reward_model") is True else None


def active(cfg: Mapping[str, Any]) -> bool:
    """Whether the plugin is on for this Axolotl config (see :func:`stage_name`)."""
    return stage_name(cfg) is not None


def stage_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`~reward_plugin.RewardConfig` fields an Axolotl config sets through the plugin.

    ``reward_max_length`` defaults to ``sequence_len``; ``reward_center_rewards_coefficient``
    falls back to Axolotl's own ``center_rewards_coefficient``; ``flash_attention: true`` (or a
    flash ``attn_implementation``) sets ``pair_attention`` to ``varlen`` unless
    ``reward_pair_attention`` says otherwise.

    Args:
        cfg: the Axolotl config (a mapping, validated or not).

    Returns:
        ``{field: value}`` for the fields the config sets (``reward_margin`` is a dataset
        setting and not among them, see :func:`apply_margin_policy`).

    Raises:
        ConfigError: a value of the wrong type; the message names the key.
    """
    settings: dict[str, Any] = {}
    for key, name in _FIELD_KEYS.items():
        value = _get(cfg, key)
        if value is not None:
            settings[name] = value
    if "pair_attention" not in settings and (
        _get(cfg, "flash_attention")
        or _get(cfg, "attn_implementation") in ("flash_attention_2", "flash_attention_3")
    ):
        # Axolotl loads the model with flash attention, which ignores masks: pairs stay packed through
        # flash-attn's variable-length function (the varlen backend).
        settings["pair_attention"] = "varlen"
    if "chat_template" not in settings and _get(cfg, "chat_template"):
        settings["chat_template"] = "tokenizer"  # Axolotl attaches its chat_template to the tokenizer
    if "center_rewards_coefficient" not in settings and _get(cfg, "center_rewards_coefficient") is not None:
        settings["center_rewards_coefficient"] = _get(cfg, "center_rewards_coefficient")
    max_length = _get(cfg, "reward_max_length")
    if max_length is None:
        max_length = _get(cfg, "sequence_len")
    if max_length is not None:
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ConfigError(f"`reward_max_length` must be a positive integer, got {max_length!r}")
        settings["max_length"] = max_length
    coefficient = settings.get("center_rewards_coefficient")
    if coefficient is not None and (
        isinstance(coefficient, bool) or not isinstance(coefficient, (int, float))
    ):
        raise ConfigError(
            f"`reward_center_rewards_coefficient` must be a number such as 0.01, got {coefficient!r}"
        )
    margin = _get(cfg, "reward_margin")
    if margin is not None and not isinstance(margin, (bool, int, float)):
        raise ConfigError(
            f"`reward_margin` must be true (use the data's margins), false (ignore them) or a number, got {margin!r}"
        )
    options = _get(cfg, "reward_dataset_options")
    if options is not None and not isinstance(options, Mapping):
        raise ConfigError(f"`reward_dataset_options` must be a mapping of format options, got {options!r}")
    if _get(cfg, "reward_on_error") not in (None, "raise", "skip"):
        raise ConfigError(
            f"`reward_on_error` must be 'raise' or 'skip', got {_get(cfg, 'reward_on_error')!r}"
        )
    return settings


def data_sources(cfg: Mapping[str, Any], key: str = "datasets") -> list[dict[str, Any]]:
    """The Axolotl ``datasets:`` (or ``test_datasets:``) entries as stage data sources.

    An entry's ``path`` (or its ``data_files``) names local files or a ``datasets`` folder; its
    ``type``, when given, must be a dataset-toolkit format and overrides ``reward_dataset_format``;
    Axolotl's ``bradley_terry.chat_template`` is read as ``axolotl-bt``
    (:data:`reward_plugin.hosts.axolotl_fit.AXOLOTL_DATASET_TYPES`), and the entry's
    ``drop_system_message`` becomes that adapter's option of the same name.

    Raises:
        ConfigError: an entry without files, or a ``type`` that is no dataset-toolkit format.
    """
    from dataset_formats import list_formats

    entries = _get(cfg, key) or []
    formats = {info.name for info in list_formats()}
    options = dict(_get(cfg, "reward_dataset_options") or {})
    on_error = _get(cfg, "reward_on_error") or DEFAULT_ON_ERROR
    sources = []
    for i, entry in enumerate(entries):
        entry = dict(entry)
        files = entry.get("data_files") or entry.get("path")
        if not files:
            raise ConfigError(f"`{key}[{i}]` has no `path`; give a local data file or folder")
        paths = [str(p) for p in files] if isinstance(files, (list, tuple)) else [str(files)]
        source: dict[str, Any] = {"path": paths, "on_error": on_error}
        kind = dataset_format(entry.get("type"))  # Axolotl's bradley_terry.chat_template -> axolotl-bt
        if kind:
            if not isinstance(kind, str) or kind not in formats:
                raise ConfigError(
                    f"`{key}[{i}].type` is {kind!r}, which is not a dataset-toolkit format; with reward_stage "
                    f"use one of {', '.join(sorted(formats))}, or leave `type` out and set `reward_dataset_format`"
                )
            source["format"] = kind
        entry_options = dict(options)
        if (kind or _get(cfg, "reward_dataset_format")) == "axolotl-bt" and entry.get(
            "drop_system_message"
        ) is not None:
            entry_options["drop_system_message"] = bool(entry["drop_system_message"])
        if entry_options:
            source["options"] = entry_options
        sources.append(source)
    return sources


def stage_section(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The ``reward`` stage config equivalent to an Axolotl config (used to build the datasets).

    ``datasets`` -> ``train_data``, ``test_datasets`` -> ``eval_data``, ``val_set_size`` ->
    ``eval_size``, ``base_model`` -> ``model``, plus :func:`stage_settings`.
    """
    section: dict[str, Any] = {
        "model": str(_get(cfg, "base_model") or ""),
        "train_data": data_sources(cfg, "datasets"),
        "output_dir": str(_get(cfg, "output_dir") or "outputs/reward-model"),
        **stage_settings(cfg),
    }
    if _get(cfg, "tokenizer_config"):
        section["tokenizer"] = str(_get(cfg, "tokenizer_config"))
    if _get(cfg, "test_datasets"):
        section["eval_data"] = data_sources(cfg, "test_datasets")
    elif _get(cfg, "val_set_size"):
        size = _get(cfg, "val_set_size")  # Axolotl: a fraction below 1, a number of rows from 1 up (a float)
        section["eval_size"] = (
            int(size) if isinstance(size, float) and size >= 1 and size.is_integer() else size
        )
    for key, name in (("seed", "seed"), ("dataset_processes", "dataset_num_proc")):
        if _get(cfg, key) is not None:
            section[name] = _get(cfg, key)
    return section


def apply_margin_policy(dataset: Any, margin: bool | float | None) -> Any:
    """Apply ``reward_margin``: None/true keep the data's margins, false drops them, a number replaces them.

    On a grouped table the margins are those of the pairs inside each group (``pairs[].margin``).
    """
    from dataset_formats.groups import PAIRS_COLUMN, is_group_table
    from dataset_formats.schema import MARGIN_COLUMN

    if dataset is None or margin is None or margin is True:
        return dataset
    if is_group_table(dataset.column_names):
        value = None if margin is False else float(margin)

        def set_margins(batch: dict[str, list]) -> dict[str, list]:
            return {PAIRS_COLUMN: [[{**p, "margin": value} for p in pairs] for pairs in batch[PAIRS_COLUMN]]}

        return dataset.map(set_margins, batched=True, features=dataset.features, desc="reward_margin")
    if MARGIN_COLUMN in dataset.column_names:
        dataset = dataset.remove_columns(MARGIN_COLUMN)
    if margin is False:
        return dataset
    return dataset.add_column(MARGIN_COLUMN, [float(margin)] * len(dataset))


def to_reward_config(args: Any, settings: Mapping[str, Any]) -> Any:
    """A :class:`~reward_plugin.RewardConfig` with every ``TrainingArguments`` value of ``args``.

    Axolotl builds its own argument class (a ``TrainingArguments`` subclass); the host's values
    (output_dir, batch sizes, learning rate, schedule, precision, logging, saving, ...) are copied
    and ``settings`` (from :func:`stage_settings`) set the reward fields. Fields only Axolotl's
    trainer reads (sample packing, custom schedulers) have no meaning here and are left out.

    Raises:
        ConfigError: the combination is not a valid RewardConfig (the message names the field).
    """
    from transformers import TrainingArguments

    from ..config import RewardConfig

    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainingArguments)
        if f.init and not f.name.startswith("_") and hasattr(args, f.name)
    }
    values.update(settings)
    values["save_final_model"] = False  # the host saves the model; we add our files to its export
    try:
        return RewardConfig(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"the Axolotl training arguments are not valid reward arguments: {first}") from exc


def _hosted_trainer_class(settings: Mapping[str, Any]) -> type:
    """A RewardTrainer subclass that Axolotl's trainer builder can instantiate with its own arguments."""
    from ..trainer import RewardTrainer

    frozen = dict(settings)

    class AxolotlHostedRewardTrainer(RewardTrainer):
        """:class:`~reward_plugin.RewardTrainer` built by Axolotl: its arguments become a RewardConfig,
        its collator is replaced by ours (pairs, not token sequences)."""

        reward_settings = frozen

        def __init__(self, model: Any = None, args: Any = None, data_collator: Any = None, **kwargs: Any):
            for axolotl_only in ("dataset_tags", "eval_data_collator", "bench_data_collator"):
                kwargs.pop(axolotl_only, None)
            if kwargs.pop("compute_loss_func", None) is not None:
                raise ConfigError("reward_stage trains with the pairwise reward loss; remove `use_eaft`")
            super().__init__(model=model, args=to_reward_config(args, self.reward_settings), **kwargs)

    return AxolotlHostedRewardTrainer


def update_saved_config(output_dir: Path, stats: Mapping[str, Any]) -> bool:
    """Put ``reward_mean``/``reward_std`` into ``output_dir/config.json`` when it exists; return whether it did."""
    path = Path(output_dir) / "config.json"
    if not path.is_file():
        return False
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("reward_mean") == stats["mean"] and config.get("reward_std") == stats["std"]:
        return True
    config["reward_mean"], config["reward_std"] = stats["mean"], stats["std"]
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return True


class RewardPlugin(BasePlugin):
    """Axolotl plugin running a reward-plugin stage (``reward_stage: reward``) inside ``axolotl train``."""

    def __init__(self) -> None:
        if _AXOLOTL_IMPORT_ERROR is not None:
            raise PluginError(
                PLUGIN_NAME,
                f"Axolotl is not importable ({_AXOLOTL_IMPORT_ERROR}); pip install 'reward-plugin[axolotl]'",
            ) from _AXOLOTL_IMPORT_ERROR
        super().__init__()
        self._trainer: Any = None

    # ------------------------------------------------------------ config

    def get_input_args(self) -> str:
        return "reward_plugin.hosts.axolotl.RewardPluginArgs"

    def register(self, cfg: Any) -> None:
        """Check the plugin keys before Axolotl validates the config; imply ``reward_model: true``."""
        if not active(cfg):
            return
        stage = self._stage(cfg)
        if _get(cfg, "rl"):
            raise ConfigError(
                f"`rl: {_get(cfg, 'rl')}` and `reward_stage: {stage.name}` exclude each other; reward-model "
                "training is not an RL method: remove `rl`"
            )
        if _get(cfg, "reward_model") is False:
            raise ConfigError("`reward_stage` trains a reward model; remove `reward_model: false`")
        stage_settings(cfg)
        for line in fit_axolotl_config(cfg):
            logger.warning("%s", line)
        cfg["reward_model"] = True
        if _get(cfg, "adapter") in ("lora", "qlora"):
            # Axolotl's fused LoRA kernels patch causal-LM PEFT models only (they raise on a sequence
            # classifier), and Axolotl turns them on by default: keep them off unless asked for.
            for key in LORA_KERNEL_KEYS:
                if _get(cfg, key) is None:
                    cfg[key] = False

    @staticmethod
    def _stage(cfg: Any) -> Any:
        from ..stages import get_stage
        from ..stages.reward import RewardStage

        stage = get_stage(stage_name(cfg))
        if not isinstance(stage, RewardStage):
            raise ConfigError(
                f"`reward_stage: {stage.name}` is not a reward stage; the Axolotl plugin runs stages derived from "
                "reward_plugin.stages.reward.RewardStage (Axolotl builds the model and the trainer itself)"
            )
        return stage

    # -------------------------------------------------------------- data

    def load_datasets(self, cfg: Any, preprocess: bool = False) -> Any:
        """Load ``datasets``/``test_datasets`` through the stage; Axolotl's own loading is skipped."""
        if not active(cfg):
            return None
        from axolotl.common.datasets import TrainDatasetMeta
        from axolotl.loaders import load_tokenizer

        stage = self._stage(cfg)
        stage_cfg = stage.validate_config(stage_section(cfg))
        tokenizer = load_tokenizer(cfg)
        built = stage.build_datasets(stage_cfg, tokenizer)
        margin = _get(cfg, "reward_margin")
        train = apply_margin_policy(built["train"], margin)
        evaluation = apply_margin_policy(built.get("eval"), margin)
        total_steps = self.total_num_steps(cfg, len(train))
        logger.info("reward stage %r: %d train pairs, %d total steps", stage.name, len(train), total_steps)
        return TrainDatasetMeta(train_dataset=train, eval_dataset=evaluation, total_num_steps=total_steps)

    @staticmethod
    def total_num_steps(cfg: Any, num_pairs: int) -> int:
        """Optimizer steps of the run: ``max_steps``, else ``ceil(pairs * num_epochs / global batch)``."""
        if _get(cfg, "max_steps"):
            return int(_get(cfg, "max_steps"))
        micro = int(_get(cfg, "micro_batch_size") or 1)
        accumulation = int(_get(cfg, "gradient_accumulation_steps") or 1)
        batch = int(_get(cfg, "batch_size") or micro * accumulation) * int(_get(cfg, "world_size") or 1)
        epochs = float(_get(cfg, "num_epochs") or 1)
        return max(1, math.ceil(num_pairs * epochs / batch))

    # ----------------------------------------------------------- trainer

    def get_trainer_cls(self, cfg: Any) -> type | None:
        if not active(cfg):
            return None
        return _hosted_trainer_class(stage_settings(cfg))

    def post_trainer_create(self, cfg: Any, trainer: Any) -> None:
        if active(cfg):
            self._trainer = trainer

    # ------------------------------------------------------------ export

    def post_train(self, cfg: Any, model: Any) -> None:
        """Add the reward statistics to the export (``reward_stats.json``, ``config.json``).

        Axolotl calls this once after ``trainer.train()`` and once after saving the model; both
        calls write the same files, so running it again changes nothing.
        """
        if not active(cfg) or self._trainer is None:
            return
        trainer = self._trainer
        stats = getattr(trainer, "reward_stats", None)
        if stats is None or not trainer.args.should_save:
            return
        from ..metrics import write_reward_stats

        output_dir = Path(_get(cfg, "output_dir") or trainer.args.output_dir)
        write_reward_stats(stats, output_dir)
        update_saved_config(output_dir, stats)

    def post_train_unload(self, cfg: Any) -> None:
        self._trainer = None
