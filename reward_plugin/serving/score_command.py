"""``reward-plugin score``: the reward of every response of a data file, one JSON line per input row.

Any registered preference format is read through its adapter (``--format``, or detected): a row
with one pair gets ``chosen_reward``/``rejected_reward``; a row with several pairs (RM-Bench, a
ranking) is a group of distinct responses and gets each one's reward plus the best one (best-of-N).
Rows of plain prompts and completions (format ``completions``: ``prompt`` with ``completion`` or a
``completions`` list) get their rewards. A bad row is reported on stderr with its line and written
as ``{"row", "line", "error"}``, the rest is scored; the output file appears only when complete.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dataset_formats.errors import RecordError, TemplateError, UnsafeTemplateError

from ..errors import DataError

logger = logging.getLogger(__name__)

#: The format name of plain prompt/completion rows.
COMPLETIONS_FORMAT = "completions"
#: Rows scored per call of the scorer (their completions are grouped by prompt within it).
CHUNK_ROWS = 256


def _completions_row(row: dict[str, Any]) -> tuple[Any, list[Any], bool]:
    """``(prompt, completions, single)`` of a plain row."""
    if "completion" in row:
        return row.get("prompt"), [row["completion"]], True
    if "completions" in row and isinstance(row["completions"], list) and row["completions"]:
        return row.get("prompt"), list(row["completions"]), False
    raise RecordError(
        "a completions row needs 'completion' (text or messages) or a non-empty 'completions' list",
        field="completion",
        reason="missing_field",
    )


def detect(rows: list[dict[str, Any]]) -> str:
    """The format of ``rows``: a registered preference format, else ``completions``."""
    from dataset_formats.registry import detect_format

    columns = sorted({k for r in rows for k in r})
    found = detect_format(columns, rows)
    if found is not None:
        return found
    if any(c in columns for c in ("completion", "completions")):
        return COMPLETIONS_FORMAT
    raise DataError(
        f"could not detect the format from columns {columns}; pass --format (a preference format, or "
        f"{COMPLETIONS_FORMAT!r} for prompt + completion rows)"
    )


def _key(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


class _Row:
    """One input row's items to score and how to report them."""

    def __init__(self, number: int, line: int | None):
        self.number, self.line = number, line
        self.items: list[tuple[Any, Any]] = []
        #: The row's ``tools`` and ``chat_template_kwargs`` (for every item of the row).
        self.tools: list[dict[str, Any]] | None = None
        self.template_kwargs: dict[str, Any] | None = None
        self.kind = "error"
        self.error: str | None = None

    def report(self, rewards: list[float]) -> dict[str, Any]:
        out: dict[str, Any] = {"row": self.number}
        if self.line is not None:
            out["line"] = self.line
        if self.error is not None:
            out["error"] = self.error
            return out
        out["rewards"] = rewards
        if self.kind == "pair":
            out["chosen_reward"], out["rejected_reward"] = rewards
        elif self.kind == "completion":
            out["reward"] = rewards[0]
        if self.kind in ("group", "completions"):
            best = max(range(len(rewards)), key=rewards.__getitem__)
            out["best"] = best
            out["best_response"] = self.items[best][1]
        return out


def _parse(path: Path, number: int, line: int | None, row: Any, fmt: str, adapter: Any, options: Any) -> _Row:
    item = _Row(number, line)
    if isinstance(row, RecordError):
        item.error = str(row.locate(path=str(path), row=number, line=line))
        return item
    try:
        if fmt == COMPLETIONS_FORMAT:
            from dataset_formats.chat_inputs import read_chat_template_kwargs, read_tools

            prompt, completions, single = _completions_row(row)
            item.tools, item.template_kwargs = read_tools(row), read_chat_template_kwargs(row)
            item.items = [(prompt, c) for c in completions]
            item.kind = "completion" if single else "completions"
            return item
        pairs = adapter.to_pairs(row, options)
        if not pairs:
            raise RecordError("the row gives no preference pair", reason="no_pairs")
        item.tools, item.template_kwargs = pairs[0].tools, pairs[0].chat_template_kwargs
        if len(pairs) == 1:
            p = pairs[0]
            item.items, item.kind = [(p.prompt, p.chosen), (p.prompt, p.rejected)], "pair"
            return item
        seen: dict[tuple[str, str], int] = {}
        for side in ("chosen", "rejected"):
            for p in pairs:
                response = getattr(p, side)
                seen.setdefault((_key(p.prompt), _key(response)), len(item.items))
                if len(seen) > len(item.items):
                    item.items.append((p.prompt, response))
        item.kind = "group"
    except RecordError as exc:
        item.error = str(exc.locate(path=str(path), row=number, line=line))
    return item


