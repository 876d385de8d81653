""":class:`RewardScorer`: a saved reward model as a reward function (TRL GRPO) and a batch scorer.

Example::

    from reward_plugin import RewardScorer
    scorer = RewardScorer.from_pretrained("my-reward-model")
    scorer(prompts=["2+2="], completions=["4"])          # -> [reward]
    GRPOTrainer(model=..., reward_funcs=[scorer], ...)   # TRL's reward-function signature
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, DataError
from ..metrics import read_reward_stats
from ..scoring import ScoreReader
from .batching import default_token_budget, score_grouped, score_padded
from .encoding import Content, ScoringEncoder
from .export import chat_template_source, read_scoring_settings

logger = logging.getLogger(__name__)

ADAPTER_CONFIG_FILE = "adapter_config.json"


def default_device() -> torch.device:
    """CUDA when available, then Apple MPS, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on a GPU that supports it, float32 elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _as_dtype(dtype: Any) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return None
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise ConfigError(f"dtype must be a torch dtype or its name ('float32', 'bfloat16'), got {dtype!r}")
    return value


def load_scoring_model(path: str | os.PathLike, dtype: torch.dtype, *, trust_remote_code: bool = False):
    """``(model, tokenizer, folder of the training settings)`` of a saved reward model or PEFT adapter."""
    from ..modeling import load_reward_model, model_tokenizer

    folder = Path(path).expanduser()
    adapter = folder / ADAPTER_CONFIG_FILE
    kwargs = {"dtype": dtype}
    if adapter.is_file():
        from peft import PeftModel

        base = json.loads(adapter.read_text(encoding="utf-8")).get("base_model_name_or_path")
        if not base:
            raise ConfigError(f"{adapter}: no base_model_name_or_path, so the base model is unknown")
        tokenizer = model_tokenizer(str(folder), trust_remote_code=trust_remote_code) or model_tokenizer(
            base, trust_remote_code=trust_remote_code
        )
        model = load_reward_model(base, trust_remote_code=trust_remote_code, init_kwargs=kwargs)
        if tokenizer is not None and len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer))
        model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    else:
        model = load_reward_model(str(path), trust_remote_code=trust_remote_code, init_kwargs=kwargs)
        tokenizer = model_tokenizer(str(path), trust_remote_code=trust_remote_code)
    if tokenizer is None:
        raise ConfigError(f"{path}: no tokenizer saved with the model; a scorer needs one to read text")
    return model, tokenizer


