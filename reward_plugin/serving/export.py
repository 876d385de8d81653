"""What a saved reward model needs so that it scores as trained wherever it is loaded.

Plain ``AutoModelForSequenceClassification`` (TRL's GRPOTrainer, OpenRLHF, vLLM's transformers
fallback) pools a decoder's per-token scores at the rightmost token whose id differs from
``config.pad_token_id``. Training reads the reward where the attention mask ends instead, so the
two agree unless a sequence *ends* with the pad id, which is what happens when pad == EOS and a row
ends with the EOS: plain pooling then reads the token before it. :func:`plain_scoring_save` saves
the model with a pad token that never ends a sequence (the BOS token, or another special token
that no rendered row ends with); the weights are untouched, and the in-memory model and tokenizer
are restored after the save.

It also writes ``reward_scoring.json``: the length limit, truncation side and chat template the
model was trained with, which :class:`~reward_plugin.serving.RewardScorer` applies when scoring.
The chat template is also stored in the saved tokenizer, so ``apply_chat_template`` renders as
training did.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..scoring import unwrap_model

logger = logging.getLogger(__name__)

#: The scoring settings saved next to a trained model.
SCORING_CONFIG_FILE = "reward_scoring.json"

_PROBE = [{"role": "user", "content": "Hello?"}, {"role": "assistant", "content": "Hi there."}]


def _ids(value: Any) -> set[int]:
    if value is None:
        return set()
    if isinstance(value, (list, tuple)):
        return {int(v) for v in value if v is not None}
    return {int(value)}


def _text_configs(model: Any) -> list[Any]:
    config = unwrap_model(model).config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return [config] if text is config else [config, text]


def ending_ids(tokenizer: Any, model: Any = None) -> set[int]:
    """Token ids that can end a rendered row: the EOS ids and the last token of a rendered chat turn."""
    found = _ids(getattr(tokenizer, "eos_token_id", None))
    if model is not None:
        for config in _text_configs(model):
            found |= _ids(getattr(config, "eos_token_id", None))
        generation = getattr(unwrap_model(model), "generation_config", None)
        found |= _ids(getattr(generation, "eos_token_id", None))
    template = chat_template_source(tokenizer)
    if template:
        from dataset_formats.errors import TemplateError
        from dataset_formats.rendering import ChatTemplate

        try:
            text = ChatTemplate("probe", template).render(
                _PROBE, bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token
            )
            ids = tokenizer(text, add_special_tokens=True)["input_ids"]
            if ids:
                found.add(int(ids[-1]))
        except TemplateError as exc:  # a template that fails on the probe says nothing about endings
            logger.debug("chat template probe failed: %s", exc)
    return found


def chat_template_source(tokenizer: Any) -> str | None:
    """The tokenizer's chat template text (the ``default`` one of a named set), or None."""
    source = getattr(tokenizer, "chat_template", None)
    if isinstance(source, dict):
        source = source.get("default")
    return source or None


def plain_pad_token(tokenizer: Any, model: Any = None) -> str | None:
    """A pad token under which plain last-non-pad pooling reads the last token of every row, or None.

    None when the current pad token already never ends a row (keep it), and also when the
    tokenizer has no special token to use instead (a warning says so).
    """
    pad_id = getattr(tokenizer, "pad_token_id", None)
    if pad_id is None:
        return None
    endings = ending_ids(tokenizer, model)
    if int(pad_id) not in endings:
        return None
    candidates = [getattr(tokenizer, "bos_token", None)]
    candidates += [t for t in getattr(tokenizer, "all_special_tokens", []) if t not in candidates]
    unk = getattr(tokenizer, "unk_token", None)  # unknown characters can end any text
    for token in candidates:
        if not token or token == unk:
            continue
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is not None and int(token_id) not in endings:
            return token
    logger.warning(
        "pad == EOS and the tokenizer has no other special token: plain AutoModelForSequenceClassification "
        "pooling reads the token before a final EOS; score with reward_plugin.RewardScorer"
    )
    return None


def scoring_settings(args: Any, tokenizer: Any) -> dict[str, Any]:
    """``reward_scoring.json``'s content: ``max_length``, ``truncation`` and the chat template text."""
    template = None
    spec = getattr(args, "chat_template", None)
    if spec is not None:
        from dataset_formats.rendering import load_chat_template

        template = load_chat_template(spec, tokenizer).source
    elif tokenizer is not None:
        template = chat_template_source(tokenizer)
    truncation = getattr(args, "truncation", "left")
    return {
        "max_length": getattr(args, "max_length", None),
        "truncation": truncation if truncation in ("left", "right") else "left",
        "chat_template": template,
        "pad_token": getattr(tokenizer, "pad_token", None) if tokenizer is not None else None,
    }


def read_scoring_settings(model_dir: str | Path) -> dict[str, Any]:
    """The ``reward_scoring.json`` of a saved model folder ({} when it has none)."""
    path = Path(model_dir) / SCORING_CONFIG_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


@contextlib.contextmanager
def plain_scoring_save(model: Any, tokenizer: Any, args: Any) -> Iterator[dict[str, Any]]:
    """Within the block, ``model``/``tokenizer`` carry the pad token and chat template to save with.

    Yields the :func:`scoring_settings` to write next to the model (after the save).
    """
    if tokenizer is None or not hasattr(tokenizer, "pad_token"):
        yield scoring_settings(args, None)
        return
    saved_pad, saved_template = tokenizer.pad_token, getattr(tokenizer, "chat_template", None)
    configs = _text_configs(model) if model is not None else []
    saved_ids = [getattr(c, "pad_token_id", None) for c in configs]
    settings = scoring_settings(args, tokenizer)
    try:
        if settings["chat_template"] is not None:
            tokenizer.chat_template = settings["chat_template"]
        token = plain_pad_token(tokenizer, model)
        if token is not None:
            tokenizer.pad_token = token
            for config in configs:
                config.pad_token_id = tokenizer.pad_token_id
            logger.info("saved with pad token %r so plain pooling reads each row's last token", token)
        settings["pad_token"] = tokenizer.pad_token
        yield settings
    finally:
        tokenizer.pad_token = saved_pad
        if hasattr(tokenizer, "chat_template"):
            tokenizer.chat_template = saved_template
        for config, value in zip(configs, saved_ids):
            config.pad_token_id = value


def write_scoring_settings(settings: dict[str, Any], output_dir: str | Path) -> Path:
    """Write ``reward_scoring.json`` into ``output_dir`` and return its path."""
    path = Path(output_dir) / SCORING_CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
