"""LLaMA-Factory compatibility: run a LLaMA-Factory ``stage: rm`` YAML with ``reward-plugin train``.

LLaMA-Factory has no plugin system, so its users get (a) the ``llamafactory`` dataset adapter,
which reads ``dataset_info.json`` ranking entries, and (b) this mapping of its reward-model
training YAML onto the ``reward`` stage's config. Keys are mapped as LLaMA-Factory reads them
(its defaults included: ``dataset_dir: data``, ``cutoff_len: 2048``, ``lora_rank: 8``,
``lora_alpha: 2 * lora_rank``, ``lora_target: all``); every ``TrainingArguments`` /
``RewardConfig`` field passes through unchanged; any other key is an error naming it. Every
``template`` name resolves (:mod:`.lf_templates`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .lf_templates import resolve_template

logger = logging.getLogger(__name__)

#: The value of ``stage`` that marks a LLaMA-Factory reward-model config.
LLAMAFACTORY_STAGE = "rm"

#: LLaMA-Factory ``flash_attn`` values -> transformers ``attn_implementation``.
ATTENTION = {"auto": None, "disabled": "eager", "sdpa": "sdpa", "fa2": "flash_attention_2"}

#: Keys accepted but without effect here, with the reason logged.
NO_EFFECT = {
    "overwrite_cache": "converted data is not cached between runs",
    "overwrite_output_dir": "reward-plugin writes into an existing output_dir",
    "plot_loss": "plot the trained model's rewards with `reward-plugin eval --plot PATH.png`",
    "compute_accuracy": "accuracy is always computed",
    "preprocessing_batch_size": "conversion batches are sized by the dataset toolkit",
}

#: The LLaMA-Factory keys this mapping reads (besides TrainingArguments fields).
MAPPED = (
    "stage",
    "model_name_or_path",
    "trust_remote_code",
    "cache_dir",
    "model_revision",
    "flash_attn",
    "disable_gradient_checkpointing",
    "finetuning_type",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "lora_target",
    "additional_target",
    "use_rslora",
    "use_dora",
    "dataset",
    "eval_dataset",
    "dataset_dir",
    "val_size",
    "template",
    "cutoff_len",
    "max_samples",
    "preprocessing_num_workers",
    "warmup_ratio",
)


def is_llamafactory_config(section: Mapping[str, Any]) -> bool:
    """Whether ``section`` is a LLaMA-Factory reward-model config (``stage: rm``)."""
    return section.get("stage") == LLAMAFACTORY_STAGE


def _names(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        names = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        names = [v.strip() for v in value]
    else:
        names = []
    if not names:
        raise ConfigError(f"LLaMA-Factory `{key}` must be dataset names (comma-separated), got {value!r}")
    return names


def _peft(section: Mapping[str, Any]) -> dict[str, Any]:
    rank = section.get("lora_rank", 8)
    target = section.get("lora_target", "all")
    if isinstance(target, str):
        targets = [t.strip() for t in target.split(",") if t.strip()]
    else:
        targets = list(target or [])
    peft: dict[str, Any] = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": section.get("lora_alpha") or (rank * 2 if isinstance(rank, int) else rank),
        "lora_dropout": section.get("lora_dropout", 0.0),
        # LLaMA-Factory's "all" means every linear layer except the output head, like peft's "all-linear".
        "target_modules": "all-linear" if targets == ["all"] else targets,
    }
    if section.get("additional_target"):
        extra = section["additional_target"]
        peft["modules_to_save"] = (
            [t.strip() for t in extra.split(",")] if isinstance(extra, str) else list(extra)
        )
    for key in ("use_rslora", "use_dora"):
        if key in section:
            peft[key] = section[key]
    return peft


@dataclass(frozen=True)
class LlamaFactoryMapping:
    """A LLaMA-Factory config mapped onto the ``reward`` stage.

    Attributes:
        section: the ``reward`` stage config (``model``, ``train_data``, ``peft``, RewardConfig fields).
        notices: what the user should know, one line each: keys without effect (grouped in one
            line) and the chat template used for ``template``.
        names: the LLaMA-Factory spelling of mapped keys (``dataset_num_proc`` ->
            ``preprocessing_num_workers``), for later messages about them.
    """

    section: dict[str, Any]
    notices: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)


def _check_keys(section: Mapping[str, Any], fields: Mapping[str, Any]) -> str | None:
    """Raise on keys nobody reads (all of them named); the grouped line about keys without effect."""
    unsupported = sorted(k for k in section if k not in MAPPED and k not in NO_EFFECT and k not in fields)
    if unsupported:
        many = len(unsupported) > 1
        raise ConfigError(
            f"LLaMA-Factory `stage: rm` config: unsupported key{'s' if many else ''} "
            f"{', '.join(repr(k) for k in unsupported)}; remove {'them' if many else 'it'} "
            "(reward-plugin maps model_name_or_path, dataset, dataset_dir, template, cutoff_len, lora_* and "
            "finetuning_type, and passes every TrainingArguments field through)"
        )
    if section.get("do_train") is False:
        raise ConfigError("LLaMA-Factory `do_train: false`: reward-plugin train only trains; remove it")
    if not section.get("model_name_or_path"):
        raise ConfigError("LLaMA-Factory config: `model_name_or_path` is required")
    if not section.get("dataset"):
        raise ConfigError(
            "LLaMA-Factory config: `dataset` (names in dataset_dir/dataset_info.json) is required"
        )
    ignored = [f"{key} ({reason})" for key, reason in NO_EFFECT.items() if key in section]
    return f"LLaMA-Factory keys without effect here: {'; '.join(ignored)}" if ignored else None


def _data(section: Mapping[str, Any]) -> dict[str, Any]:
    """``train_data``/``eval_data``/``eval_size`` from ``dataset``, ``eval_dataset``, ``val_size``."""
    dataset_dir = section.get("dataset_dir", "data")
    max_samples = section.get("max_samples")

    def sources(key: str) -> list[dict[str, Any]]:
        items = []
        for name in _names(section[key], key):
            item: dict[str, Any] = {"dataset_info": dataset_dir, "dataset": name}
            if max_samples is not None:
                item["max_samples"] = max_samples
            items.append(item)
        return items

    out: dict[str, Any] = {"train_data": sources("dataset")}
    if section.get("eval_dataset"):
        out["eval_data"] = sources("eval_dataset")
    elif section.get("val_size"):
        out["eval_size"] = section["val_size"]
    return out


def _model_init_kwargs(section: Mapping[str, Any]) -> dict[str, Any]:
    init_kwargs = dict(section.get("model_init_kwargs") or {})
    if "cache_dir" in section:
        init_kwargs["cache_dir"] = section["cache_dir"]
    if "model_revision" in section:
        init_kwargs["revision"] = section["model_revision"]
    if "flash_attn" in section:
        if section["flash_attn"] not in ATTENTION:
            raise ConfigError(
                f"LLaMA-Factory `flash_attn` must be one of {', '.join(ATTENTION)}, got {section['flash_attn']!r}"
            )
        if ATTENTION[section["flash_attn"]] is not None:
            init_kwargs["attn_implementation"] = ATTENTION[section["flash_attn"]]
    return init_kwargs


def _renamed(section: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """LLaMA-Factory names of RewardConfig settings -> the fields, and the reverse spelling."""
    out: dict[str, Any] = {}
    names: dict[str, str] = {}
    if "max_length" not in section:
        out["max_length"] = section.get("cutoff_len", 2048)
    if "preprocessing_num_workers" in section and "dataset_num_proc" not in section:
        out["dataset_num_proc"] = section["preprocessing_num_workers"]
        names["dataset_num_proc"] = "preprocessing_num_workers"
    if "warmup_ratio" in section and "warmup_steps" not in section:
        out["warmup_steps"] = section["warmup_ratio"]  # transformers 5: a float < 1 is a ratio
    if section.get("disable_gradient_checkpointing"):
        out["gradient_checkpointing"] = False
    return out, names


def map_llamafactory(section: Mapping[str, Any]) -> LlamaFactoryMapping:
    """Map a LLaMA-Factory ``stage: rm`` config onto the ``reward`` stage's config keys.

    Args:
        section: the LLaMA-Factory YAML mapping.

    Returns:
        The ``reward`` stage section, the notice lines and the LLaMA-Factory key names.

    Raises:
        ConfigError: keys this mapping does not support (all of them named), a finetuning type
            other than ``lora``/``full``, a bad ``flash_attn``, or ``do_train: false``.
    """
    from ..stages.reward import _reward_config_fields

    fields = _reward_config_fields()
    notices = [line for line in [_check_keys(section, fields)] if line]
    out: dict[str, Any] = {
        k: v for k, v in section.items() if k in fields and k not in ("do_train", "do_eval")
    }
    out["model"] = section["model_name_or_path"]
    out.update(_data(section))
    finetuning = section.get("finetuning_type", "lora")
    if finetuning == "lora":
        out["peft"] = _peft(section)
    elif finetuning != "full":
        raise ConfigError(
            f"LLaMA-Factory `finetuning_type: {finetuning}` is not supported; use `lora` or `full`"
        )
    template = section.get("template")
    if template is not None and "chat_template" not in section:
        resolved = resolve_template(str(template))
        out["chat_template"] = resolved.spec
        notices.append(resolved.notice)
    renamed, names = _renamed(section)
    out.update(renamed)
    init_kwargs = _model_init_kwargs(section)
    if init_kwargs:
        out["model_init_kwargs"] = init_kwargs
    return LlamaFactoryMapping(out, notices, names)


def from_llamafactory(section: Mapping[str, Any]) -> dict[str, Any]:
    """The ``reward`` stage section of a LLaMA-Factory config; notices are logged (see :func:`map_llamafactory`)."""
    mapping = map_llamafactory(section)
    for line in mapping.notices:
        logger.warning("%s", line)
    return mapping.section
