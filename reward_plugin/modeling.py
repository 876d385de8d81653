"""Model set-up for reward training: loading, pad token, dropout, PEFT."""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn

from .errors import ConfigError
from .model_sources import load_gguf_model, load_gguf_tokenizer, resolve_model_source
from .scoring import find_head, unwrap_model

logger = logging.getLogger(__name__)


def load_reward_model(name_or_path: str, *, trust_remote_code: bool = False, init_kwargs: dict | None = None):
    """``AutoModelForSequenceClassification.from_pretrained(name_or_path, num_labels=1)``.

    The weights load in float32 unless ``init_kwargs`` names a ``dtype``: mixed precision keeps
    float32 master weights, and a bf16 checkpoint trained in bf16 loses small updates. A GGUF
    checkpoint (a ``.gguf`` path, a folder with ``init_kwargs["gguf_file"]``, or a short name such
    as ``smollm2-135m-instruct``) is dequantized into a plain model that trains and saves
    (:mod:`reward_plugin.model_sources`).

    Args:
        name_or_path: a local folder, Hub id, ``.gguf`` file or bundled short name.
        trust_remote_code: allow custom model code.
        init_kwargs: more ``from_pretrained`` keyword arguments (``RewardConfig.model_init_kwargs``).

    Returns:
        The loaded ``PreTrainedModel``.
    """
    from transformers import AutoModelForSequenceClassification

    kwargs = dict(init_kwargs or {})
    if "torch_dtype" in kwargs and "dtype" not in kwargs:
        kwargs["dtype"] = kwargs.pop("torch_dtype")
    dtype = kwargs.get("dtype", torch.float32)
    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise ConfigError(
                f"`model_init_kwargs.dtype` must be a torch dtype name such as 'float32' or 'bfloat16', or 'auto'; "
                f"got {kwargs['dtype']!r}"
            )
    kwargs["dtype"] = dtype
    kwargs["num_labels"] = 1
    kwargs.setdefault("trust_remote_code", trust_remote_code)
    source = resolve_model_source(name_or_path, kwargs.pop("gguf_file", None))
    if source.is_gguf:
        return load_gguf_model(source, **kwargs)
    name_or_path = source.path
    # Weights come from safetensors files only: a pickled pytorch_model.bin is never unpickled.
    kwargs.setdefault("use_safetensors", True)
    try:
        return AutoModelForSequenceClassification.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as exc:
        if isinstance(exc, ValueError) and "trust_remote_code" not in str(exc):
            raise
        hint = ""
        if "trust_remote_code" in str(exc):
            hint = "; remote code is off by default: set trust_remote_code: true only if you trust that code"
        elif kwargs["use_safetensors"] and "safetensors" in str(exc):
            hint = (
                "; only safetensors weights are loaded (a pickled .bin can run code): convert the checkpoint to "
                "model.safetensors, or set model_init_kwargs: {use_safetensors: false} if you trust it"
            )
        raise ConfigError(
            f"cannot load the model {name_or_path!r}: {' '.join(str(exc).split())}{hint}"
        ) from exc


def load_tokenizer(
    name_or_path: str | None, *, trust_remote_code: bool = False, gguf_file: str | None = None
):
    """The tokenizer saved with a model (or stored in its GGUF file), or None when there is none to find."""
    if not name_or_path:
        return None
    from transformers import AutoTokenizer

    source = resolve_model_source(name_or_path, gguf_file)
    if source.is_gguf:
        return load_gguf_tokenizer(source, trust_remote_code=trust_remote_code)
    name_or_path = source.path

    try:
        return AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        logger.info("no tokenizer found at %r (%s); tokenized data will still work", name_or_path, exc)
        return None


def check_reward_head(model: nn.Module) -> None:
    """Refuse models that do not output one score per sequence."""
    config = getattr(unwrap_model(model), "config", None)
    num_labels = getattr(config, "num_labels", None)
    if num_labels != 1:
        raise ConfigError(
            f"the model has num_labels={num_labels!r}, but a reward model outputs one score per sequence; load it "
            "with AutoModelForSequenceClassification.from_pretrained(..., num_labels=1) or pass its name or path "
            "so the trainer loads it that way"
        )


