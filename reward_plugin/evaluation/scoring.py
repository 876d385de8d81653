"""Score evaluation data with a saved reward model: per-pair rewards, grouped by prompt.

The model and tokenizer load as in training (``RewardTrainer``: PEFT adapters, safetensors,
``trust_remote_code`` off), and pair tables are scored through the trainer's own collator and
score reader, so the numbers equal the ``eval_*`` metrics logged by ``train``. Prompt metadata
(``id``, ``subset``, ``domain``) comes from the raw rows when the data is raw.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .groups import PromptRewards, groups_from_pairs

#: Raw-row fields copied into each prompt's metadata (and the predictions file) when present.
META_FIELDS = ("id", "subset", "domain")


@contextlib.contextmanager
def eval_trainer(
    model_dir: str | os.PathLike,
    *,
    tokenizer: str | os.PathLike | None = None,
    batch_size: int = 16,
    max_length: int | None = None,
    truncation: str = "left",
    format: str = "auto",
    chat_template: str | None = None,
) -> Iterator[Any]:
    """A ``RewardTrainer`` for prediction only (fp32, no logging), its output in a temporary folder.

    Raises:
        ConfigError: ``model_dir`` is not a folder.
    """
    from ..config import RewardConfig
    from ..trainer import RewardTrainer

    if not Path(model_dir).is_dir():
        raise ConfigError(f"--model {str(model_dir)!r} is not a folder; pass a trained model's output folder")
    processing_class = None
    if tokenizer is not None:
        from ..modeling import load_tokenizer

        processing_class = load_tokenizer(str(tokenizer), trust_remote_code=False)
        if processing_class is None:
            raise ConfigError(
                f"--tokenizer {str(tokenizer)!r}: no tokenizer there; pass a tokenizer folder or name"
            )
    with tempfile.TemporaryDirectory(prefix="reward-plugin-eval-") as tmp:
        args = RewardConfig(
            output_dir=tmp,
            per_device_eval_batch_size=batch_size,
            max_length=max_length,
            truncation=truncation,
            dataset_format=format,
            chat_template=chat_template,
            bf16=False,  # evaluation numbers should not depend on the hardware's precision
            gradient_checkpointing=False,
            report_to="none",
            disable_tqdm=True,
            save_reward_stats=False,
        )
        yield RewardTrainer(model=str(model_dir), args=args, processing_class=processing_class)


def raw_meta(data: str | os.PathLike, rows: set[int]) -> dict[int, dict[str, Any]]:
    """``{row: {"id", "subset", "domain"}}`` (the fields a row has) of raw data rows; {} for tables."""
    from dataset_formats.reading import iter_row_batches

    path = Path(data)
    if path.suffix.lower() in (".parquet", ".pq", ".arrow") or (
        path.is_dir() and (path / "state.json").exists()
    ):
        return {}
    found: dict[int, dict[str, Any]] = {}
    for batch in iter_row_batches(path):
        for number, row in batch:
            if number in rows and isinstance(row, dict):
                found[number] = {k: row[k] for k in META_FIELDS if k in row}
    return found


def response_lengths(chosen_ids: list[list[int]], rejected_ids: list[list[int]]) -> np.ndarray:
    """``(n, 2)`` token lengths of each pair's two responses: what follows their common prefix."""
    out = np.zeros((len(chosen_ids), 2), dtype=np.int64)
    for k, (c, r) in enumerate(zip(chosen_ids, rejected_ids)):
        shared = 0
        limit = min(len(c), len(r))
        while shared < limit and c[shared] == r[shared]:
            shared += 1
        out[k] = len(c) - shared, len(r) - shared
    return out


def predict_pair_groups(
    trainer: Any, dataset: Any, data: str | os.PathLike
) -> tuple[list[PromptRewards], np.ndarray | None]:
    """Score a four-column pair dataset; every pair is its own prompt group.

    Returns:
        ``(groups, data margins or None)``, one group per pair in table order with its response
        lengths and ``source_row`` (plus the raw row's ``id``/``subset``/``domain``) as metadata.
    """
    output = trainer.predict(dataset)
    rewards = np.asarray(output.predictions, dtype=np.float64)
    lengths = response_lengths(dataset["input_ids_chosen"], dataset["input_ids_rejected"])
    metas = [{} for _ in range(len(dataset))]
    if "source_row" in dataset.column_names:
        rows = [int(r) for r in dataset["source_row"]]
        found = raw_meta(data, set(rows))
        metas = [{"source_row": r, **found.get(r, {})} for r in rows]
    margins = np.asarray(dataset["margin"], dtype=np.float64) if "margin" in dataset.column_names else None
    return groups_from_pairs(rewards, lengths, metas), margins


def predict_groups(
    model_dir: str | os.PathLike,
    data: str | os.PathLike,
    *,
    format: str = "auto",
    tokenizer: str | os.PathLike | None = None,
    max_length: int | None = None,
    truncation: str = "left",
    chat_template: str | None = None,
    format_options: dict[str, Any] | None = None,
    batch_size: int = 16,
) -> tuple[list[PromptRewards], np.ndarray | None]:
    """The rewards of every prompt of ``data`` under the model in ``model_dir``.

    Args: as in :func:`~reward_plugin.evaluation.evaluate_model`.

    Returns:
        ``(groups, data margins of the pairs or None)``.
    """
    from ..stages.sources import DataSource, load_sources

    with eval_trainer(
        model_dir,
        tokenizer=tokenizer,
        batch_size=batch_size,
        max_length=max_length,
        truncation=truncation,
        format=format,
        chat_template=chat_template,
    ) as trainer:
        dataset = load_sources(
            [DataSource([str(data)], format=None, options=dict(format_options or {}))],
            tokenizer=trainer.processing_class,
            dataset_format=format,
            chat_template=chat_template,
            max_length=max_length,
            truncation=truncation,
            name="eval",
        )
        return predict_pair_groups(trainer, dataset, data)
