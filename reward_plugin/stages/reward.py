"""The built-in ``reward`` stage: pairwise (Bradley-Terry) reward modelling with :class:`RewardTrainer`.

Registered through the same hook as any third-party stage. Its config is one flat mapping: the
stage keys below plus any :class:`~reward_plugin.RewardConfig` field (``learning_rate``,
``max_length``, ``center_rewards_coefficient``, ...)::

    stage: reward                       # optional, the default
    model: path/or/hub-name             # loaded with AutoModelForSequenceClassification(num_labels=1);
                                        # or a .gguf file, or smollm2-135m-instruct (the bundled GGUF)
    gguf_file: model.Q4_1.gguf          # optional: the GGUF file inside the `model` folder
    tokenizer: path                     # optional, default: the model's
    accept_tokenizer_mismatch: false    # optional: train on tables converted with another tokenizer
    train_data: data/train.parquet      # or raw data: {path: raw.jsonl.gz, format: hh-rlhf}
    eval_data: data/eval.parquet        # optional
    eval_size: 0.1                      # optional: hold out this fraction (or count) of train pairs
    peft: {r: 8, lora_alpha: 16, target_modules: all-linear}   # optional LoRA (peft_type LORA)
    merge_adapter: false                # with peft: export the merged model instead of the adapter
    output_dir: outputs/reward-model
    max_length: 512
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..hookspecs import hookimpl
from .base import Stage
from .prepared import PREPARED_DIR
from .sources import DataSource, load_sources, parse_sources

logger = logging.getLogger(__name__)

#: The output folder used when a config names none.
DEFAULT_OUTPUT_DIR = "outputs/reward-model"
#: Keys of the reward stage that are not RewardConfig fields.
STAGE_KEYS = (
    "stage",
    "model",
    "gguf_file",
    "tokenizer",
    "train_data",
    "eval_data",
    "eval_size",
    "peft",
    "merge_adapter",
    "accept_tokenizer_mismatch",
)


@dataclass
class RewardStageConfig:
    """The validated config of the ``reward`` stage.

    Attributes:
        model: the model's folder, hub name, ``.gguf`` file or bundled short name.
        gguf_file: the GGUF file inside the ``model`` folder, or None.
        tokenizer: the tokenizer's folder or hub name (None: the model's).
        train_data: training data sources.
        eval_data: evaluation data sources, or None.
        eval_size: a fraction in (0, 1) or a number of train pairs held out for evaluation.
        peft: keyword arguments of a ``peft`` config (``peft_type`` defaults to ``LORA``), or None.
        merge_adapter: export the merged model (with ``peft``) instead of the adapter alone.
        accept_tokenizer_mismatch: train on converted tables whose stored tokenizer differs from the run's.
        args: the :class:`~reward_plugin.RewardConfig` of the trainer.
    """

    model: str
    train_data: list[DataSource]
    args: Any
    tokenizer: str | None = None
    eval_data: list[DataSource] | None = None
    eval_size: float | int | None = None
    peft: dict[str, Any] | None = None
    merge_adapter: bool = False
    gguf_file: str | None = None
    accept_tokenizer_mismatch: bool = False


@functools.lru_cache(maxsize=1)
def _reward_config_fields() -> dict[str, dataclasses.Field]:
    from ..config import RewardConfig

    return {f.name: f for f in dataclasses.fields(RewardConfig) if f.init and not f.name.startswith("_")}


@functools.lru_cache(maxsize=1)
def _argument_parser() -> Any:
    from transformers import HfArgumentParser

    from ..config import RewardConfig

    return HfArgumentParser(RewardConfig, exit_on_error=False)


def coerce_field(name: str, value: Any) -> Any:
    """Convert a YAML or command-line value of a ``RewardConfig`` field to the field's type.

    Values go through ``HfArgumentParser(RewardConfig)``, so ``"1e-4"`` becomes a float,
    ``"true"`` a bool and a choice is checked, exactly as for ``--name value`` flags. ``None``,
    lists and mappings are kept as they are.

    Raises:
        ConfigError: the value does not parse as the field's type; the message names the field.
    """
    import argparse

    if value is None or isinstance(value, (list, tuple, Mapping)):
        return list(value) if isinstance(value, tuple) else value
    try:
        namespace, _ = _argument_parser().parse_known_args([f"--{name}", str(value)])
    except argparse.ArgumentError as exc:
        if value is False:
            # YAML 1.1 reads a bare `no` as false: `save_strategy: no` means the choice "no".
            try:
                namespace, _ = _argument_parser().parse_known_args([f"--{name}", "no"])
                return getattr(namespace, name)
            except argparse.ArgumentError:
                pass
        raise ConfigError(f"`{name}`: {exc.message}; got {value!r}") from exc
    return getattr(namespace, name)


def unknown_key_error(key: str, known: list[str], where: str) -> ConfigError:
    """The error for a key nobody reads, with the closest known keys as a hint."""
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = (
        f"; did you mean {', '.join(repr(k) for k in close)}?"
        if close
        else f"; the reward stage reads {', '.join(STAGE_KEYS[1:])} and every RewardConfig field (docs/cli.md)"
    )
    return ConfigError(f"unknown key {key!r} in the {where} config{hint}")


class RewardStage(Stage):
    """Pairwise reward modelling: ``-logsigmoid(r_chosen - r_rejected - margin)`` with :class:`RewardTrainer`."""

    name = "reward"
    description = (
        "pairwise (Bradley-Terry) reward model with margin, centering and PEFT (reward_plugin.RewardTrainer)"
    )

    # ------------------------------------------------------------------ config

    def validate_config(self, section: Mapping[str, Any]) -> RewardStageConfig:
        """Check the keys of a run and build the :class:`RewardStageConfig`.

        Args:
            section: the stage keys and RewardConfig fields (see the module docstring).

        Returns:
            The validated config; ``output_dir`` defaults to ``outputs/reward-model``.

        Raises:
            ConfigError: an unknown key, a missing ``model``/``train_data``, or a bad value.
        """
        if not isinstance(section, Mapping):
            raise ConfigError(
                f"the reward stage config must be a mapping of keys, got {type(section).__name__}"
            )
        fields = _reward_config_fields()
        known = [*STAGE_KEYS, *fields]
        for key in section:
            if key not in known:
                raise unknown_key_error(str(key), known, "reward stage")
        stage = section.get("stage", self.name)
        if stage != self.name:
            raise ConfigError(f"`stage` is {stage!r}, but this config went to the {self.name!r} stage")
        for key in ("model", "train_data"):
            if not section.get(key):
                raise ConfigError(
                    f"`{key}` is required: "
                    + ("a model folder or hub name" if key == "model" else "a data file or a list of them")
                )
        for key in ("model", "tokenizer", "gguf_file"):
            if section.get(key) is not None and not isinstance(section[key], (str, Path)):
                raise ConfigError(f"`{key}` must be a folder or hub name, got {section[key]!r}")
        args = self._training_args({k: v for k, v in section.items() if k in fields})
        eval_data = parse_sources(section["eval_data"], "eval_data") if section.get("eval_data") else None
        eval_size = _check_eval_size(section.get("eval_size"), eval_data)
        peft = section.get("peft")
        if peft is not None and not isinstance(peft, Mapping):
            raise ConfigError(
                f"`peft` must be a mapping of peft config keys (r, lora_alpha, ...), got {peft!r}"
            )
        merge = section.get("merge_adapter", False)
        if not isinstance(merge, bool):
            raise ConfigError(f"`merge_adapter` must be true or false, got {merge!r}")
        accept = section.get("accept_tokenizer_mismatch", False)
        if not isinstance(accept, bool):
            raise ConfigError(f"`accept_tokenizer_mismatch` must be true or false, got {accept!r}")
        cfg = RewardStageConfig(
            model=str(section["model"]),
            tokenizer=str(section["tokenizer"]) if section.get("tokenizer") else None,
            train_data=parse_sources(section["train_data"], "train_data"),
            eval_data=eval_data,
            eval_size=eval_size,
            peft=dict(peft) if peft is not None else None,
            merge_adapter=merge,
            args=args,
            gguf_file=str(section["gguf_file"]) if section.get("gguf_file") else None,
            accept_tokenizer_mismatch=accept,
        )
        if peft is not None:
            self.peft_config(cfg)  # fail now, not after the model has loaded
        return cfg

    def _training_args(self, values: dict[str, Any]) -> Any:
        from ..config import RewardConfig

        kwargs = {name: coerce_field(name, value) for name, value in values.items()}
        kwargs.setdefault("output_dir", DEFAULT_OUTPUT_DIR)
        try:
            return RewardConfig(**kwargs)
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"invalid training arguments: {first}") from exc

    def peft_config(self, cfg: RewardStageConfig) -> Any:
        """The ``peft.PeftConfig`` of ``cfg.peft`` (``peft_type`` LORA unless given), or None."""
        if cfg.peft is None:
            return None
        from peft import get_peft_config

        values = dict(cfg.peft)
        values["peft_type"] = str(values.get("peft_type", "LORA")).upper()
        values.setdefault("task_type", "SEQ_CLS")
        try:
            return get_peft_config(values)
        except KeyError as exc:
            raise ConfigError(
                f"`peft.peft_type` {values['peft_type']!r} is not a peft method; use LORA (the default)"
            ) from exc
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"`peft`: {exc}") from exc

    # ------------------------------------------------------------------- steps

    def build_tokenizer(self, cfg: RewardStageConfig) -> Any:
        """The tokenizer from ``cfg.tokenizer`` or the model's folder (None when it has none)."""
        from ..model.loading import load_tokenizer_for

        return load_tokenizer_for(
            cfg.model, cfg.tokenizer, trust_remote_code=cfg.args.trust_remote_code, gguf_file=cfg.gguf_file
        )

    def build_datasets(self, cfg: RewardStageConfig, tokenizer: Any) -> dict[str, Any]:
        """Load (and convert when raw) the train and eval data; hold out ``eval_size`` pairs if set."""
        common = {
            "tokenizer": tokenizer,
            "dataset_format": cfg.args.dataset_format,
            "chat_template": cfg.args.chat_template,
            "max_length": cfg.args.max_length,
            "truncation": cfg.args.truncation,
            "num_proc": cfg.args.dataset_num_proc,
            "prepared_dir": Path(cfg.args.output_dir) / PREPARED_DIR,
            "accept_tokenizer_mismatch": cfg.accept_tokenizer_mismatch,
        }
        # The main process converts and splits; the others wait, then memory-map what it wrote
        # (prepared.py) and find the split's index files in datasets' cache next to the data.
        with cfg.args.main_process_first(desc="preparing the data"):
            train = load_sources(cfg.train_data, name="train", **common)
            evaluation = load_sources(cfg.eval_data, name="eval", **common) if cfg.eval_data else None
            if cfg.eval_size is not None:
                held_out = cfg.eval_size if isinstance(cfg.eval_size, float) else int(cfg.eval_size)
                if isinstance(held_out, int) and held_out >= len(train):
                    raise ConfigError(
                        f"`eval_size` is {held_out}, but the train data has only {len(train)} pairs; use a "
                        "smaller count or a fraction such as 0.1"
                    )
                split = train.train_test_split(test_size=held_out, shuffle=True, seed=cfg.args.seed)
                train, evaluation = split["train"], split["test"]
        logger.info(
            "train pairs: %d; eval pairs: %s", len(train), len(evaluation) if evaluation is not None else 0
        )
        return {"train": train, "eval": evaluation}

    def build_model(self, cfg: RewardStageConfig, tokenizer: Any = None) -> Any:
        """Load the model as a one-output sequence classifier; wrap it with PEFT when ``cfg.peft`` is set."""
        from ..model.loading import load_model
        from ..modeling import apply_peft, ensure_pad_token

        model = load_model(cfg.model, cfg.args, gguf_file=cfg.gguf_file)
        if tokenizer is not None:
            ensure_pad_token(model, tokenizer)  # before PEFT: it may resize the embeddings
        peft_config = self.peft_config(cfg)
        if peft_config is not None:
            model = apply_peft(
                model, peft_config, gradient_checkpointing=bool(cfg.args.gradient_checkpointing)
            )
        return model

    def build_trainer(
        self, cfg: RewardStageConfig, model: Any, tokenizer: Any, datasets: Mapping[str, Any]
    ) -> Any:
        """A :class:`~reward_plugin.RewardTrainer` over the built model and datasets."""
        from ..trainer import RewardTrainer

        args = cfg.args
        if args.model_init_kwargs:
            # build_model already used them; the trainer would warn that a loaded model ignores them.
            args = copy.copy(args)
            args.model_init_kwargs = None
        if self._merges(cfg, model) and args.save_final_model:
            # export() saves the merged model; train() saving the adapter first would put an
            # adapter_config.json next to the merged weights (see export).
            args = copy.copy(args)
            args.save_final_model = False
        return RewardTrainer(
            model=model,
            args=args,
            train_dataset=datasets["train"],
            eval_dataset=datasets.get("eval"),
            processing_class=tokenizer,
        )

    @staticmethod
    def _merges(cfg: RewardStageConfig, model: Any) -> bool:
        return cfg.merge_adapter and hasattr(model, "merge_and_unload")

    def export(self, trainer: Any, cfg: RewardStageConfig) -> Path:
        """Save the model, tokenizer, ``reward_stats.json`` and model card to ``output_dir``, once.

        ``train()`` already saved them (``save_final_model``), so only what it did not do is left:
        the merged full model when ``merge_adapter`` is set with PEFT (the adapter alone otherwise;
        load it with ``AutoModelForSequenceClassification`` when ``peft`` is installed), or the
        model when ``save_final_model`` is off. A merged export leaves no ``adapter_config.json``
        in the folder: with ``peft`` installed ``from_pretrained`` would load the base model plus
        that adapter instead of the merged weights.
        """
        output_dir = Path(trainer.args.output_dir)
        model = trainer.model
        if self._merges(cfg, model):
            from ..metrics import write_reward_stats

            merged = model.merge_and_unload()
            trainer.model = merged
            if trainer.args.should_save:
                for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
                    (output_dir / name).unlink(missing_ok=True)  # an earlier run's adapter
                merged.save_pretrained(output_dir)
                if trainer.processing_class is not None:
                    trainer.processing_class.save_pretrained(output_dir)
                if trainer.reward_stats is not None:
                    write_reward_stats(trainer.reward_stats, output_dir)
                trainer.create_model_card()
        elif not trainer.args.save_final_model:
            trainer.save_model(str(output_dir))
        return output_dir


def _check_eval_size(value: Any, eval_data: list[DataSource] | None) -> float | int | None:
    if value is None:
        return None
    if eval_data is not None:
        raise ConfigError("give `eval_data` or `eval_size`, not both")
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            raise ConfigError(
                f"`eval_size` must be a fraction in (0, 1) or a number of pairs, got {value!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"`eval_size` must be a fraction in (0, 1) or a number of pairs, got {value!r}")
    if isinstance(value, float) and not 0 < value < 1:
        raise ConfigError(f"`eval_size` as a fraction must be in (0, 1), got {value!r}")
    if isinstance(value, int) and value < 1:
        raise ConfigError(f"`eval_size` as a count must be at least 1, got {value!r}")
    return value


@hookimpl(trylast=True)
def register_stages(register):
    register(RewardStage())