class RewardScorer:
    """Scores completions with a trained reward model, as training read its rewards.

    Build one with :meth:`from_pretrained`. Calling it follows TRL's reward-function signature
    (``scorer(prompts=..., completions=..., **kwargs) -> list[float]``); :meth:`score` is the same
    with more options. Completions that share a prompt run as one group block (the prompt encoded
    once) on causal decoders; blocks are packed without padding, ``token_budget`` tokens per
    forward.

    Attributes:
        model: the sequence-classification model (eval mode).
        tokenizer: its tokenizer.
        encoder: renders and tokenizes items (:class:`~.encoding.ScoringEncoder`).
        mean, std: the saved reward statistics, or None.
        normalize: whether rewards are returned as ``(r - mean) / std``.
        grouped: whether the group layout runs (False: padded rows).
    """

    #: TRL names reward functions by ``__name__``.
    __name__ = "reward_model"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        settings: dict[str, Any] | None = None,
        stats: dict[str, Any] | None = None,
        normalize: bool = True,
        token_budget: int | None = None,
        max_length: int | None = None,
        chat_template: str | None = None,
        device: torch.device | str | None = None,
    ):
        from dataset_formats.rendering import ChatTemplate, load_chat_template

        from ..pairs.layout import unsupported_reason

        settings = dict(settings or {})
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.token_budget = (
            int(token_budget) if token_budget is not None else default_token_budget(self.device)
        )
        if self.token_budget < 1:
            raise ConfigError(f"token_budget must be a positive number of tokens, got {token_budget!r}")
        if chat_template is not None:
            template = load_chat_template(chat_template, tokenizer)
        else:
            source = settings.get("chat_template") or chat_template_source(tokenizer)
            template = ChatTemplate("saved", source) if source else None
        limit = max_length if max_length is not None else settings.get("max_length")
        self.encoder = ScoringEncoder(tokenizer, template, limit, settings.get("truncation", "left"))
        self.mean = self.std = None
        numbers = stats and all(isinstance(stats.get(k), (int, float)) for k in ("mean", "std"))
        if numbers and math.isfinite(stats["mean"]) and math.isfinite(stats["std"]) and stats["std"] > 0:
            self.mean, self.std = float(stats["mean"]), float(stats["std"])
        self.normalize = bool(normalize) and self.mean is not None
        if normalize and self.mean is None:
            logger.info("no usable reward_stats.json: rewards are returned raw")
        reason = unsupported_reason(model)
        self.grouped = reason is None
        if reason is not None:
            logger.info("scoring with padded rows: %s", reason)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._reader = ScoreReader(model)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
        normalize: bool = True,
        token_budget: int | None = None,
        max_length: int | None = None,
        chat_template: str | None = None,
        trust_remote_code: bool = False,
    ) -> RewardScorer:
        """Load a saved reward model (or a PEFT adapter, its base from ``adapter_config.json``).

        Args:
            path: the trained model's output folder.
            device: where to run (default: CUDA, then MPS, then CPU).
            dtype: weights' dtype (default: bfloat16 on a GPU that supports it, else float32).
            normalize: return ``(r - mean) / std`` with the saved ``reward_stats.json`` (raw when False
                or when the folder has none).
            token_budget: tokens per forward (memory stays flat on long inputs); default 16384 on a GPU,
                4096 on CPU (larger CPU forwards run slower).
            max_length: the length limit (default: the one used in training, from ``reward_scoring.json``).
            chat_template: a shipped template name or ``.jinja`` path for conversational items
                (default: the template saved with the model).
            trust_remote_code: allow custom model code (off by default).
        """
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"{str(path)!r} is not a folder; pass a trained reward model's output folder")
        device = torch.device(device) if device is not None else default_device()
        dtype = _as_dtype(dtype) or default_dtype(device)
        model, tokenizer = load_scoring_model(folder, dtype, trust_remote_code=trust_remote_code)
        model.to(device)
        return cls(
            model,
            tokenizer,
            settings=read_scoring_settings(folder),
            stats=read_reward_stats(folder),
            normalize=normalize,
            token_budget=token_budget,
            max_length=max_length,
            chat_template=chat_template,
            device=device,
        )

    def __call__(
        self,
        prompts: Sequence[Content] | None = None,
        completions: Sequence[Content] | None = None,
        **kwargs: Any,
    ) -> list[float]:
        """TRL's reward-function call: one reward per completion.

        GRPO passes a dataset's extra columns as keyword lists, one entry per completion: a
        ``tools`` column (tool schemas) and a ``chat_template_kwargs`` column (e.g.
        ``{"enable_thinking": False}``) reach the chat template as in training; other keyword
        arguments are ignored.
        """
        if completions is None:
            raise DataError("pass completions=[...] (and prompts=[...], one per completion)")
        if prompts is None:
            prompts = [None] * len(completions)
        return self.score(
            prompts,
            completions,
            tools=kwargs.get("tools"),
            chat_template_kwargs=kwargs.get("chat_template_kwargs"),
        )

    def score(
        self,
        prompts: Sequence[Content],
        completions: Sequence[Content],
        *,
        tools: Sequence[Any] | None = None,
        chat_template_kwargs: Sequence[Any] | None = None,
        normalize: bool | None = None,
    ) -> list[float]:
        """One reward per ``(prompt, completion)``, in order.

        Args:
            prompts: texts or message lists (None or "" for no prompt).
            completions: texts or assistant message lists.
            tools: per completion, the tool schemas the chat template shows (a list, its JSON string,
                or None), as a training row's ``tools`` column.
            chat_template_kwargs: per completion, extra chat-template variables (an object or None),
                as a training row's ``chat_template_kwargs`` column.
            normalize: override the scorer's ``normalize`` for this call.
        """
        prompt_texts, ids = self.encoder.encode(
            prompts, completions, tools=tools, chat_template_kwargs=chat_template_kwargs
        )
        return self.score_ids(ids, prompt_texts, normalize=normalize)

    def score_texts(self, texts: Sequence[str], *, normalize: bool | None = None) -> list[float]:
        """One reward per full text (already rendered: prompt and completion together)."""
        ids = self.encoder.encode_texts([""] * len(texts), list(texts))
        return self.score_ids(ids, list(texts), group_by_prefix=True, normalize=normalize)

    def score_ids(
        self,
        ids: Sequence[list[int]],
        keys: Sequence[Any] | None = None,
        *,
        group_by_prefix: bool = False,
        normalize: bool | None = None,
    ) -> list[float]:
        """One reward per token sequence; sequences with the same ``keys`` entry form a group."""
        for k, seq in enumerate(ids):
            if not seq:
                raise DataError(f"item {k} has no tokens after rendering; give it a non-empty completion")
        items = list(enumerate(ids))
        # no_grad, not inference_mode: segment attention caches masks that training may reuse with autograd.
        with torch.no_grad():
            if self.grouped:
                groups = self._groups(items, keys, group_by_prefix)
                found = score_grouped(
                    self.model, self._reader, groups, token_budget=self.token_budget, device=self.device
                )
            else:
                found = score_padded(
                    self.model,
                    self._reader,
                    items,
                    token_budget=self.token_budget,
                    pad_token_id=self.pad_token_id,
                    device=self.device,
                )
        rewards = [found[k] for k in range(len(ids))]
        wanted = self.normalize if normalize is None else (normalize and self.mean is not None)
        if wanted:
            rewards = [(r - self.mean) / self.std for r in rewards]
        return rewards

    @staticmethod
    def _groups(items: list[tuple[int, list[int]]], keys: Sequence[Any] | None, by_prefix: bool):
        if keys is None:
            return [[item] for item in items]
        groups: dict[Any, list[tuple[int, list[int]]]] = {}
        for item, key in zip(items, keys):
            # Full texts: a group per first 32 tokens (a shared chat prefix), the block finds the rest.
            group_key = tuple(item[1][:32]) if by_prefix else key
            groups.setdefault(group_key, []).append(item)
        return list(groups.values())
