"""Score evaluation data with a saved reward model: the rewards of every prompt's responses.

The model and tokenizer load through the one model loader (:mod:`reward_plugin.model.loading`:
PEFT adapters, safetensors, ``trust_remote_code`` off) in fp32, and every batch goes through the
batch plan that training settles (:class:`~reward_plugin.training.plan.BatchPlan`: its collator
and its forward), without a ``Trainer``. A four-column pair table is scored with the plan's pair
collator and pair forward, so the numbers equal the ``eval_*`` metrics logged by ``train``; every
pair is its own prompt. So is raw data that gives one pair per row (converted as training
converts it, length policy included). Other raw data is converted to the grouped table
(:mod:`dataset_formats.groups`, one row per source row, each response once, without a length
limit) and scored by the plan's group collator and forward (:mod:`reward_plugin.pairs.groups`):
each response once, cut to ``max_length``; for a causal model one block per group (the prompt
encoded once, each response attending to it and to itself: one forward per group, exact), for an
encoder one padded row per response. Prompt metadata (``id``, ``subset``, ``domain``) comes from
the raw rows.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dataset_formats.prefix import common_prefix_length

from ..errors import ConfigError
from ..scoring import ScoreReader
from .prompts import PromptRewards, groups_from_pairs

logger = logging.getLogger(__name__)

#: Raw-row fields copied into each prompt's metadata (and the predictions file) when present.
META_FIELDS = ("id", "subset", "domain")
#: Formats always scored as groups (one forward per prompt), even with one pair per row.
GROUP_FORMATS = ("rewardbench", "rewardbench2")


@dataclass
class EvalModel:
    """A saved reward model ready to predict: the loader's model (fp32, eval mode) and its batch plan.

    Attributes:
        model: the sequence-classification model, on ``device``.
        tokenizer: its tokenizer (None when the folder has none and none was given).
        plan: the batch plan (layout, collators, forward) settled for this model, as in training.
        device: where batches run.
        batch_size: pairs (pair tables) or groups per forward.
    """

    model: Any
    tokenizer: Any
    plan: Any
    device: Any
    batch_size: int = 16

    def _batches(self, rows: list[dict[str, Any]], collator: Any, order: list[int]):
        """``(positions, batch on the device)`` of ``rows`` in ``order``, ``batch_size`` at a time."""
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            batch = collator([rows[k] for k in chunk])
            yield chunk, {key: value.to(self.device) for key, value in batch.items()}

    def pair_rewards(self, dataset: Any) -> np.ndarray:
        """``(n, 2)`` rewards (chosen, rejected) of a four-column pair dataset, in table order.

        Batches of ``batch_size`` pairs in table order, collated and read as training's evaluation
        reads them (:meth:`BatchPlan.pair_rewards`).
        """
        import torch

        plan = self.plan
        rows = dataset.to_list() if hasattr(dataset, "to_list") else list(dataset)
        out = np.empty((len(rows), 2), dtype=np.float64)
        reader = ScoreReader(self.model)
        try:
            with torch.no_grad():
                for chunk, batch in self._batches(rows, plan.collator(), list(range(len(rows)))):
                    chosen, rejected = plan.pair_rewards(reader, self.model, batch)
                    out[chunk] = torch.stack([chosen, rejected], 1).float().cpu().numpy()
        finally:
            reader.remove()
        return out

    def group_rewards(self, table: Any) -> list[np.ndarray]:
        """One reward per response of every group of a grouped table (table order).

        Each response is ``prompt + response`` cut to ``max_length`` as in training; ``batch_size``
        groups per forward, the longest first.
        """
        import torch

        plan = self.plan.for_groups()
        rows = table.select(["prompt_ids", "response_ids", "pairs"]).to_pylist()
        size = [len(r["prompt_ids"]) + max(map(len, r["response_ids"])) for r in rows]
        order = sorted(range(len(rows)), key=lambda k: -size[k])
        out: list[np.ndarray] = [np.empty(0)] * len(rows)
        reader = ScoreReader(self.model)
        try:
            with torch.no_grad():
                for chunk, batch in self._batches(rows, plan.collator(), order):
                    rewards = plan.response_rewards(reader, self.model, batch).float().cpu().numpy()
                    owner = batch["response_group"].cpu().numpy()
                    for position, k in enumerate(chunk):
                        out[k] = rewards[owner == position].astype(np.float64)
        finally:
            reader.remove()
        return out


def load_eval_model(
    model_dir: str | os.PathLike,
    *,
    tokenizer: str | os.PathLike | None = None,
    batch_size: int = 16,
    max_length: int | None = None,
    truncation: str = "left",
) -> EvalModel:
    """Load a saved reward model for prediction (fp32) and settle its batch plan.

    Args:
        model_dir: a saved reward model or PEFT adapter folder, a ``.gguf`` file or a short name.
        tokenizer: a tokenizer folder or name (default: the model's).
        batch_size: pairs or groups per forward.
        max_length, truncation: how the plan's collators cut sequences, as in training.

    Raises:
        ConfigError: ``model_dir`` is not a folder, or ``tokenizer`` holds none.
    """
    from ..config import RewardConfig
    from ..model.loading import load_model, load_tokenizer_for, prepare_model
    from ..model_sources import SHORT_NAMES, is_gguf_path
    from ..training.plan import BatchPlan

    if not (Path(model_dir).is_dir() or is_gguf_path(model_dir) or str(model_dir).lower() in SHORT_NAMES):
        raise ConfigError(
            f"--model {str(model_dir)!r} is not a folder; pass a trained model's output folder (or a .gguf file)"
        )
    processing_class = None
    if tokenizer is not None:
        from ..modeling import model_tokenizer

        processing_class = model_tokenizer(str(tokenizer), trust_remote_code=False)
        if processing_class is None:
            raise ConfigError(
                f"--tokenizer {str(tokenizer)!r}: no tokenizer there; pass a tokenizer folder or name"
            )
    # The training defaults (layout, attention, seed for a new head) with this run's cutting; fp32:
    # evaluation numbers should not depend on the hardware's precision.
    args = RewardConfig(max_length=max_length, truncation=truncation, bf16=False, report_to="none")
    model = load_model(str(model_dir), args)
    if processing_class is None:
        processing_class = load_tokenizer_for(str(model_dir), trust_remote_code=args.trust_remote_code)
    model, pad_token_id = prepare_model(model, processing_class, dropout=False)
    model.to(args.device).eval()
    plan = BatchPlan.build(args, model, processing_class, pad_token_id)
    logger.info("%s", plan.describe())
    return EvalModel(model, processing_class, plan, args.device, batch_size)


def raw_meta(data: str | os.PathLike, rows: set[int]) -> dict[int, dict[str, Any]]:
    """``{row: {"id", "subset", "domain"}}`` (the fields a row has) of raw data rows; {} for tables."""
    from dataset_formats.reading import iter_row_batches

    if _table_path(data):
        return {}
    path = Path(data)
    found: dict[int, dict[str, Any]] = {}
    for batch in iter_row_batches(path):
        for number, row in batch:
            if number in rows and isinstance(row, dict):
                found[number] = {k: row[k] for k in META_FIELDS if k in row}
    return found


def response_lengths(chosen_ids: list[list[int]], rejected_ids: list[list[int]]) -> np.ndarray:
    """``(n, 2)`` token lengths of each pair's two responses: what follows their common prefix
    (:func:`~dataset_formats.prefix.common_prefix_length` uncapped: a side may have no token of its own)."""
    out = np.zeros((len(chosen_ids), 2), dtype=np.int64)
    for k, (c, r) in enumerate(zip(chosen_ids, rejected_ids)):
        shared = common_prefix_length((c, r), keep=0)
        out[k] = len(c) - shared, len(r) - shared
    return out


def predict_pair_groups(
    scorer: EvalModel, dataset: Any, data: str | os.PathLike
) -> tuple[list[PromptRewards], np.ndarray | None]:
    """Score a four-column pair dataset; every pair is its own prompt group.

    Returns:
        ``(groups, data margins or None)``, one group per pair in table order with its response
        lengths and ``source_row`` (plus the raw row's ``id``/``subset``/``domain``) as metadata.
    """
    rewards = scorer.pair_rewards(dataset)
    lengths = response_lengths(dataset["input_ids_chosen"], dataset["input_ids_rejected"])
    metas = [{} for _ in range(len(dataset))]
    if "source_row" in dataset.column_names:
        rows = [int(r) for r in dataset["source_row"]]
        found = raw_meta(data, set(rows))
        metas = [{"source_row": r, **found.get(r, {})} for r in rows]
    margins = np.asarray(dataset["margin"], dtype=np.float64) if "margin" in dataset.column_names else None
    return groups_from_pairs(rewards, lengths, metas), margins


def _table_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a converted table (rather than raw data)."""
    from dataset_formats.tables import table_kind

    kind = table_kind(path)
    return kind == "datasets" or (
        kind is not None and Path(path).is_file() and not str(path).lower().endswith(".gz")
    )


def read_table(path: str | os.PathLike) -> Any:
    """A converted table (``.parquet``, ``.arrow``, ``datasets`` folder) as ``pyarrow.Table``; None for raw data."""
    from dataset_formats import tables

    return tables.read_table(path) if _table_path(path) else None


def convert_groups(
    data: str | os.PathLike,
    *,
    tokenizer: Any,
    format: str = "auto",
    chat_template: str | None = None,
    format_options: dict[str, Any] | None = None,
) -> Any:
    """Raw preference data as a grouped ``pyarrow.Table`` (:mod:`dataset_formats.groups`).

    Converted without a length limit, so each response stays one whole sequence;
    :func:`score_groups` cuts them to ``max_length`` as training does.
    """
    from dataset_formats.conversion import convert
    from dataset_formats.tables import read_table as read_whole

    with tempfile.TemporaryDirectory(prefix="reward-plugin-eval-") as tmp:
        output = Path(tmp) / "groups.parquet"
        stats = convert(
            Path(data),
            output,
            format=format,
            tokenizer=tokenizer,
            chat_template=chat_template,
            format_options=format_options,
            groups=True,
            progress=False,
        )
        logger.info("eval data converted from %s:\n%s", data, stats.summary())
        return read_whole(output)


def groups_from_table(table: Any, rewards: list[np.ndarray], data: str | os.PathLike) -> list[PromptRewards]:
    """:class:`PromptRewards` of a grouped table, given the rewards of each group's responses."""
    columns = table.select(["response_ids", "pairs", "source_row"]).to_pydict()
    found = raw_meta(data, set(columns["source_row"]))
    groups = []
    for responses, links, row, group_rewards in zip(
        columns["response_ids"], columns["pairs"], columns["source_row"], rewards
    ):
        groups.append(
            PromptRewards(
                group_rewards,
                [(link["better"], link["worse"]) for link in links],
                [len(r) for r in responses],
                {"source_row": row, **found.get(row, {})},
            )
        )
    return groups


def group_margins(table: Any) -> np.ndarray | None:
    """The data margin of every pair of a grouped table (0 where a pair has none), or None without any."""
    margins = [link["margin"] for links in table.column("pairs").to_pylist() for link in links]
    if all(m is None for m in margins):
        return None
    return np.array([0.0 if m is None else m for m in margins], dtype=np.float64)


@dataclass(frozen=True)
class EvalSettings:
    """How evaluation reads, cuts and batches the data (``reward-plugin eval``'s flags of these names).

    Attributes: as the keyword arguments of :func:`~reward_plugin.evaluation.evaluate_model`.
    """

    format: str = "auto"
    tokenizer: str | os.PathLike | None = None
    max_length: int | None = None
    truncation: str = "left"
    chat_template: str | None = None
    format_options: dict[str, Any] | None = None
    batch_size: int = 16


def predict_groups(
    model_dir: str | os.PathLike, data: str | os.PathLike, settings: EvalSettings | None = None
) -> tuple[list[PromptRewards], np.ndarray | None]:
    """The rewards of every prompt of ``data`` under the model in ``model_dir``.

    Returns:
        ``(groups, the data margin of every pair or None)``.
    """
    from dataset_formats.groups import is_group_table

    from ..stages.sources import DataSource, load_sources

    s = settings or EvalSettings()
    table = read_table(data)
    scorer = load_eval_model(
        model_dir,
        tokenizer=s.tokenizer,
        batch_size=s.batch_size,
        max_length=s.max_length,
        truncation=s.truncation,
    )
    if table is None:  # raw data
        table = convert_groups(
            data,
            tokenizer=scorer.tokenizer,
            format=s.format,
            chat_template=s.chat_template,
            format_options=s.format_options,
        )
        one_pair_rows = all(len(links) == 1 for links in table.column("pairs").to_pylist())
        if one_pair_rows and s.format not in GROUP_FORMATS:
            table = None  # one pair per row: evaluate it as training does, with its length policy
    if table is not None and is_group_table(table.column_names):
        return groups_from_table(table, scorer.group_rewards(table), data), group_margins(table)
    dataset = load_sources(
        [DataSource([str(data)], format=None, options=dict(s.format_options or {}))],
        tokenizer=scorer.tokenizer,
        dataset_format=s.format,
        max_length=s.max_length,
        truncation=s.truncation,
        chat_template=s.chat_template,
        name="eval",
    )
    return predict_pair_groups(scorer, dataset, data)
