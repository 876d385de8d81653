"""The ``pointwise`` stage: a reward head trained on per-response (multi-attribute) scores.

Config (YAML), a flat mapping of the stage keys below plus :class:`PointwiseConfig` fields::

    stage: pointwise
    model: path/or/hub-name          # loaded with num_labels = len(attributes)
    tokenizer: path                  # optional, default: the model's
    train_data: helpsteer2.jsonl     # rows: prompt, response, one column per attribute
    eval_data: helpsteer2-val.jsonl  # optional
    attributes: [helpfulness, correctness, coherence, complexity, verbosity]
    attribute_weights: [1, 0, 0, 0, 0]   # combined reward = sum(w * standardised output)
    output_dir: outputs/pointwise-model
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..stages.base import Stage

STAGE_KEYS = ("stage", "model", "tokenizer", "train_data", "eval_data")
DEFAULT_OUTPUT_DIR = "outputs/pointwise-model"


@dataclass
class PointwiseStageConfig:
    """The validated config of a pointwise run."""

    model: str
    train_data: str
    args: Any
    tokenizer: str | None = None
    eval_data: str | None = None


class PointwiseStage(Stage):
    """Pointwise / multi-attribute regression reward model (:class:`~reward_plugin.pointwise.PointwiseTrainer`)."""

    name = "pointwise"
    description = (
        "pointwise / multi-attribute reward model: MSE on per-response scores (HelpSteer2-style rows)"
    )

    def validate_config(self, section: Mapping[str, Any]) -> PointwiseStageConfig:
        from .training import PointwiseConfig

        fields = {f.name for f in dataclasses.fields(PointwiseConfig) if f.init}
        for key in section:
            if key not in STAGE_KEYS and key not in fields:
                raise ConfigError(
                    f"unknown key {key!r} in the pointwise stage config; it reads {', '.join(STAGE_KEYS[1:])} "
                    "and the training arguments (attributes, attribute_weights, learning_rate, ...)"
                )
        for key in ("model", "train_data"):
            if not section.get(key):
                raise ConfigError(f"`{key}` is required in the pointwise stage config")
        kwargs = {k: v for k, v in section.items() if k in fields}
        kwargs.setdefault("output_dir", DEFAULT_OUTPUT_DIR)
        try:
            args = PointwiseConfig(**kwargs)
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid training arguments: {str(exc).splitlines()[0]}") from exc
        return PointwiseStageConfig(
            model=str(section["model"]),
            train_data=str(section["train_data"]),
            args=args,
            tokenizer=str(section["tokenizer"]) if section.get("tokenizer") else None,
            eval_data=str(section["eval_data"]) if section.get("eval_data") else None,
        )

    def build_tokenizer(self, cfg: PointwiseStageConfig) -> Any:
        from dataset_formats.encoding import load_tokenizer

        return load_tokenizer(cfg.tokenizer or cfg.model)

    def build_datasets(self, cfg: PointwiseStageConfig, tokenizer: Any) -> dict[str, Any]:
        from .rows import encode_responses, read_responses

        def load(path: str | None) -> Any:
            if path is None:
                return None
            rows = read_responses(path, cfg.args.attributes)
            return encode_responses(
                rows,
                tokenizer,
                max_length=cfg.args.max_length,
                truncation=cfg.args.truncation,
                chat_template=cfg.args.chat_template,
            )

        return {"train": load(cfg.train_data), "eval": load(cfg.eval_data)}

    def build_model(self, cfg: PointwiseStageConfig, tokenizer: Any = None) -> Any:
        from transformers import set_seed

        from .training import PointwiseTrainer

        set_seed(cfg.args.seed)
        return PointwiseTrainer._load(cfg.model, cfg.args)

    def build_trainer(
        self, cfg: PointwiseStageConfig, model: Any, tokenizer: Any, datasets: Mapping[str, Any]
    ):
        from .training import PointwiseTrainer

        return PointwiseTrainer(
            model=model,
            args=cfg.args,
            train_dataset=datasets["train"],
            eval_dataset=datasets.get("eval"),
            processing_class=tokenizer,
        )

    def export(self, trainer: Any, cfg: PointwiseStageConfig) -> Path:
        output_dir = Path(trainer.args.output_dir)
        trainer.save_model(str(output_dir))
        return output_dir


@hookimpl(trylast=True)
def register_stages(register):
    register(PointwiseStage())
