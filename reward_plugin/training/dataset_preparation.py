"""The datasets a trainer is given: tokenized, their columns checked, and the batch plan switched to
groups when a grouped set arrives after the trainer was built."""

from __future__ import annotations

from typing import Any

from dataset_formats.groups import is_group_table
from dataset_formats.schema import MARGIN_COLUMN

from ..data import column_names, prepare_dataset
from .arguments import all_datasets, dataset_options
from .plan import PAIR_COLLATORS


def prepare_for_trainer(trainer: Any, dataset: Any, name: str) -> Any:
    """``dataset`` through :func:`~reward_plugin.data.prepare_dataset` with ``trainer``'s arguments.

    A grouped set given once the plan exists (``evaluate``/``predict``) turns the plan into a
    group plan, and a collator of pairs into its group collator (which takes pair rows too, as
    groups of two); a collator the user gave is kept.
    """
    options = dataset_options(trainer.args)
    prepared = prepare_dataset(dataset, tokenizer=trainer.processing_class, name=name, **options)
    plan = getattr(trainer, "plan", None)
    if plan is not None and not plan.grouped and is_group_table(column_names(prepared)):
        trainer.plan = plan.for_groups()
        if type(trainer.data_collator) in PAIR_COLLATORS:
            trainer.data_collator = trainer.plan.collator()
    return prepared


def prepare_eval_sets(trainer: Any, eval_dataset: Any) -> Any:
    """An eval set, or each set of a dict of them (keyed by name), through :func:`prepare_for_trainer`;
    a name (a key of the trainer's dict eval set, as ``Trainer.evaluate`` passes it) and None unchanged."""
    if isinstance(eval_dataset, dict):
        return {key: prepare_for_trainer(trainer, ds, key) for key, ds in eval_dataset.items()}
    if eval_dataset is None or isinstance(eval_dataset, str):
        return eval_dataset
    return prepare_for_trainer(trainer, eval_dataset, "eval")


def prepare_datasets(trainer: Any, train_dataset: Any, eval_dataset: Any) -> tuple[Any, Any, bool, bool]:
    """``(train_dataset, eval_dataset, uses_margin, grouped)``: the given sets prepared, whether any
    of them has a margin column, and whether any is a group table."""
    if train_dataset is not None:
        train_dataset = prepare_for_trainer(trainer, train_dataset, "train")
    if isinstance(eval_dataset, str):
        eval_dataset = prepare_for_trainer(trainer, eval_dataset, "eval")
    else:
        eval_dataset = prepare_eval_sets(trainer, eval_dataset)
    columns = [column_names(ds) for ds in all_datasets(train_dataset, eval_dataset)]
    uses_margin = any(MARGIN_COLUMN in names for names in columns)
    return train_dataset, eval_dataset, uses_margin, any(is_group_table(names) for names in columns)