def _rows(path: Path, fmt: str, options: dict[str, Any]) -> Iterator[_Row]:
    from dataset_formats.reading import iter_row_batches

    adapter = parsed = None
    if fmt != COMPLETIONS_FORMAT:
        import dataset_formats as df

        adapter = df.get_format(fmt)
        parsed = adapter.make_options(options)
    for batch in iter_row_batches(path):
        lines = batch.line_of()
        for number, row in batch:
            yield _parse(path, number, lines.get(number), row, fmt, adapter, parsed)


def score_file(
    scorer: Any,
    data: str | os.PathLike,
    output: str | os.PathLike,
    *,
    format: str = "auto",
    options: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Score every row of ``data`` into the JSON Lines file ``output`` (written atomically).

    Returns:
        ``{"rows", "scored", "errors", "responses"}`` counts.
    """
    from tqdm.auto import tqdm

    from dataset_formats.reading import count_rows, peek_rows

    path = Path(data)
    fmt = format if format != "auto" else detect(peek_rows(path, 20))
    out_path = Path(output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    counts = {"rows": 0, "scored": 0, "errors": 0, "responses": 0}
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed by the `with handle` below, renamed after
        "w", encoding="utf-8", dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp", delete=False
    )
    bar = tqdm(total=count_rows(path), unit="row", desc="score", disable=not progress, file=sys.stderr)
    try:
        with handle:
            chunk: list[_Row] = []

            def flush() -> None:
                good = [r for r in chunk if r.error is None]
                items = [(p, c, r.tools, r.template_kwargs) for r in good for p, c in r.items]
                columns = list(zip(*items)) if items else [[]] * 4
                rewards = (
                    scorer.score(
                        list(columns[0]),
                        list(columns[1]),
                        tools=list(columns[2]),
                        chat_template_kwargs=list(columns[3]),
                    )
                    if items
                    else []
                )
                start = 0
                for r in chunk:
                    mine = [] if r.error else rewards[start : start + len(r.items)]
                    start += len(mine)
                    if r.error:
                        counts["errors"] += 1
                        print(f"error: {r.error}", file=sys.stderr)
                    else:
                        counts["scored"] += 1
                        counts["responses"] += len(mine)
                    handle.write(json.dumps(r.report(mine), ensure_ascii=False) + "\n")
                bar.update(len(chunk))
                chunk.clear()

            for row in _rows(path, fmt, dict(options or {})):
                counts["rows"] += 1
                if row.error is None:
                    try:  # render now so that a template failure stays this row's error
                        for k, (prompt, completion) in enumerate(row.items):
                            scorer.encoder.render(
                                prompt,
                                completion,
                                k,
                                tools=row.tools,
                                chat_template_kwargs=row.template_kwargs,
                            )
                    except UnsafeTemplateError:
                        raise
                    except (RecordError, DataError, TemplateError) as exc:
                        where = f"line {row.line}" if row.line is not None else f"row {row.number} (0-based)"
                        row.error = f"{path}, {where}: {exc}"
                chunk.append(row)
                if len(chunk) >= CHUNK_ROWS:
                    flush()
            if chunk:
                flush()
        os.replace(handle.name, out_path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    return counts
