"""Training a pointwise / multi-attribute reward head: config, collator, loss and trainer."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import Trainer, TrainingArguments

from ..errors import ConfigError, DataError


@dataclass
class PointwiseConfig(TrainingArguments):
    """Training arguments of a pointwise / multi-attribute reward model.

    Parameters beyond ``TrainingArguments``:
        attributes: the score columns, one model output each (``num_labels = len(attributes)``).
        attribute_weights: how the outputs combine into one reward, ``sum(w_k * output_k)`` on
            standardised outputs; default: the first attribute alone (HelpSteer2's helpfulness,
            its overall judgement).
        standardize: train on ``(score - mean) / std`` per attribute (train-set statistics, saved
            in the model config); outputs are then in standard units, so weights compare.
        max_length: the longest sequence kept (cut on ``truncation``'s side; left keeps the response).
        truncation: ``left`` or ``right``.
        chat_template: chat template name or path for rendering (default: the tokenizer's, else
            the plain hh-rlhf style).
    """

    attributes: list[str] = field(
        default_factory=lambda: ["score"], metadata={"help": "Score columns, one model output each."}
    )
    attribute_weights: list[float] | None = field(
        default=None,
        metadata={"help": "Weights combining the outputs into one reward (default: first only)."},
    )
    standardize: bool = field(default=True, metadata={"help": "Train on standardised targets."})
    max_length: int | None = field(default=1024, metadata={"help": "Longest sequence kept."})
    truncation: str = field(default="left", metadata={"help": "Side cut when too long: left or right."})
    chat_template: str | None = field(default=None, metadata={"help": "Chat template name or path."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the dataset's columns."})
    report_to: Any = field(default="none", metadata={"help": "Logging integrations."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.attributes or not all(isinstance(a, str) and a for a in self.attributes):
            raise ConfigError(f"`attributes` must be a list of column names, got {self.attributes!r}")
        if len(set(self.attributes)) != len(self.attributes):
            raise ConfigError(f"`attributes` names a column twice: {self.attributes!r}")
        if self.attribute_weights is None:
            self.attribute_weights = [1.0] + [0.0] * (len(self.attributes) - 1)
        weights = [float(w) for w in self.attribute_weights]
        if len(weights) != len(self.attributes) or not all(math.isfinite(w) for w in weights):
            raise ConfigError(
                f"`attribute_weights` needs one finite number per attribute ({len(self.attributes)}: "
                f"{', '.join(self.attributes)}), got {self.attribute_weights!r}"
            )
        self.attribute_weights = weights
        if self.truncation not in ("left", "right"):
            raise ConfigError(f"`truncation` must be 'left' or 'right', got {self.truncation!r}")


def pointwise_loss(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the present targets: ``sum(mask * (p - t)^2) / sum(mask)``.

    Args:
        predictions: ``(n, K)`` model outputs.
        targets: ``(n, K)`` targets, NaN where an attribute is missing (masked out).

    Returns:
        A float32 scalar; 0 (with a gradient of 0) when no target is present.
    """
    predictions = predictions.float().reshape(targets.shape)
    mask = ~torch.isnan(targets)
    diff = torch.where(mask, predictions - torch.nan_to_num(targets.float()), torch.zeros_like(predictions))
    return (diff**2).sum() / mask.sum().clamp(min=1)


def combined_reward(outputs: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """One reward per row: ``outputs (n, K) @ weights (K,)``."""
    w = torch.as_tensor(list(weights), dtype=outputs.dtype, device=outputs.device)
    return outputs @ w


def attribute_statistics(
    labels: Sequence[Sequence[float]], standardize: bool
) -> tuple[list[float], list[float]]:
    """Per attribute ``(means, stds)`` over the present values (``(0, 1)`` without ``standardize``)."""
    k = len(labels[0])
    if not standardize:
        return [0.0] * k, [1.0] * k
    means, stds = [], []
    for j in range(k):
        values = [row[j] for row in labels if not math.isnan(row[j])]
        mean = sum(values) / len(values) if values else 0.0
        var = sum((v - mean) ** 2 for v in values) / len(values) if values else 0.0
        means.append(mean)
        stds.append(math.sqrt(var) if var > 0 else 1.0)
    return means, stds


@dataclass
class PointwiseCollator:
    """Right-pads ``input_ids``/``attention_mask``; ``labels`` become ``(n, K)`` float32 (NaN: missing)."""

    pad_token_id: int

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(e["input_ids"]) for e in examples)
        ids = torch.full((len(examples), length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(examples), length), dtype=torch.long)
        for i, e in enumerate(examples):
            n = len(e["input_ids"])
            ids[i, :n] = torch.tensor(e["input_ids"])
            mask[i, :n] = 1
        batch = {"input_ids": ids, "attention_mask": mask}
        if "labels" in examples[0]:
            batch["labels"] = torch.tensor([list(e["labels"]) for e in examples], dtype=torch.float32)
        return batch


class PointwiseTrainer(Trainer):
    """Trains a sequence classifier with ``num_labels = K`` on per-response attribute scores.

    Args:
        model: a model, or a folder / hub name loaded with ``AutoModelForSequenceClassification``
            and ``num_labels = len(args.attributes)``.
        args: a :class:`PointwiseConfig`.
        train_dataset, eval_dataset: rows (a file path, a list of dicts or a ``datasets.Dataset``
            in the layout of :mod:`.data`), or datasets already tokenized by
            :func:`~.data.encode_responses`.
        processing_class: the tokenizer (default: the model's).
    """

    def __init__(
        self,
        model: Any,
        args: PointwiseConfig,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        **kwargs: Any,
    ):
        from ..modeling import ensure_pad_token

        if processing_class is None:
            from transformers import AutoTokenizer

            name = model if isinstance(model, str) else model.config._name_or_path
            processing_class = AutoTokenizer.from_pretrained(name)
        self._args_for_data = args
        train_dataset = self._prepare(train_dataset, processing_class)
        eval_dataset = self._prepare(eval_dataset, processing_class)
        if isinstance(model, str):
            model = self._load(model, args)
        ensure_pad_token(model, processing_class)
        if train_dataset is not None:
            means, stds = attribute_statistics(train_dataset["labels"], args.standardize)
            _describe(model.config, args, means, stds)
        elif getattr(model.config, "reward_attributes", None) is None:
            raise ConfigError(
                "pass a `train_dataset` (the attribute statistics come from it) or a trained model"
            )
        self._check_heads(model, args)
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            data_collator=PointwiseCollator(model.config.pad_token_id or 0),
            **kwargs,
        )
        self.can_return_loss = True

    @staticmethod
    def _load(name: str, args: PointwiseConfig) -> Any:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(
            name,
            num_labels=len(args.attributes),
            id2label=dict(enumerate(args.attributes)),
            label2id={a: i for i, a in enumerate(args.attributes)},
            problem_type="regression",
            # a checkpoint with another number of outputs (a pairwise reward model: one) gets a new head
            ignore_mismatched_sizes=True,
        )

    @staticmethod
    def _check_heads(model: Any, args: PointwiseConfig) -> None:
        if model.config.num_labels != len(args.attributes):
            raise ConfigError(
                f"the model has {model.config.num_labels} outputs but `attributes` names {len(args.attributes)} "
                f"({', '.join(args.attributes)}); load it with num_labels={len(args.attributes)}"
            )

    def _prepare(self, dataset: Any, tokenizer: Any) -> Any:
        from .rows import encode_responses, read_responses

        if dataset is None:
            return None
        if hasattr(dataset, "column_names") and "input_ids" in dataset.column_names:
            if len(dataset[0]["labels"]) != len(self._args_for_data.attributes):
                raise DataError(
                    f"the dataset's labels hold {len(dataset[0]['labels'])} scores but `attributes` names "
                    f"{len(self._args_for_data.attributes)}"
                )
            return dataset
        args = self._args_for_data
        rows = read_responses(dataset, args.attributes)
        return encode_responses(
            rows,
            tokenizer,
            max_length=args.max_length,
            truncation=args.truncation,
            chat_template=args.chat_template,
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.get("labels")
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        logits = outputs.logits.float()
        if labels is None:
            loss = logits.new_zeros(())
        else:
            cfg = model.config if hasattr(model, "config") else self.model.config
            mean = torch.tensor(cfg.reward_attribute_mean, device=logits.device)
            std = torch.tensor(cfg.reward_attribute_std, device=logits.device)
            loss = pointwise_loss(logits, (labels.float() - mean) / std)
        return (loss, {"logits": logits}) if return_outputs else loss


def _describe(config: Any, args: PointwiseConfig, means: list[float], stds: list[float]) -> None:
    """Write what each output is and how to combine them into the model config (saved with it)."""
    config.id2label = dict(enumerate(args.attributes))
    config.label2id = {a: i for i, a in enumerate(args.attributes)}
    config.problem_type = "regression"
    config.reward_attributes = list(args.attributes)
    config.reward_attribute_weights = list(args.attribute_weights)
    config.reward_attribute_mean = means
    config.reward_attribute_std = stds