def _text_config(model: nn.Module):
    config = unwrap_model(model).config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def ensure_pad_token(model: nn.Module | None, tokenizer: Any) -> int:
    """Give the tokenizer and the model the same pad token and return its id.

    Order of preference: the tokenizer's pad token, the model config's ``pad_token_id``, the EOS
    token (safe here: rewards are read where the attention mask ends, not where padding starts),
    and last a new ``<pad>`` token (the model's embeddings are resized).

    Args:
        model: the reward model (before PEFT wrapping), or None to settle the tokenizer alone.
        tokenizer: its tokenizer, or None for pre-tokenized data without one.

    Returns:
        The pad token id, also written to ``model.config.pad_token_id``.
    """
    config = _text_config(model) if model is not None else None
    config_pad = getattr(config, "pad_token_id", None)
    if tokenizer is None:
        pad_id = config_pad
        if pad_id is None:
            eos = getattr(config, "eos_token_id", None)
            pad_id = (eos[0] if isinstance(eos, (list, tuple)) and eos else eos) or 0
    else:
        if tokenizer.pad_token is None:
            if isinstance(config_pad, int) and 0 <= config_pad < len(tokenizer):
                tokenizer.pad_token = tokenizer.convert_ids_to_tokens(config_pad)
            elif tokenizer.eos_token is not None:
                tokenizer.pad_token = tokenizer.eos_token
            else:
                tokenizer.add_special_tokens({"pad_token": "<pad>"})
                logger.warning(
                    "the tokenizer had no pad or EOS token; added '<pad>' (id %d)", tokenizer.pad_token_id
                )
        pad_id = tokenizer.pad_token_id
        if model is not None and pad_id >= unwrap_model(model).get_input_embeddings().weight.shape[0]:
            unwrap_model(model).resize_token_embeddings(len(tokenizer))
    if model is not None:
        config.pad_token_id = pad_id
        unwrap_model(model).config.pad_token_id = pad_id
    return int(pad_id)


def disable_dropout(model: nn.Module) -> None:
    """Set every dropout probability to 0: ``nn.Dropout`` modules and float ``attention_dropout`` attributes."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def apply_peft(model: nn.Module, peft_config: Any, *, gradient_checkpointing: bool) -> nn.Module:
    """Wrap ``model`` with ``peft_config``; the classification head is trained in full.

    The config is copied, its task type set to sequence classification (which PEFT needs to keep
    the head trainable) and the head's name added to ``modules_to_save``.

    Args:
        model: the reward model, not yet a PEFT model.
        peft_config: a ``peft.PeftConfig`` (``LoraConfig``, ...).
        gradient_checkpointing: whether checkpointing is on (input embeddings then need grads).

    Returns:
        The ``PeftModel``.
    """
    try:
        from peft import PeftConfig, PeftModel, TaskType, get_peft_model
    except ImportError as exc:  # pragma: no cover - peft is a dependency
        raise ConfigError("`peft_config` needs the `peft` package: pip install peft") from exc
    if not isinstance(peft_config, PeftConfig):
        raise ConfigError(
            f"`peft_config` must be a peft.PeftConfig such as peft.LoraConfig(...), got {type(peft_config).__name__}"
        )
    if isinstance(model, PeftModel):
        raise ConfigError(
            "the model is already a PeftModel and a `peft_config` was passed too; merge the adapter "
            "(model.merge_and_unload()) or drop `peft_config`"
        )
    config = copy.deepcopy(peft_config)
    task_type = getattr(config, "task_type", None)
    if task_type is None:
        config.task_type = TaskType.SEQ_CLS
    elif str(getattr(task_type, "value", task_type)) != TaskType.SEQ_CLS.value:
        raise ConfigError(
            f"`peft_config.task_type` is {str(getattr(task_type, 'value', task_type))!r}; a reward model is a "
            "sequence classifier: use task_type='SEQ_CLS' or leave it unset"
        )
    head = find_head(model)
    if head is not None:
        to_save = list(config.modules_to_save or [])
        if head[0] not in to_save:
            config.modules_to_save = [*to_save, head[0]]
    peft_model = get_peft_model(model, config)
    if gradient_checkpointing:
        # With frozen embeddings, checkpointed blocks would see inputs without grad and train nothing.
        peft_model.enable_input_require_grads()
    return peft_model
