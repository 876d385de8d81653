"""`RewardTrainer`: pairwise reward-model training on top of `transformers.Trainer`."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel, Trainer, TrainerCallback, set_seed
from transformers.trainer_utils import EvalPrediction, has_length

from dataset_formats.groups import GROUP_COLUMNS, SCORES_COLUMN, is_group_table
from dataset_formats.schema import MARGIN_COLUMN, PAIR_COLUMNS, TIE_COLUMN

from .config import RewardConfig
from .data import column_names, pair_lengths, prepare_dataset
from .errors import ConfigError, DataError
from .group_eval import group_rows, grouped_evaluation
from .loss import group_loss, pairwise_loss
from .metrics import compute_reward_metrics, reward_metrics, reward_statistics, write_reward_stats
from .modelcard import library_versions, write_model_card
from .modeling import (
    apply_peft,
    check_reward_head,
    disable_dropout,
    ensure_pad_token,
    load_reward_model,
    model_tokenizer,
)
from .pairs import (
    FAST_MODES,
    PACKED_KEYS,
    PrefixSharedPairCollator,
    RewardDataCollatorWithPadding,
    attention_cost_tokens,
    packed_rewards,
    resolve_pair_batching,
)
from .pairs.attention import supports_segment_attention
from .pairs.groups import GROUP_KEYS, GroupCollator, group_rewards
from .sampler import LengthGroupedPairSampler
from .scoring import ScoreReader, unwrap_model
from .ties import davidson_loss, trainer_tie_strength

logger = logging.getLogger(__name__)

#: Pairs sampled from the train set for the reward statistics when there is no eval set: enough
#: for a mean and std of the rewards (standard error ~ std / 32), and a bounded extra forward pass.
TRAIN_STATS_PAIRS = 512


@dataclass
class _Evaluation:
    """The outcome of one evaluation of the trainer's own eval set, and the model state it saw."""

    metrics: dict[str, float]
    rewards: np.ndarray | None  # (pairs, 2): chosen, rejected
    model_state: tuple[int, int, int]


def _model_state(trainer: Trainer) -> tuple[int, int, int]:
    """Changes whenever the weights may have: the step, the model object, the parameters' in-place versions.

    ``Tensor._version`` is torch's counter of in-place writes (what autograd checks saved tensors
    with); every optimizer step and every manual ``param.add_()`` bumps it.
    """
    versions = sum(p._version for p in trainer.model.parameters())
    return (trainer.state.global_step, id(trainer.model), versions)


def _reward_args(model: Any, args: RewardConfig | None, max_length: int | None) -> RewardConfig:
    """The trainer's arguments: ``args`` (default: ``output_dir="<model>-reward"``) with ``max_length`` applied."""
    if args is None:
        name = (
            model if isinstance(model, str) else getattr(getattr(model, "config", None), "_name_or_path", "")
        )
        args = RewardConfig(output_dir=f"{Path(str(name or 'model')).name or 'model'}-reward")
    elif not isinstance(args, RewardConfig):
        raise ConfigError(
            f"`args` must be a reward_plugin.RewardConfig, got {type(args).__name__}; build one with "
            "RewardConfig(output_dir=..., ...)"
        )
    if max_length is not None:
        if args.max_length is not None and args.max_length != max_length:
            logger.warning(
                "max_length=%d given to the trainer overrides args.max_length=%d", max_length, args.max_length
            )
        args.max_length = max_length
    return args


def _one_tokenizer(processing_class: Any, tokenizer: Any) -> Any:
    """``processing_class``, or its old name ``tokenizer``; both at once is an error."""
    if tokenizer is not None and processing_class is not None and tokenizer is not processing_class:
        raise ConfigError("pass the tokenizer once: `processing_class` or its old name `tokenizer`, not both")
    return processing_class if processing_class is not None else tokenizer


