"""One batch through the pipeline (adapter -> render -> encode) and its counters.

:class:`BatchProcessor` is what each worker process runs;
:func:`dataset_formats.workers.run_batches` feeds it batches in one process or several (results
come back in input order, so the output does not depend on the number of processes).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from .adapter import FormatAdapter
from .encoding import PairEncoder, build_record_batch, render_pairs
from .errors import DatasetFormatError, RecordError
from .groups import build_group_batch
from .reading import RowBatch
from .records import PreferencePair
from .ties import DEFAULT_TIES, TIE_REASON, add_tie_counts, empty_tie_counts

#: Reasons that come from a policy the user chose (length, ties) or from ties by construction
#: (the same response twice); they are counted, never raised.
POLICY_REASONS = (
    "too_long",
    "identical_after_truncation",
    "empty_after_truncation",
    TIE_REASON,
    "identical_pair",
)


@dataclass
class ConvertStats:
    """What a conversion read, wrote and rejected.

    ``rows_*`` count source rows: a row is written when at least one of its pairs is written, else
    rejected (``rejected_by_reason`` counts rejected rows by the reason of their first failure), so
    ``rows_read == rows_written + rows_rejected``. ``pairs_*`` count pairs (an adapter may
    make several pairs of one source row); ``groups_written`` counts the groups of a grouped output
    (``convert --groups``: one per written source row, holding its written pairs). ``rows_truncated`` counts written rows with a truncated
    pair; ``pairs_prompt_truncated`` / ``pairs_response_truncated`` say which part was cut.
    ``ties_dropped`` counts tied candidate pairs a ranking adapter skipped and
    ``candidates_dropped`` the other candidates adapters left out, by kind (the
    ``pairs[0].meta["<kind>_dropped"]`` counts of each row). ``pairs_flagged`` counts written
    pairs that an adapter kept although they look unusual, by flag (the pair's ``meta["flags"]``,
    e.g. hh-rlhf's ``empty_response`` and ``turn_marker_in_response``).
    ``ties`` counts the pairs the source marks as ties (:mod:`dataset_formats.ties`): ``detected``,
    ``by_kind``, and what the ``ties_policy`` made of them: ``skipped``, ``written_as_preferences``
    (``keep``) or ``written_as_ties`` (``tie``); identical responses are always skipped.
    """

    rows_read: int = 0
    rows_written: int = 0
    rows_rejected: int = 0
    rows_truncated: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    pairs_written: int = 0
    groups_written: int = 0
    groups_truncated: int = 0
    pairs_rejected: int = 0
    pairs_prompt_truncated: int = 0
    pairs_response_truncated: int = 0
    ties_dropped: int = 0
    candidates_dropped: dict[str, int] = field(default_factory=dict)
    pairs_flagged: dict[str, int] = field(default_factory=dict)
    ties: dict[str, Any] = field(default_factory=empty_tie_counts)
    ties_policy: str = DEFAULT_TIES
    format: str = ""
    tokenizer: str = ""
    max_length: int | None = None
    truncation: str = "left"
    margin: bool = False
    inputs: list[str] = field(default_factory=list)
    output: str | None = None
    seconds: float = 0.0

    _COUNTERS = (
        "rows_read",
        "rows_written",
        "rows_rejected",
        "rows_truncated",
        "pairs_written",
        "groups_written",
        "groups_truncated",
        "pairs_rejected",
        "pairs_prompt_truncated",
        "pairs_response_truncated",
        "ties_dropped",
    )

    def add(self, other: ConvertStats) -> None:
        """Add the counters of ``other`` (one batch) to these."""
        for name in self._COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for reason, count in other.rejected_by_reason.items():
            self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + count
        for kind, count in other.candidates_dropped.items():
            self.candidates_dropped[kind] = self.candidates_dropped.get(kind, 0) + count
        for flag, count in other.pairs_flagged.items():
            self.pairs_flagged[flag] = self.pairs_flagged.get(flag, 0) + count
        add_tie_counts(self.ties, other.ties)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``--stats-json`` writes)."""
        data = asdict(self)
        data["rejected_by_reason"] = dict(sorted(self.rejected_by_reason.items()))
        data["candidates_dropped"] = dict(sorted(self.candidates_dropped.items()))
        data["pairs_flagged"] = dict(sorted(self.pairs_flagged.items()))
        data["ties"] = {**self.ties, "by_kind": dict(sorted(self.ties.get("by_kind", {}).items()))}
        return data

    def summary(self) -> str:
        """A few human-readable lines for the CLI."""
        written = f"pairs written: {self.pairs_written}" + (" (with margin column)" if self.margin else "")
        if self.groups_written:
            written = f"groups written: {self.groups_written}, {written} (in groups)"
        if self.max_length:
            written += f", rows truncated: {self.rows_truncated}"
            if self.groups_written:
                written += f" (groups cut once each: {self.groups_truncated})"
        lines = [
            f"rows read: {self.rows_read}, written: {self.rows_written}, rejected: {self.rows_rejected}",
            written,
        ]
        if self.rejected_by_reason:
            lines.append(
                "rejected by reason: "
                + ", ".join(f"{k}: {v}" for k, v in sorted(self.rejected_by_reason.items()))
            )
        if self.ties.get("detected"):
            t = self.ties
            kinds = ", ".join(f"{k}: {v}" for k, v in sorted(t["by_kind"].items()))
            lines.append(
                f"ties: {t['detected']} ({kinds}); policy {self.ties_policy}: skipped {t['skipped']}, "
                f"written as preferences {t['written_as_preferences']}, as ties {t['written_as_ties']}"
            )
        if self.ties_dropped:
            lines.append(f"tied candidates dropped: {self.ties_dropped}")
        if self.candidates_dropped:
            dropped = ", ".join(f"{k}: {v}" for k, v in sorted(self.candidates_dropped.items()))
            lines.append(f"candidates left out: {dropped}")
        if self.pairs_flagged:
            flagged = ", ".join(f"{k}: {v}" for k, v in sorted(self.pairs_flagged.items()))
            lines.append(f"written pairs kept with a flag: {flagged}")
        lines.append(f"format: {self.format}, tokenizer: {self.tokenizer}, max_length: {self.max_length}")
        return "\n".join(lines)


@dataclass
class BatchResult:
    """The encoded pairs of one batch, its counters, its reject entries, or the error that stopped it."""

    batch: pa.RecordBatch | None
    stats: ConvertStats
    rejects: list[dict[str, Any]]
    error: dict[str, Any] | None = None


def _short(value: Any, limit: int = 200) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def reject_entry(error: RecordError, pair: int | None = None) -> dict[str, Any]:
    """The rejects-file line of one rejected row (or pair)."""
    entry: dict[str, Any] = {"file": error.path, "row": error.row}
    if error.line is not None:
        entry["line"] = error.line
    if pair is not None:
        entry["pair"] = pair
    entry.update(field=error.field, reason=error.reason, message=str(error), value=_short(error.value))
    return entry


def error_from_entry(entry: dict[str, Any]) -> RecordError:
    """Rebuild the RecordError of a reject entry (errors cross process boundaries as dicts)."""
    return RecordError(
        entry["detail"],
        field=entry["field"],
        reason=entry["reason"],
        path=entry["file"],
        row=entry["row"],
        line=entry.get("line"),
    )


def _check_margin(pair: PreferencePair) -> None:
    m = pair.margin
    if m is None:
        return
    if isinstance(m, bool) or not isinstance(m, numbers.Real) or not math.isfinite(m):
        raise RecordError(
            f"margin must be a finite number, got {m!r}; fix the value or drop the margin field",
            field="margin",
            reason="invalid_margin",
            value=m,
        )


@dataclass
class _Prepared:
    """A batch after the adapter and rendering, waiting for tokenization."""

    path: str
    stats: ConvertStats
    failures: list[tuple[int, int | None, RecordError]]
    pairs: list[PreferencePair]
    pair_index: list[int]
    counts: dict[int, int]
    rendered: list[Any]
    good: list[int]
    lines: dict[int, int]


class BatchProcessor:
    """Adapter + options + template + encoder: turns one batch of raw rows into an Arrow batch.

    Args:
        adapter: the format adapter.
        options: the adapter's options object.
        encoder: the :class:`PairEncoder` (tokenizer + length policy).
        template: a chat template from ``load_chat_template`` or None.
        raise_errors: raise the first bad row's RecordError instead of rejecting it.
        groups: write the grouped table (one row per source row, :mod:`dataset_formats.groups`)
            instead of one row per pair.
        ties: what to do with pairs the source marks as ties: ``skip``, ``keep`` or ``tie``
            (:mod:`dataset_formats.ties`).
    """

    def __init__(
        self,
        adapter: FormatAdapter,
        options: Any,
        encoder: PairEncoder,
        template: Any,
        raise_errors: bool,
        groups: bool = False,
        ties: str = DEFAULT_TIES,
    ):
        self.groups = groups
        self.ties = ties
        self.adapter = adapter
        self.options = options
        self.encoder = encoder
        self.template = template
        self.raise_errors = raise_errors

    def _adapt(self, row: dict[str, Any]) -> list[PreferencePair]:
        try:
            pairs = self.adapter.to_pairs(row, self.options)
        except RecordError:
            raise
        except DatasetFormatError as exc:
            raise RecordError(str(exc), reason="invalid") from exc
        except Exception as exc:  # an adapter bug on odd input must not crash the run
            raise RecordError(
                f"format {self.adapter.name!r} failed on this row: {type(exc).__name__}: {exc}",
                reason="adapter_error",
            ) from exc
        if not pairs:
            raise RecordError(f"format {self.adapter.name!r} made no pairs of this row", reason="no_pairs")
        return list(pairs)

    @staticmethod
    def _count_dropped(meta: dict[str, Any], stats: ConvertStats) -> None:
        for key, value in meta.items():
            if not key.endswith("_dropped") or not isinstance(value, int) or not value:
                continue
            if key == "ties_dropped":
                stats.ties_dropped += value
            else:
                kind = key[: -len("_dropped")]
                stats.candidates_dropped[kind] = stats.candidates_dropped.get(kind, 0) + value

    @staticmethod
    def _count_tie(stats: ConvertStats, kind: str, skipped: bool) -> None:
        stats.ties["detected"] += 1
        stats.ties["by_kind"][kind] = stats.ties["by_kind"].get(kind, 0) + 1
        if skipped:
            stats.ties["skipped"] += 1

    def process(self, path: str, rows: RowBatch) -> BatchResult:
        """Run one batch; with ``raise_errors`` the first bad row (by row number) raises."""
        return self.finish(self.prepare(path, rows))

    def prepare(self, path: str, rows: RowBatch) -> _Prepared:
        """The pure-Python half of a batch: adapter and rendering (failures are collected, not raised)."""
        stats = ConvertStats(rows_read=len(rows))
        failures: list[tuple[int, int | None, RecordError]] = []  # (row, pair index, error)
        pairs: list[PreferencePair] = []
        pair_index: list[int] = []
        counts: dict[int, int] = {}
        lines = rows.line_of()
        for row, record in rows:
            if isinstance(record, RecordError):
                failures.append((row, None, record.locate(path, row, lines.get(row))))
                continue
            try:
                made = self._adapt(record)
            except RecordError as exc:
                if exc.reason == "identical_pair":  # a tie by construction: counted, always dropped
                    self._count_tie(stats, "identical_responses", skipped=True)
                failures.append((row, None, exc.locate(path, row, lines.get(row))))
                continue
            self._count_dropped(made[0].meta, stats)
            counts[row] = len(made)
            for k, pair in enumerate(made):
                pair.row = row
                if pair.tie is not None:
                    self._count_tie(stats, pair.tie, skipped=self.ties == "skip")
                    if self.ties == "skip":
                        error = RecordError(
                            f"the source marks this pair as a tie ({pair.tie}); skipped under ties=skip "
                            "(pass --ties keep or --ties tie to use it)",
                            field=None,
                            reason=TIE_REASON,
                        )
                        failures.append((row, k, error.locate(path, row, lines.get(row))))
                        continue
                pairs.append(pair)
                pair_index.append(k)
        rendered = render_pairs(pairs, self.template, self.encoder.tokenizer)
        good: list[int] = []
        for i, (pair, item) in enumerate(zip(pairs, rendered)):
            where = (path, pair.row, lines.get(pair.row))
            if isinstance(item, RecordError):
                failures.append((pair.row, pair_index[i], item.locate(*where)))
                continue
            try:
                _check_margin(pair)
            except RecordError as exc:
                failures.append((pair.row, pair_index[i], exc.locate(*where)))
                continue
            good.append(i)
        return _Prepared(path, stats, failures, pairs, pair_index, counts, rendered, good, lines)

    def finish(self, prep: _Prepared) -> BatchResult:
        """Tokenize, apply the length policy and build the Arrow batch of a prepared batch."""
        path, stats, failures, pairs, pair_index = (
            prep.path,
            prep.stats,
            prep.failures,
            prep.pairs,
            prep.pair_index,
        )
        rendered = prep.rendered
        encoded = self.encoder.encode(
            [rendered[i].prompt for i in prep.good],
            [rendered[i].chosen for i in prep.good],
            [rendered[i].rejected for i in prep.good],
            # A group is cut once: its prompt shortened alike for every pair, every response kept.
            groups=[pairs[i].row for i in prep.good] if self.groups else None,
        )
        written: list[int] = []
        kept = []
        for i, enc in zip(prep.good, encoded):
            pair = pairs[i]
            if not enc.ok:
                error = RecordError(
                    enc.message, field=enc.field, reason=enc.reason or "invalid", path=path, row=pair.row
                ).locate(line=prep.lines.get(pair.row))
                failures.append((pair.row, pair_index[i], error))
                continue
            written.append(i)
            kept.append(enc)
            stats.pairs_prompt_truncated += enc.prompt_cut
            stats.pairs_response_truncated += enc.response_cut
        if self.raise_errors:
            fatal = [f for f in failures if f[2].reason not in POLICY_REASONS]
            if fatal:
                raise min(fatal, key=lambda f: (f[0], f[1] or 0))[2]
        return self._result(path, pairs, written, kept, failures, prep.counts, stats)

    def _result(self, path, pairs, written, kept, failures, counts, stats) -> BatchResult:
        rows_with_output = {pairs[i].row for i in written}
        truncated_rows = {pairs[i].row for i, enc in zip(written, kept) if enc.truncated}
        failures.sort(key=lambda f: (f[0], -1 if f[1] is None else f[1]))
        rejects = []
        first_reason: dict[int, str] = {}
        for row, k, error in failures:
            multi = counts.get(row, 1) > 1
            rejects.append(reject_entry(error, k if multi else None))
            first_reason.setdefault(row, error.reason)
            if k is not None:
                stats.pairs_rejected += 1
        for row, reason in first_reason.items():
            if row not in rows_with_output:
                stats.rows_rejected += 1
                stats.rejected_by_reason[reason] = stats.rejected_by_reason.get(reason, 0) + 1
        stats.rows_written = len(rows_with_output)
        stats.rows_truncated = len(truncated_rows)
        stats.pairs_written = len(written)
        for i in written:
            for flag in pairs[i].meta.get("flags", ()):
                stats.pairs_flagged[flag] = stats.pairs_flagged.get(flag, 0) + 1
            if pairs[i].tie is not None:
                key = "written_as_ties" if self.ties == "tie" else "written_as_preferences"
                stats.ties[key] += 1
        batch = None
        if written and self.groups:
            batch = build_group_batch(
                [(enc.ids_chosen, enc.ids_rejected) for enc in kept],
                [pairs[i].row for i in written],
                [pairs[i].margin for i in written],
                [pairs[i].scores for i in written],
            )
            stats.groups_written = batch.num_rows
            stats.groups_truncated = len(truncated_rows)
        elif written:
            margins = [pairs[i].margin for i in written]
            with_margin = self.adapter.produces_margin or any(m is not None for m in margins)
            batch = build_record_batch(
                kept,
                [pairs[i].row for i in written],
                margins if with_margin else None,
                [pairs[i].tie is not None for i in written] if self.ties == "tie" else None,
            )
        return BatchResult(batch, stats, rejects)
