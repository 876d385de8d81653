"""Write ``reward_stats.json`` and the model card ``README.md`` of a trainer's model into a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..metrics import write_reward_stats
from ..modelcard import library_versions, write_model_card
from ..scoring import unwrap_model


def write_model_card_of(trainer: Any, output_dir: str, model_name: str | None = None) -> None:
    """The model card of ``trainer``'s model: base model, arguments, final eval metrics, statistics."""
    base = unwrap_model(trainer.model)
    metrics = {}
    for entry in trainer.state.log_history:
        metrics.update(
            {k: v for k, v in entry.items() if k.startswith("eval_") and isinstance(v, (int, float))}
        )
    write_model_card(
        output_dir,
        model_name=model_name or Path(output_dir).resolve().name,
        base_model=getattr(base.config, "_name_or_path", None) or None,
        args=trainer.args,
        metrics=metrics or None,
        reward_stats=trainer.reward_stats,
        peft=trainer._peft_config is not None or hasattr(trainer.model, "peft_config"),
        uses_margin=trainer._uses_margin,
        tie_strength=getattr(trainer, "_tie_strength", None),
        versions=library_versions(),
    )


def write_artifacts(trainer: Any, output_dir: str) -> None:
    """``reward_stats.json`` (when computed) and the model card, from the main process only."""
    if not trainer.args.should_save:
        return
    if trainer.reward_stats is not None:
        write_reward_stats(trainer.reward_stats, output_dir)
    write_model_card_of(trainer, output_dir)