class RewardTrainer(Trainer):
    """Trains a sequence-classification model (one output) on preference pairs.

    The loss is ``-logsigmoid(r_chosen - r_rejected - margin)`` averaged over pairs, plus
    ``center_rewards_coefficient * mean((r_chosen + r_rejected)^2)`` when set; a reward is the
    head's score at the last attended token of a sequence. Train and eval logs carry
    ``accuracy`` (ties count as wrong), ``margin`` (mean ``r_chosen - r_rejected``) and
    ``rewards/{chosen,rejected}_{mean,std}``. ``predict`` returns per-pair rewards, shape
    ``(n, 2)`` (chosen, rejected); its ``label_ids`` are the data's margins (zeros without).

    After ``train()`` the reward mean/std (eval set, else a train sample) go to
    ``model.config.reward_mean``/``reward_std``, and the final model is saved to ``output_dir``
    with its tokenizer, ``reward_stats.json`` and a model card ``README.md`` (``save_final_model``);
    ``save_model(dir)`` writes the same set anywhere.

    Args:
        model: a ``PreTrainedModel`` with ``num_labels=1`` (normally from
            ``AutoModelForSequenceClassification``), or a name/path loaded that way.
        args: a :class:`RewardConfig` (default: one with ``output_dir="<model>-reward"``).
        data_collator: default :class:`RewardDataCollatorWithPadding` (see ``_default_collator``).
        train_dataset: tokenized pairs (legacy four columns or ``chosen_ids``/``rejected_ids``) or
            text rows in a dataset-toolkit format (tokenized with ``processing_class``).
        eval_dataset: same layouts; a Dataset or a dict of them.
        processing_class: the tokenizer (loaded from the model's folder when omitted).
        model_init: a function returning a fresh model (hyperparameter search).
        compute_metrics: replaces the default reward metrics of ``evaluate``; it gets an
            ``EvalPrediction`` whose ``predictions`` are ``(n, 2)`` rewards.
        callbacks, optimizers, optimizer_cls_and_kwargs, preprocess_logits_for_metrics: as in
            ``transformers.Trainer``.
        max_length: overrides ``args.max_length``.
        peft_config: a ``peft.PeftConfig``; the model is wrapped and its head stays fully trainable.
        tokenizer: old name of ``processing_class``.
    """

    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean
    _grouped = False  # a dataset is a grouped table: the default collator is a GroupCollator

    def __init__(
        self,
        model: PreTrainedModel | nn.Module | str | None = None,
        args: RewardConfig | None = None,
        data_collator: Callable | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        model_init: Callable[..., PreTrainedModel] | None = None,
        compute_metrics: Callable[[EvalPrediction], dict] | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[Any, Any] = (None, None),
        preprocess_logits_for_metrics: Callable | None = None,
        max_length: int | None = None,
        peft_config: Any = None,
        *,
        tokenizer: Any = None,
        optimizer_cls_and_kwargs: tuple[type, dict[str, Any]] | None = None,
    ):
        if model is None and model_init is None:
            raise ConfigError("pass `model` (a model or a name/path) or `model_init`")
        self.args = _reward_args(model, args, max_length)
        self._peft_config = peft_config
        model, processing_class = self._load_model_and_tokenizer(
            model, _one_tokenizer(processing_class, tokenizer)
        )
        self.processing_class = processing_class
        if model is not None:
            model = self._prepare_model(model)
        else:  # model_init: Trainer builds the model later; the collator needs the pad id now
            self._pad_token_id = (
                ensure_pad_token(None, processing_class) if processing_class is not None else 0
            )
        train_dataset, eval_dataset = self._prepare_datasets(train_dataset, eval_dataset)
        # The layout needs the model; a `model_init` model only exists once Trainer.__init__ built it.
        self.pair_batching = (
            resolve_pair_batching(self.args.pair_batching, model) if model is not None else "standard"
        )
        self._layout_model = model
        default_collator = data_collator is None
        super().__init__(
            model=model,
            args=self.args,
            data_collator=self._default_collator() if default_collator else data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            model_init=model_init,
            compute_metrics=compute_metrics if compute_metrics is not None else compute_reward_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        )
        self._finish_setup(model_built_by_trainer=model is None, default_collator=default_collator)

    # ----------------------------------------------------------------- set-up

    def _load_model_and_tokenizer(self, model: Any, processing_class: Any) -> tuple[Any, Any]:
        """Load a model given by name (a folder, hub id, GGUF file or short name) and find its tokenizer.

        The tokenizer comes from ``processing_class``, else from where the model was loaded (a
        GGUF checkpoint's own file). Each source is read once.
        """
        args = self.args
        set_seed(args.seed)  # a loaded model's new head is random: make it reproducible
        if isinstance(model, str):
            model_path = model
            model = load_reward_model(
                model_path, trust_remote_code=args.trust_remote_code, init_kwargs=args.model_init_kwargs
            )
            if processing_class is None:
                processing_class = model_tokenizer(
                    model_path,
                    trust_remote_code=args.trust_remote_code,
                    gguf_file=(args.model_init_kwargs or {}).get("gguf_file"),
                )
        elif model is not None and args.model_init_kwargs:
            logger.warning("`model_init_kwargs` is ignored: the model is already loaded")
        if processing_class is None and model is not None:
            name = getattr(getattr(unwrap_model(model), "config", None), "_name_or_path", None)
            processing_class = model_tokenizer(name, trust_remote_code=args.trust_remote_code)
        return model, processing_class

    def _prepare_datasets(self, train_dataset: Any, eval_dataset: Any) -> tuple[Any, Any]:
        """Tokenize text data and check the columns of every dataset (see :func:`prepare_dataset`)."""
        train_dataset = self._prepare(train_dataset, "train") if train_dataset is not None else None
        if isinstance(eval_dataset, dict):
            eval_dataset = {key: self._prepare(ds, key) for key, ds in eval_dataset.items()}
        elif eval_dataset is not None:
            eval_dataset = self._prepare(eval_dataset, "eval")
        self._uses_margin = any(
            MARGIN_COLUMN in column_names(ds)
            for ds in [
                train_dataset,
                *(eval_dataset.values() if isinstance(eval_dataset, dict) else [eval_dataset]),
            ]
            if ds is not None
        )
        return train_dataset, eval_dataset

    def _finish_setup(self, *, model_built_by_trainer: bool, default_collator: bool) -> None:
        """What needs ``Trainer.__init__`` to have run: a ``model_init`` model's layout, loss bookkeeping."""
        if self.args.n_gpu > 1:
            raise ConfigError(
                "RewardTrainer does not run under nn.DataParallel (several GPUs in one process); launch with "
                "`accelerate launch` or `torchrun`, or expose one GPU with CUDA_VISIBLE_DEVICES"
            )
        # The loss never goes through the model, so the model's loss kwargs must not change GA scaling.
        self.model_accepts_loss_kwargs = False
        if model_built_by_trainer:
            self.pair_batching = resolve_pair_batching(self.args.pair_batching, self.model)
            self._layout_model = self.model
            if default_collator:
                self.data_collator = self._default_collator()
        self.can_return_loss = True
        self.label_names = []
        self._train_rewards: list[torch.Tensor] = []  # (pairs, 2) rewards since the last log
        self.reward_stats: dict[str, Any] | None = None
        self._final_eval: _Evaluation | None = None  # the last evaluation of the own eval set
        self._capture_eval_rewards = False

    def _prepare_model(self, model: nn.Module) -> nn.Module:
        """Pad token, PEFT, dropout and the score reader, for the given or a ``model_init`` model."""
        check_reward_head(model)
        self._pad_token_id = ensure_pad_token(model, self.processing_class)
        if self._peft_config is not None:
            model = apply_peft(
                model, self._peft_config, gradient_checkpointing=bool(self.args.gradient_checkpointing)
            )
        if self.args.disable_dropout:
            disable_dropout(model)
        self._score_reader = ScoreReader(model)
        return model

    def call_model_init(self, trial: Any = None) -> nn.Module:
        return self._prepare_model(super().call_model_init(trial))

    def _prepare(self, dataset: Any, name: str) -> Any:
        prepared = prepare_dataset(
            dataset,
            tokenizer=self.processing_class,
            dataset_format=self.args.dataset_format,
            max_length=self.args.max_length,
            truncation=self.args.truncation,
            chat_template=self.args.chat_template,
            format_options=self.args.dataset_format_options,
            on_error=self.args.dataset_on_error,
            num_proc=self.args.dataset_num_proc,
            name=name,
        )
        if not self._grouped and is_group_table(column_names(prepared)):
            self._grouped = True
            # A grouped set given after __init__ (evaluate/predict): our default pair collators
            # become the group collator, which takes pair rows too (as groups of two).
            if type(getattr(self, "data_collator", None)) in (
                RewardDataCollatorWithPadding,
                PrefixSharedPairCollator,
            ):
                self.data_collator = self._default_collator()
        return prepared

    def _default_collator(self) -> Callable:
        """The collator used when none is passed: the layout of ``self.pair_batching``.

        ``standard`` pads chosen and rejected rows (:class:`RewardDataCollatorWithPadding`);
        ``prefix_shared`` and ``packed`` write one block per pair (:class:`PrefixSharedPairCollator`).
        """
        tok = self.processing_class
        keep = (
            {getattr(tok, f"{kind}_token_id", None) for kind in ("bos", "eos", "cls", "sep")}
            if tok
            else set()
        )
        options = {
            "pad_token_id": self._pad_token_id,
            "pad_to_multiple_of": self.args.pad_to_multiple_of,
            "max_length": self.args.max_length,
            "truncation": self.args.truncation,
            "keep_token_ids": {i for i in keep if isinstance(i, int)},
            "padding_side": "right",
        }
        if self._grouped:
            layout = getattr(self, "pair_batching", "standard")
            model = getattr(self, "_layout_model", None)
            cost = None
            if layout == "packed" and model is not None:
                cost = math.inf if self._segment_attention(model) else attention_cost_tokens(model)
            return GroupCollator(**options, layout=layout, attention_cost_tokens=cost)
        if getattr(self, "pair_batching", "standard") in FAST_MODES:
            pack = self.pair_batching == "packed"
            model = getattr(self, "_layout_model", None)
            cost = None
            if pack and model is not None:
                # Segment attention costs the same per token however long the row: one row, no padding.
                cost = math.inf if self._segment_attention(model) else attention_cost_tokens(model)
            return PrefixSharedPairCollator(**options, pack=pack, attention_cost_tokens=cost)
        return RewardDataCollatorWithPadding(**options)

    def _segment_attention(self, model: nn.Module) -> bool:
        """Whether the fast layouts run segment attention (``pair_attention='segments'`` and sdpa/eager)."""
        return self.args.pair_attention == "segments" and supports_segment_attention(model)

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            self._signature_columns = [
                *PAIR_COLUMNS,
                "chosen_ids",
                "rejected_ids",
                MARGIN_COLUMN,
                TIE_COLUMN,
                *PACKED_KEYS,
                *GROUP_COLUMNS,
                SCORES_COLUMN,
                *GROUP_KEYS,
            ]

    def _get_train_sampler(self, train_dataset: Any = None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        grouped = self.args.group_by_length or self.args.train_sampling_strategy == "group_by_length"
        if grouped and dataset is not None and has_length(dataset) and hasattr(dataset, "with_format"):
            lengths = self._pair_lengths(dataset)
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            # Grouped by the batch of one optimizer step across all processes: the data loader hands
            # consecutive per-device chunks of it to the processes, so N processes see the same
            # global batches as one process with N times the per-device batch.
            global_batch = self.args.train_batch_size * max(1, self.args.world_size)
            return LengthGroupedPairSampler(lengths, batch_size=global_batch, seed=seed)
        if train_dataset is None:
            return super()._get_train_sampler()
        return super()._get_train_sampler(train_dataset)

    def _pair_lengths(self, dataset: Any) -> list[int]:
        """Per-pair sizes for length grouping: the longer side, capped at ``max_length``.

        The same for every pair-batching mode, so a mode changes the speed, never the batches.
        """
        cap = self.args.max_length or 2**62
        return [min(n, cap) for n in pair_lengths(dataset)]

    def _get_eval_sampler(self, eval_dataset: Any):
        if self.args.train_sampling_strategy == "group_by_length" and has_length(eval_dataset):
            # transformers' length grouping looks for an `input_ids` column that pairs do not have.
            if self.args.world_size <= 1:
                return torch.utils.data.SequentialSampler(eval_dataset)
            return None
        return super()._get_eval_sampler(eval_dataset)

    # ------------------------------------------------------------ the loss

    def compute_rewards(self, model: nn.Module, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rewards_chosen, rewards_rejected)``, each ``(batch,)``, from one forward pass.

        Standard layout: chosen and rejected rows are stacked along the batch dimension (padded to
        one length) and scored at their last attended token. Prefix-shared/packed layout (a batch
        from :class:`PrefixSharedPairCollator`): one block per pair, both rewards read from the
        head's per-token scores (:func:`reward_plugin.pairs.forward.packed_rewards`).
        """
        if "packed_input_ids" in inputs:
            return packed_rewards(
                self._score_reader, model, inputs, segments=self.args.pair_attention == "segments"
            )
        if "input_ids_chosen" not in inputs and "input_ids" in inputs:
            # TRL's DataCollatorForPreference layout: chosen rows, then rejected rows, in one tensor.
            rewards = self._score_reader.rewards(
                model, input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
            )
            return rewards.chunk(2)
        missing = [key for key in PAIR_COLUMNS if key not in inputs]
        if missing:
            raise DataError(
                f"the batch has no {', '.join(missing)}; it holds {', '.join(sorted(inputs))}: use "
                "RewardDataCollatorWithPadding (the default) or a collator that returns the four pair columns"
            )
        chosen_ids, rejected_ids = inputs["input_ids_chosen"], inputs["input_ids_rejected"]
        chosen_mask, rejected_mask = inputs["attention_mask_chosen"], inputs["attention_mask_rejected"]
        length = max(chosen_ids.shape[1], rejected_ids.shape[1])

        def widen(t: torch.Tensor, value: int) -> torch.Tensor:
            return nn.functional.pad(t, (0, length - t.shape[1]), value=value) if t.shape[1] < length else t

        input_ids = torch.cat(
            [widen(chosen_ids, self._pad_token_id), widen(rejected_ids, self._pad_token_id)]
        )
        attention_mask = torch.cat([widen(chosen_mask, 0), widen(rejected_mask, 0)])
        rewards = self._score_reader.rewards(model, input_ids=input_ids, attention_mask=attention_mask)
        return rewards[: chosen_ids.shape[0]], rewards[chosen_ids.shape[0] :]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "pair_better" in inputs:  # a GroupCollator batch: one forward per group
            rewards_chosen, rewards_rejected, loss = self._group_loss(model, inputs)
        else:
            rewards_chosen, rewards_rejected = self.compute_rewards(model, inputs)
            if TIE_COLUMN in inputs:  # rows marked as ties: the Davidson loss (reward_plugin.ties)
                loss = davidson_loss(
                    rewards_chosen,
                    rewards_rejected,
                    inputs[TIE_COLUMN],
                    tie_strength=trainer_tie_strength(self),
                    margin=inputs.get(MARGIN_COLUMN),
                    center_rewards_coefficient=self.args.center_rewards_coefficient,
                )
            else:
                loss = pairwise_loss(
                    rewards_chosen,
                    rewards_rejected,
                    margin=inputs.get(MARGIN_COLUMN),
                    center_rewards_coefficient=self.args.center_rewards_coefficient,
                )
        if model.training:
            pairs = torch.stack([rewards_chosen.detach(), rewards_rejected.detach()], 1)
            if "pair_better" in inputs and self.args.world_size > 1:
                # Groups give each process its own number of pairs and gather needs equal shapes:
                # pad with rows whose third column (1 = real) is 0, and drop them after.
                pairs = torch.cat([pairs, torch.ones_like(pairs[:, :1])], dim=1)
                pairs = self.accelerator.gather(self.accelerator.pad_across_processes(pairs, dim=0))
                gathered = pairs[pairs[:, 2] == 1, :2]
            else:
                gathered = self.accelerator.gather(pairs)
            self._train_rewards.append(gathered.float())  # moved to the CPU once per log, not per step
        if return_outputs:
            return loss, {"rewards_chosen": rewards_chosen, "rewards_rejected": rewards_rejected}
        return loss

    def _group_loss(
        self, model: nn.Module, inputs: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(rewards of the better, of the worse response of each pair, loss)`` of a group batch."""
        rewards = group_rewards(
            self._score_reader, model, inputs, segments=self.args.pair_attention == "segments"
        )
        better, worse = inputs["pair_better"], inputs["pair_worse"]
        loss = group_loss(
            rewards,
            better,
            worse,
            kind=self.args.group_loss,
            margin=inputs["pair_margin"],
            scores=inputs["response_scores"],
            groups=inputs["response_group"],
            center_rewards_coefficient=self.args.center_rewards_coefficient,
        )
        return rewards[better], rewards[worse], loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        if "pair_better" in inputs:  # one row per group, unpacked after the loop (group_eval.py)
            with torch.no_grad(), self.compute_loss_context_manager():
                rewards = group_rewards(
                    self._score_reader, model, inputs, segments=self.args.pair_attention == "segments"
                )
            return None, group_rows(inputs, rewards, self.args.group_loss), None
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        loss = loss.detach()
        if prediction_loss_only:
            return loss, None, None
        rewards = torch.stack([outputs["rewards_chosen"], outputs["rewards_rejected"]], dim=1).float()
        margin = inputs.get(MARGIN_COLUMN, inputs.get("pair_margin"))
        labels = (
            margin.float() if margin is not None else torch.zeros(rewards.shape[0], device=rewards.device)
        )
        return loss, rewards, labels

    # ------------------------------------------------------- logging, eval

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._train_rewards:
            rewards = torch.cat(self._train_rewards).cpu()
            logs.update(reward_metrics(rewards[:, 0], rewards[:, 1]))
            self._train_rewards.clear()
        super().log(logs, start_time)

    def _prepare_eval_arg(self, dataset: Any, name: str) -> Any:
        if dataset is None or isinstance(dataset, str):
            return dataset
        if isinstance(dataset, dict):
            return {key: self._prepare(ds, key) for key, ds in dataset.items()}
        return self._prepare(dataset, name)

    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"
    ):
        own = self._is_own_eval_set(eval_dataset)
        self._capture_eval_rewards, self._captured_rewards = own, None
        try:
            metrics = super().evaluate(
                self._prepare_eval_arg(eval_dataset, "eval"), ignore_keys, metric_key_prefix
            )
        finally:
            self._capture_eval_rewards = False
        if own:
            self._final_eval = _Evaluation(dict(metrics), self._captured_rewards, _model_state(self))
        return metrics

    def _is_own_eval_set(self, eval_dataset: Any) -> bool:
        """Whether ``evaluate(eval_dataset)`` scores the eval set the reward statistics come from.

        That is ``self.eval_dataset``, or its first entry when it is a dict (``Trainer.evaluate``
        then calls itself once per key, with the key as ``eval_dataset``).
        """
        own = self.eval_dataset
        if isinstance(own, dict):
            return isinstance(eval_dataset, str) and bool(own) and eval_dataset == next(iter(own))
        return eval_dataset is None and own is not None

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        loop = functools.partial(
            super().evaluation_loop,
            dataloader,
            description,
            prediction_loss_only,
            ignore_keys,
            metric_key_prefix,
        )
        # Grouped: one row per group, unpacked into pairs after the gather (reward_plugin/group_eval.py).
        output = (
            grouped_evaluation(self, loop, metric_key_prefix, prediction_loss_only)
            if self._grouped
            else loop()
        )
        if self._capture_eval_rewards and output.predictions is not None:
            self._captured_rewards = np.asarray(output.predictions)
        return output

    def final_evaluation(self) -> dict[str, float]:
        """The metrics of the eval set for the model as it is now, evaluating only if needed.

        When the last evaluation of the eval set (the one ``eval_strategy`` ran at the end of
        training, or the one the reward statistics needed) saw the current weights, its metrics
        are returned without another forward pass.
        """
        if self._final_eval is None or self._final_eval.model_state != _model_state(self):
            return self.evaluate()
        return dict(self._final_eval.metrics)

    def predict(
        self, test_dataset: Any, ignore_keys: list[str] | None = None, metric_key_prefix: str = "test"
    ):
        """Per-pair rewards: ``predictions`` of shape ``(n, 2)`` (chosen, rejected), plus metrics."""
        return super().predict(self._prepare(test_dataset, "test"), ignore_keys, metric_key_prefix)

    # ----------------------------------------------------- after training

    def train(self, *args: Any, **kwargs: Any):
        output = super().train(*args, **kwargs)
        if self.args.save_reward_stats:
            self.compute_reward_stats()
        if self.args.save_final_model:
            self.save_model()  # writes reward_stats.json and README.md too (see _save)
        elif self.args.should_save:
            if self.reward_stats is not None:
                write_reward_stats(self.reward_stats, self.args.output_dir)
            self.create_model_card()
        return output

    def compute_reward_stats(self) -> dict[str, Any]:
        """Mean/std of the current model's rewards, stored in the model config.

        On the eval set (its first entry when a dict), reusing the rewards of the last
        evaluation when it saw the current weights and evaluating once otherwise (the metrics are
        logged like any evaluation); without one, on up to :data:`TRAIN_STATS_PAIRS` train pairs.
        """
        split, dataset = "eval", self.eval_dataset
        if isinstance(dataset, dict):
            split, dataset = next(iter(dataset.items()))
        predictions = None
        if dataset is not None:
            self.final_evaluation()
            predictions = self._final_eval.rewards if self._final_eval is not None else None
        else:
            split, dataset = "train", self.train_dataset
            if dataset is None:
                raise DataError(
                    "no dataset to compute reward statistics on: pass `train_dataset` or `eval_dataset`"
                )
            if has_length(dataset) and len(dataset) > TRAIN_STATS_PAIRS and hasattr(dataset, "shuffle"):
                dataset = dataset.shuffle(seed=self.args.seed).select(range(TRAIN_STATS_PAIRS))
            logger.info(
                "reward statistics: scoring %s train pairs (no eval set; pass one to skip this pass)",
                len(dataset) if has_length(dataset) else "the",
            )
        if predictions is None:
            predictions = self._score_for_stats(dataset)
        stats = reward_statistics(predictions[:, 0], predictions[:, 1], split=split)
        config = unwrap_model(self.model).config
        config.reward_mean = stats["mean"]
        config.reward_std = stats["std"]
        self.reward_stats = stats
        return stats

    def _score_for_stats(self, dataset: Any) -> np.ndarray:
        # Through the eval loop so the numbers are gathered across processes; not logged as a "test" run.
        compute_metrics, self.compute_metrics = self.compute_metrics, None
        try:
            return np.asarray(Trainer.predict(self, dataset, metric_key_prefix="reward_stats").predictions)
        finally:
            self.compute_metrics = compute_metrics

    def create_model_card(self, model_name: str | None = None, **kwargs: Any) -> None:
        """Write the model card ``README.md`` into ``args.output_dir``."""
        self._write_card(self.args.output_dir, model_name)

    def _write_card(self, output_dir: str, model_name: str | None = None) -> None:
        base = unwrap_model(self.model)
        base_name = getattr(base.config, "_name_or_path", None) or None
        metrics = {}
        for entry in self.state.log_history:
            metrics.update(
                {k: v for k, v in entry.items() if k.startswith("eval_") and isinstance(v, (int, float))}
            )
        write_model_card(
            output_dir,
            model_name=model_name or Path(output_dir).resolve().name,
            base_model=base_name,
            args=self.args,
            metrics=metrics or None,
            reward_stats=self.reward_stats,
            peft=self._peft_config is not None or hasattr(self.model, "peft_config"),
            uses_margin=self._uses_margin,
            versions=library_versions(),
        )

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if self.args.should_save:
            if self.reward_stats is not None:
                write_reward_stats(self.reward_stats, output_dir)
            self._write_card(output_dir)
