"""Which checkpoint a resumed run continues from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """The ``checkpoint-N`` folder of ``output_dir`` with the highest N that was saved completely.

    The Trainer writes ``trainer_state.json`` last, so a run killed while saving leaves a folder
    without it; resuming from that folder would fail on a half-written file, so it is skipped.
    """
    if not output_dir.is_dir():
        return None
    complete = [
        p
        for p in output_dir.iterdir()
        if p.is_dir()
        and p.name.startswith("checkpoint-")
        and p.name.removeprefix("checkpoint-").isdigit()
        and (p / "trainer_state.json").is_file()
    ]
    if not complete:
        return None
    return str(max(complete, key=lambda p: int(p.name.removeprefix("checkpoint-"))))


def resolve_checkpoint(args: Any, resume: bool | str | None) -> str | None:
    """The checkpoint folder ``trainer.train`` should resume from, or None to start afresh.

    Args:
        args: the trainer's ``TrainingArguments`` (``output_dir``, ``resume_from_checkpoint``).
        resume: ``True`` (the last ``checkpoint-N`` of ``output_dir``), a folder, or None/False.

    Raises:
        ConfigError: there is no checkpoint where ``resume`` points.
    """
    if resume is None or resume is False:
        resume = getattr(args, "resume_from_checkpoint", None) or None
    if resume is None:
        return None
    if resume is True:
        output_dir = Path(args.output_dir)
        last = last_complete_checkpoint(output_dir)
        if last is None:
            raise ConfigError(
                f"--resume: no checkpoint-N folder in {str(output_dir)!r}; train once with saving on "
                "(save_strategy steps/epoch) or point --resume at a checkpoint folder"
            )
        return last
    if not Path(resume).is_dir():
        raise ConfigError(f"--resume: checkpoint {str(resume)!r} is not a folder; pass a checkpoint-N folder")
    return str(resume)
