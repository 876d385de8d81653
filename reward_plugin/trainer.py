"""`RewardTrainer`: pairwise reward-model training on top of `transformers.Trainer`.

This module holds only the Trainer hooks. What they use lives where its name says: in
``reward_plugin.training`` the batch plan (``plan``), the arguments, data preparation
(``dataset_preparation``) and the reward statistics (``statistics``); model and tokenizer loading in
``reward_plugin.model.loading``; the files next to the weights in ``reward_plugin.artifacts.saved_model``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel, Trainer, TrainerCallback
from transformers.trainer_utils import EvalPrediction

from dataset_formats.schema import TIE_COLUMN

from .artifacts.saved_model import write_artifacts, write_model_card_of
from .config import RewardConfig
from .errors import ConfigError
from .group_eval import group_prediction_step, grouped_evaluation
from .metrics import compute_reward_metrics
from .model.loading import load_model_and_tokenizer, prepare_model
from .modeling import ensure_pad_token
from .sampler import pair_eval_sampler, pair_sampler
from .scoring import ScoreReader, unwrap_model
from .serving.export import plain_scoring_save, write_scoring_settings
from .ties import learn_tie_strength, tie_fraction, trainer_tie_strength
from .training.arguments import given_tokenizer, reward_args
from .training.dataset_preparation import prepare_datasets, prepare_eval_sets, prepare_for_trainer
from .training.plan import PLAN_COLUMNS, BatchPlan, pair_predictions
from .training.statistics import (
    RECENT_PAIRS,
    Evaluation,
    RecentRewards,
    compute_reward_stats,
    is_own_eval_set,
    model_state,
    record_training_rewards,
)

logger = logging.getLogger(__name__)

#: Pairs behind the reward statistics without an eval set (see reward_plugin/training/statistics.py).
TRAIN_STATS_PAIRS = RECENT_PAIRS


class RewardTrainer(Trainer):
    """Trains a sequence-classification model (one output) on preference pairs.

    The loss is ``-logsigmoid(r_chosen - r_rejected - margin)`` averaged over pairs, plus
    ``center_rewards_coefficient * mean((r_chosen + r_rejected)^2)`` when set; a reward is the
    head's score at the last attended token of a sequence. Train and eval logs carry
    ``accuracy`` (ties count as wrong), ``margin`` (mean ``r_chosen - r_rejected``) and
    ``rewards/{chosen,rejected}_{mean,std}``. ``predict`` returns per-pair rewards, shape
    ``(n, 2)`` (chosen, rejected); its ``label_ids`` are the data's margins (zeros without).

    After ``train()`` the reward mean/std (the eval set's final evaluation, else the last 512 pairs
    the training forwards scored) go to ``model.config.reward_mean``/``reward_std``, and the final
    model is saved to ``output_dir`` with its tokenizer, ``reward_stats.json`` and a model card
    ``README.md`` (``save_final_model``); ``save_model(dir)`` writes the same set anywhere.

    Args:
        model: a ``PreTrainedModel`` with ``num_labels=1`` (normally from
            ``AutoModelForSequenceClassification``), or a name/path loaded that way.
        args: a :class:`RewardConfig` (default: one with ``output_dir="<model>-reward"``).
        data_collator: default :class:`RewardDataCollatorWithPadding` (the batch plan's, :class:`~reward_plugin.training.plan.BatchPlan`).
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
        tokenizer = given_tokenizer(model, model_init, processing_class, tokenizer)
        self.args = reward_args(model, args, max_length)
        self._peft_config = peft_config
        model, tokenizer = load_model_and_tokenizer(model, tokenizer, self.args)
        self.processing_class = tokenizer
        self._pad_token_id = 0  # a model_init model gets its pad token when Trainer builds it
        if model is not None:
            model = self._prepare_model(model)
        elif self.processing_class is not None:
            self._pad_token_id = ensure_pad_token(None, self.processing_class)
        train_dataset, eval_dataset, self._uses_margin, grouped = prepare_datasets(
            self, train_dataset, eval_dataset
        )
        # The plan needs the model; a `model_init` model only exists once Trainer.__init__ built it.
        self.plan = BatchPlan.build(self.args, model, tokenizer, self._pad_token_id, grouped=grouped)
        super().__init__(
            model=model,
            args=self.args,
            data_collator=data_collator if data_collator is not None else self.plan.collator(),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            model_init=model_init,
            compute_metrics=compute_metrics if compute_metrics is not None else compute_reward_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        )
        if model is None:
            self.plan = BatchPlan.build(self.args, self.model, tokenizer, self._pad_token_id, grouped=grouped)
            if data_collator is None:
                self.data_collator = self.plan.collator()
        logger.info("%s", self.plan.describe())
        # The loss never goes through the model, so the model's loss kwargs must not change GA scaling.
        self.model_accepts_loss_kwargs = False
        self.can_return_loss = True
        self.label_names = []
        self._train_rewards = RecentRewards(TRAIN_STATS_PAIRS)  # train metrics; stats without an eval set
        self.reward_stats: dict[str, Any] | None = None
        self._final_eval: Evaluation | None = None  # the last evaluation of the own eval set
        self._capture_eval_rewards = False

    @property
    def pair_batching(self) -> str:
        """The layout of the batch plan: ``standard``, ``prefix_shared`` or ``packed``."""
        return self.plan.layout

    # ----------------------------------------------------------------- set-up

    def _prepare_model(self, model: nn.Module) -> nn.Module:
        """Pad token, PEFT, dropout and the score reader, for the given or a ``model_init`` model."""
        model, self._pad_token_id = prepare_model(
            model,
            self.processing_class,
            peft_config=self._peft_config,
            gradient_checkpointing=bool(self.args.gradient_checkpointing),
            dropout=not self.args.disable_dropout,
        )
        self._score_reader = ScoreReader(model)
        return model

    def call_model_init(self, trial: Any = None) -> nn.Module:
        return self._prepare_model(super().call_model_init(trial))

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            self._signature_columns = list(PLAN_COLUMNS)

    def _get_train_sampler(self, train_dataset: Any = None):
        sampler = pair_sampler(self.args, train_dataset if train_dataset is not None else self.train_dataset)
        if sampler is not None:
            return sampler
        return super()._get_train_sampler(*([] if train_dataset is None else [train_dataset]))

    def _get_eval_sampler(self, eval_dataset: Any):
        default = functools.partial(super()._get_eval_sampler, eval_dataset)
        return pair_eval_sampler(self.args, eval_dataset, default)

    # ------------------------------------------------------------ the loss

    def compute_rewards(self, model: nn.Module, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rewards_chosen, rewards_rejected)``, each ``(batch,)``, from one forward (see :class:`BatchPlan`)."""
        return self.plan.pair_rewards(self._score_reader, model, inputs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Rows marked as ties (a `tie` column) take the Davidson loss, its nu fixed once (reward_plugin/ties.py).
        tie_strength = trainer_tie_strength(self) if TIE_COLUMN in inputs else None
        rewards_chosen, rewards_rejected, loss = self.plan.rewards_and_loss(
            self._score_reader, model, inputs, self.args, tie_strength=tie_strength
        )
        if model.training:
            record_training_rewards(self, inputs, rewards_chosen, rewards_rejected)
            if tie_strength is not None and self.args.learn_tie_strength:
                learn_tie_strength(self, inputs, rewards_chosen, rewards_rejected)
        if return_outputs:
            return loss, {"rewards_chosen": rewards_chosen, "rewards_rejected": rewards_rejected}
        return loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        if "pair_better" in inputs:  # one row per group, unpacked after the loop (group_eval.py)
            return group_prediction_step(self, model, inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        loss = loss.detach()
        if prediction_loss_only:
            return loss, None, None
        rewards, labels = pair_predictions(inputs, outputs["rewards_chosen"], outputs["rewards_rejected"])
        return loss, rewards, labels

    # ------------------------------------------------------- logging, eval

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs.update(self._train_rewards.log_metrics())
            if self.args.learn_tie_strength and getattr(self, "_tie_strength", None) is not None:
                logs["tie_strength"] = self._tie_strength
        super().log(logs, start_time)

    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"
    ):
        own = is_own_eval_set(self, eval_dataset)
        eval_dataset = prepare_eval_sets(self, eval_dataset)
        self._capture_eval_rewards, self._captured_rewards = own, None
        try:
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        finally:
            self._capture_eval_rewards = False
        if own:
            self._final_eval = Evaluation(dict(metrics), self._captured_rewards, model_state(self))
        return metrics

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        arguments = (dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        loop = functools.partial(super().evaluation_loop, *arguments)
        # Grouped: one row per group, unpacked into pairs after the gather (reward_plugin/group_eval.py).
        if self.plan.grouped:
            output = grouped_evaluation(self, loop, metric_key_prefix, prediction_loss_only)
        else:
            output = loop()
        if self._capture_eval_rewards and output.predictions is not None:
            self._captured_rewards = np.asarray(output.predictions)
        return output

    def final_evaluation(self) -> dict[str, float]:
        """The metrics of the eval set for the model as it is now: those of its last evaluation (at the
        end of training, or for the reward statistics) when it saw the current weights, else a new one."""
        if self._final_eval is None or self._final_eval.model_state != model_state(self):
            return self.evaluate()
        return dict(self._final_eval.metrics)

    def predict(
        self, test_dataset: Any, ignore_keys: list[str] | None = None, metric_key_prefix: str = "test"
    ):
        """Per-pair rewards: ``predictions`` of shape ``(n, 2)`` (chosen, rejected), plus metrics."""
        test_dataset = prepare_for_trainer(self, test_dataset, "test")
        return super().predict(test_dataset, ignore_keys, metric_key_prefix)

    # ----------------------------------------------------- after training

    def train(self, *args: Any, **kwargs: Any):
        if self.args.learn_tie_strength and tie_fraction(self.train_dataset) is None:
            raise ConfigError(
                "`learn_tie_strength` needs a train table with a `tie` column (`convert --ties tie`, or "
                "`ties: tie` in train_data)"
            )
        output = super().train(*args, **kwargs)
        if getattr(self, "_tie_strength", None) is not None:  # the nu trained with, set or learned
            unwrap_model(self.model).config.tie_strength = self._tie_strength
        if self.args.save_reward_stats:
            self.compute_reward_stats()
        if self.args.save_final_model:
            self.save_model()  # writes reward_stats.json and README.md too (see _save)
        else:
            write_artifacts(self, self.args.output_dir)
        return output

    def compute_reward_stats(self) -> dict[str, Any]:
        """Mean/std of the model's rewards, stored in the model config and ``self.reward_stats``: from the
        eval set's final evaluation, else the last :data:`TRAIN_STATS_PAIRS` pairs the training forwards
        scored (see :func:`reward_plugin.training.statistics.compute_reward_stats`)."""
        stats = compute_reward_stats(self, TRAIN_STATS_PAIRS)
        config = unwrap_model(self.model).config
        config.reward_mean, config.reward_std = stats["mean"], stats["std"]
        self.reward_stats = stats
        return stats

    def create_model_card(self, model_name: str | None = None, **kwargs: Any) -> None:
        """Write the model card ``README.md`` into ``args.output_dir``."""
        write_model_card_of(self, self.args.output_dir, model_name)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        # Saved with a pad token plain pooling reads correctly, and the scoring settings (serving/export.py).
        with plain_scoring_save(self.model, self.processing_class, self.args) as scoring:
            super()._save(output_dir, state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if self.args.should_save:
            write_scoring_settings(scoring, output_dir)
        write_artifacts(self, output_dir)
