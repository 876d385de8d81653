"""Training stages: the :class:`Stage` base class and the registry host tools look stages up in.

A stage is one kind of training run (the built-in ``reward`` stage trains a pairwise reward
model). Plugins register stages through the ``register_stages(register)`` hook; the built-in
stage is registered the same way, with ``trylast=True``. A host tool (our ``reward-plugin
train`` runner, the Axolotl plugin) resolves a name with :func:`get_stage` and drives the
stage's steps::

    stage = get_stage("reward")
    cfg = stage.validate_config(section)          # the YAML mapping of the run
    result = stage.run(cfg)                        # or call the build_* steps one by one
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .. import plugins
from ..errors import ConfigError, PluginError, UnknownStageError

__all__ = [
    "Stage",
    "StageInfo",
    "StageResult",
    "get_stage",
    "list_stages",
    "register_stage",
    "reset",
    "unregister_stage_plugin",
]


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


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """The ``checkpoint-N`` folder of ``output_dir`` with the highest N that was saved completely.

    The Trainer writes ``trainer_state.json`` last, so a run killed while saving leaves a folder
    without it; resuming from that folder would fail on a half-written file, so it is skipped.
    """
    if not output_dir.is_dir():
        return None
    complete = [
        p
        for p in output_dir.iterdir()
        if p.is_dir()
        and p.name.startswith("checkpoint-")
        and p.name.removeprefix("checkpoint-").isdigit()
        and (p / "trainer_state.json").is_file()
    ]
    if not complete:
        return None
    return str(max(complete, key=lambda p: int(p.name.removeprefix("checkpoint-"))))


def resolve_checkpoint(args: Any, resume: bool | str | None) -> str | None:
    """The checkpoint folder ``trainer.train`` should resume from, or None to start afresh.

    Args:
        args: the trainer's ``TrainingArguments`` (``output_dir``, ``resume_from_checkpoint``).
        resume: ``True`` (the last ``checkpoint-N`` of ``output_dir``), a folder, or None/False.

    Raises:
        ConfigError: there is no checkpoint where ``resume`` points.
    """
    if resume is None or resume is False:
        resume = getattr(args, "resume_from_checkpoint", None) or None
    if resume is None:
        return None
    if resume is True:
        output_dir = Path(args.output_dir)
        last = last_complete_checkpoint(output_dir)
        if last is None:
            raise ConfigError(
                f"--resume: no checkpoint-N folder in {str(output_dir)!r}; train once with saving on "
                "(save_strategy steps/epoch) or point --resume at a checkpoint folder"
            )
        return last
    if not Path(resume).is_dir():
        raise ConfigError(f"--resume: checkpoint {str(resume)!r} is not a folder; pass a checkpoint-N folder")
    return str(resume)


# ----------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class StageInfo:
    """A registered stage and where it came from."""

    name: str
    description: str
    plugin: str
    distribution: str
    stage: Stage


_cache: dict[str, StageInfo] | None = None


def plugin_distribution(plugin_name: str) -> str:
    """The distribution that provided a stage plugin (``"built-in"`` for ours)."""
    from dataset_formats.plugins import plugin_distribution as _distribution

    if plugin_name in plugins.DEFAULT_PLUGINS:
        return "built-in"
    return _distribution(plugin_name)


def _collect() -> dict[str, StageInfo]:
    global _cache
    if _cache is not None:
        return _cache
    pm = plugins.load_plugins()
    found: dict[str, StageInfo] = {}
    for impl in pm.hook.register_stages.get_hookimpls():
        impl.function(register=_registrar(impl.plugin_name, found))
    _cache = found
    return found


def _registrar(plugin_name: str, found: dict[str, StageInfo]) -> Callable[[Any], None]:
    def register(stage: Any) -> None:
        if isinstance(stage, type) and issubclass(stage, Stage):
            stage = stage()
        if not isinstance(stage, Stage):
            raise PluginError(
                plugin_name, f"registered {stage!r}, which is not a reward_plugin.stages.Stage instance"
            )
        if not isinstance(stage.name, str) or not stage.name:
            raise PluginError(plugin_name, f"stage {type(stage).__name__} has no name; set its `name`")
        if stage.name in found:
            raise PluginError(
                plugin_name,
                f"stage {stage.name!r} is already registered by plugin {found[stage.name].plugin!r}; "
                "uninstall one of the two or leave one out of REWARD_PLUGIN_LOAD_PLUGINS",
            )
        found[stage.name] = StageInfo(
            stage.name, stage.description, plugin_name, plugin_distribution(plugin_name), stage
        )

    return register


def reset() -> None:
    """Forget the collected stages (after registering or unregistering a plugin)."""
    global _cache
    _cache = None


def list_stages() -> list[StageInfo]:
    """Every registered stage, sorted by name."""
    return sorted(_collect().values(), key=lambda info: info.name)


def get_stage(name: str) -> Stage:
    """The stage registered as ``name``.

    Raises:
        UnknownStageError: no plugin registers ``name``; the message lists the registered names.
    """
    stages = _collect()
    if name not in stages:
        raise UnknownStageError(name, list(stages))
    return stages[name].stage


def register_stage(stage: Stage | type[Stage], *, plugin_name: str | None = None) -> str:
    """Register a stage in-process (notebooks, tests) as a tiny plugin; return the plugin's name.

    Raises:
        PluginError: ``stage`` is not a :class:`Stage` or its name is taken.
    """
    from ..hookspecs import hookimpl

    instance = stage() if isinstance(stage, type) else stage
    name = plugin_name or f"in-process:{getattr(instance, 'name', '?')}"

    class _Plugin:
        @staticmethod
        @hookimpl
        def register_stages(register):
            register(instance)

    plugins.load_plugins()
    plugins.pm.register(_Plugin, name=name)
    reset()
    try:
        _collect()
    except Exception:
        plugins.pm.unregister(name=name)
        reset()
        raise
    return name


def unregister_stage_plugin(plugin_name: str) -> None:
    """Remove a plugin (for instance one added by :func:`register_stage`) by name."""
    plugins.pm.unregister(name=plugin_name)
    reset()
