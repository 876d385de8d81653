"""Load a reward model and its tokenizer, and prepare a model for training: the one loader.

The trainer (a model given by name) and the reward stage (``reward-plugin train``, the hosts)
both load through :func:`load_model` and :func:`load_tokenizer_for`, and prepare the model they
train with :func:`prepare_model`.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from ..modeling import (
    apply_peft,
    check_reward_head,
    disable_dropout,
    ensure_pad_token,
    load_reward_model,
    model_tokenizer,
)
from ..scoring import unwrap_model

logger = logging.getLogger(__name__)


def load_model(name_or_path: str, args: Any, *, gguf_file: str | None = None) -> nn.Module:
    """A one-output sequence classifier from a folder, hub id, ``.gguf`` file or short name.

    The seed is set first (``args.seed``): the new score head is random, runs are reproducible.
    ``args.model_init_kwargs`` and ``args.trust_remote_code`` apply.
    """
    from transformers import set_seed

    set_seed(args.seed)
    init_kwargs = dict(args.model_init_kwargs or {})
    if gguf_file is not None:
        init_kwargs["gguf_file"] = gguf_file
    return load_reward_model(name_or_path, trust_remote_code=args.trust_remote_code, init_kwargs=init_kwargs)


def load_tokenizer_for(
    model: Any, tokenizer: Any = None, *, trust_remote_code: bool = False, gguf_file: str | None = None
) -> Any:
    """``tokenizer`` (a tokenizer, or a folder / name to load one from), else the model's own (or None).

    ``model`` is a name/path or a loaded model (its ``config._name_or_path``); a GGUF checkpoint's
    tokenizer comes from its file.
    """
    if tokenizer is not None and not isinstance(tokenizer, str):
        return tokenizer
    if tokenizer is not None:
        from dataset_formats.encoding import load_tokenizer

        return load_tokenizer(tokenizer, trust_remote_code=trust_remote_code)
    if model is None:
        return None
    if not isinstance(model, str):
        model = getattr(getattr(unwrap_model(model), "config", None), "_name_or_path", None)
    return model_tokenizer(model, trust_remote_code=trust_remote_code, gguf_file=gguf_file)


def load_model_and_tokenizer(model: Any, tokenizer: Any, args: Any) -> tuple[Any, Any]:
    """The trainer's model (loaded when given by name) and tokenizer (found when not given).

    Each source is read once; ``args.model_init_kwargs`` only applies to a model given by name.
    """
    gguf_file = (args.model_init_kwargs or {}).get("gguf_file")
    if isinstance(model, str):
        name = model
        model = load_model(name, args)
        if tokenizer is None:
            tokenizer = load_tokenizer_for(
                name, trust_remote_code=args.trust_remote_code, gguf_file=gguf_file
            )
    else:
        from transformers import set_seed

        set_seed(args.seed)  # what the trainer builds later (model_init, dropout draws) is reproducible
        if model is not None and args.model_init_kwargs:
            logger.warning("`model_init_kwargs` is ignored: the model is already loaded")
    if tokenizer is None and model is not None:
        tokenizer = load_tokenizer_for(model, trust_remote_code=args.trust_remote_code)
    return model, tokenizer


def prepare_model(
    model: nn.Module,
    tokenizer: Any,
    *,
    peft_config: Any = None,
    gradient_checkpointing: bool = False,
    dropout: bool = True,
) -> tuple[nn.Module, int]:
    """Check the head, give the tokenizer and model a pad token, wrap with PEFT, turn dropout off.

    Returns:
        ``(model, pad_token_id)``.
    """
    check_reward_head(model)
    pad_token_id = ensure_pad_token(model, tokenizer)  # before PEFT: it may resize the embeddings
    if peft_config is not None:
        model = apply_peft(model, peft_config, gradient_checkpointing=gradient_checkpointing)
    if not dropout:
        disable_dropout(model)
    return model, pad_token_id
