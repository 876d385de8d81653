"""The :class:`Stage` base class (one kind of training run) and the :class:`StageResult` it returns."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .checkpoints import resolve_checkpoint


@dataclass
class StageResult:
    """What :meth:`Stage.run` returns.

    Attributes:
        stage: the stage's name.
        config: the validated config object.
        trainer: the trainer that ran.
        output_dir: where :meth:`Stage.export` wrote the model.
        train_metrics: the metrics of ``trainer.train()`` (loss, runtime, ...).
        eval_metrics: the final ``trainer.evaluate()`` metrics, or None without an eval set.
    """

    stage: str
    config: Any
    trainer: Any
    output_dir: Path
    train_metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, float] | None = None


class Stage(abc.ABC):
    """One kind of training run that host tools can discover and drive.

    Subclasses set ``name`` (unique across plugins) and ``description`` and implement the steps.
    A host either calls :meth:`run` or the steps one by one (Axolotl, for instance, builds its own
    model and only asks the stage for datasets and a trainer).

    The config object returned by :meth:`validate_config` is the stage's own; every other step
    receives it back unchanged.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    @abc.abstractmethod
    def validate_config(self, section: Mapping[str, Any]) -> Any:
        """Check a run's config mapping (the YAML keys) and return the stage's config object.

        Raises:
            ConfigError: an unknown key or a bad value; the message names the key and the fix.
        """

    def build_tokenizer(self, cfg: Any) -> Any:
        """The tokenizer (processing class) of the run, or None when the stage needs none."""
        return None

    @abc.abstractmethod
    def build_datasets(self, cfg: Any, tokenizer: Any) -> dict[str, Any]:
        """Return ``{"train": dataset, "eval": dataset or None}`` ready for :meth:`build_trainer`."""

    @abc.abstractmethod
    def build_model(self, cfg: Any, tokenizer: Any = None) -> Any:
        """Load the model to train, with PEFT adapters applied when the config asks for them.

        Args:
            cfg: the config object.
            tokenizer: the run's tokenizer, so the model's pad token can agree with it.
        """

    @abc.abstractmethod
    def build_trainer(self, cfg: Any, model: Any, tokenizer: Any, datasets: Mapping[str, Any]) -> Any:
        """A ``transformers.Trainer`` (or anything with ``train()``, ``evaluate()``, ``args``) for the run."""

    @abc.abstractmethod
    def export(self, trainer: Any, cfg: Any) -> Path:
        """Save the trained model where the config says and return that folder."""

    def run(self, cfg: Any, *, resume: bool | str | None = None) -> StageResult:
        """Build everything, train, evaluate when there is an eval set, export.

        Args:
            cfg: the object :meth:`validate_config` returned.
            resume: ``True`` to continue from the last checkpoint in the output folder, a
                checkpoint folder, or None/False to start afresh (``resume_from_checkpoint`` in
                the trainer's arguments still applies).

        Returns:
            A :class:`StageResult`.

        Raises:
            ConfigError: ``resume`` is set but there is no checkpoint to resume from.
        """
        tokenizer = self.build_tokenizer(cfg)
        datasets = self.build_datasets(cfg, tokenizer)
        model = self.build_model(cfg, tokenizer)
        trainer = self.build_trainer(cfg, model, tokenizer, datasets)
        checkpoint = resolve_checkpoint(trainer.args, resume)
        output = trainer.train(resume_from_checkpoint=checkpoint)
        train_metrics = dict(getattr(output, "metrics", None) or {})
        eval_metrics = None
        if getattr(trainer, "eval_dataset", None) is not None:
            # RewardTrainer reuses the evaluation it ran at the end of training (same weights).
            eval_metrics = getattr(trainer, "final_evaluation", trainer.evaluate)()
            if hasattr(trainer, "save_metrics") and trainer.args.should_save:
                trainer.save_metrics("eval", eval_metrics)
        output_dir = self.export(trainer, cfg)
        return StageResult(self.name, cfg, trainer, Path(output_dir), train_metrics, eval_metrics)
