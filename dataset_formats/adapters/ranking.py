"""The ``ranking`` adapter: K ranked or scored completions of one prompt → preference pairs."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..adapter import FormatAdapter
from ..errors import RecordError
from ..hookspecs import hookimpl
from ..records import Message, PreferencePair
from . import _fields
from .hh_rlhf import ASSISTANT, HUMAN, parse_transcript

STRATEGIES = ("all-pairs", "best-vs-rest", "best-vs-worst", "best-vs-random-lower")
_PROMPT_FIELDS = ("prompt", "instruction", "question")
_LIST_FIELDS = ("completions", "answers", "responses")
_TEXT_KEYS = ("response", "answer", "text", "content")
_SCORE_KEYS = ("overall_score", "fine-grained_score", "score", "rating")
_RANK_KEYS = ("rank",)


@dataclass
class RankingOptions:
    """Options of the ``ranking`` adapter ("" means: find it from the usual names).

    Attributes:
        strategy: which pairs a row yields: ``all-pairs`` (every better/worse pair),
            ``best-vs-rest`` (the best against each lower one), ``best-vs-worst`` (one pair), or
            ``best-vs-random-lower`` (the best against one lower completion drawn at random).
        seed: seed of ``best-vs-random-lower``; the draw depends only on the seed and the row's
            content, so it is the same in any row order and with any number of processes.
        prompt_field: the prompt column (``prompt``, ``instruction``, ``question``).
        completions_field: the list column (``completions``, ``answers``, ``responses``).
        text_key: the completion's text key (``response``, ``answer``, ``text``, ``content``).
        score_key: a score key, higher is better (``overall_score``, ``fine-grained_score``,
            ``score``, ``rating``).
        rank_key: a rank key, 1 is best (``rank``); used when no score key is found.
    """

    strategy: Literal["all-pairs", "best-vs-rest", "best-vs-worst", "best-vs-random-lower"] = "all-pairs"
    seed: int = 0
    prompt_field: str = ""
    completions_field: str = ""
    text_key: str = ""
    score_key: str = ""
    rank_key: str = ""


def _pick(keys: tuple[str, ...], available: Any, explicit: str) -> str | None:
    if explicit:
        return explicit
    return next((k for k in keys if k in available), None)


def read_prompt(text: str) -> list[Message]:
    """A prompt as messages: an hh-style transcript (Nectar) is split into turns, else one user turn."""
    body = text.rstrip()
    if body.lstrip().startswith("Human:") or HUMAN in body:
        if not body.endswith("Assistant:"):
            body += ASSISTANT
        return parse_transcript(body, "prompt").prompt
    return [{"role": "user", "content": text}]


class RankingAdapter(FormatAdapter):
    """K-wise rows: UltraFeedback ``completions`` with scores, or Nectar ``answers`` with ranks.

    Ties are never turned into pairs: each row's count of tied pairs left out is
    ``pairs[0].meta["ties_dropped"]`` (only the first pair of a row carries the counts, so
    summing over all pairs gives the total). Completions without a score or with empty text are
    left out and counted in ``meta["unscored_dropped"]`` and ``meta["empty_dropped"]``.
    """

    name = "ranking"
    description = (
        "K ranked/scored completions (UltraFeedback completions, Nectar answers) -> pairs by strategy"
    )
    Options = RankingOptions
    required_fields = ()

    def to_pairs(self, row: Mapping[str, Any], options: RankingOptions) -> list[PreferencePair]:
        prompt_field = _pick(_PROMPT_FIELDS, row, options.prompt_field) or "prompt"
        list_field = _pick(_LIST_FIELDS, row, options.completions_field) or "completions"
        prompt_text = _fields.text(row, prompt_field)
        items = _fields.require(row, list_field)
        if not isinstance(items, list):
            raise RecordError(
                f"expected a list of completions, got {type(items).__name__}",
                field=list_field,
                reason="wrong_type",
                value=items,
            )
        scored, counts = self._scored(items, list_field, options)
        if len(scored) < 2:
            raise RecordError(
                f"needs at least 2 usable completions, found {len(scored)}",
                field=list_field,
                reason="too_few_completions",
                value=len(scored),
            )
        if len({s for _, s in scored}) == 1:
            raise RecordError(
                f"all {len(scored)} completions tie (score {scored[0][1]:g}); no preference to learn",
                field=list_field,
                reason="all_tied",
                value=scored[0][1],
            )
        prompt = read_prompt(prompt_text)
        pairs, ties = self._select(scored, options, prompt_text)
        counts["ties_dropped"] = ties
        identical = [p for p in pairs if scored[p[0]][0].strip() == scored[p[1]][0].strip()]
        counts["identical_dropped"] = len(identical)
        pairs = [p for p in pairs if scored[p[0]][0].strip() != scored[p[1]][0].strip()]
        if not pairs:
            raise RecordError(
                "every candidate pair has two identical texts",
                field=list_field,
                reason="identical_pair",
                value=None,
            )
        out = [
            PreferencePair(prompt, scored[c][0], scored[r][0], scores=(scored[c][1], scored[r][1]))
            for c, r in pairs
        ]
        out[0].meta.update(counts)
        return out

    def detect(self, columns: list[str], sample: list[dict[str, Any]]) -> bool:
        field = next((f for f in _LIST_FIELDS if f in columns), None)
        if field is None or not sample:
            return False
        for row in sample:
            items = row.get(field)
            if not isinstance(items, list) or not items or not isinstance(items[0], Mapping):
                return False
            first = items[0]
            if not any(k in first for k in _TEXT_KEYS) or not any(
                k in first for k in _SCORE_KEYS + _RANK_KEYS
            ):
                return False
        return True

    def _scored(
        self, items: list, field: str, options: RankingOptions
    ) -> tuple[list[tuple[str, float]], dict]:
        scored: list[tuple[str, float]] = []
        counts = {"unscored_dropped": 0, "empty_dropped": 0}
        for i, item in enumerate(items):
            where = f"{field}[{i}]"
            if not isinstance(item, Mapping):
                raise RecordError(
                    f"expected a completion object, got {_fields._short(item)}",
                    field=where,
                    reason="wrong_type",
                    value=item,
                )
            text_key = _pick(_TEXT_KEYS, item, options.text_key)
            if text_key is None:
                raise RecordError(
                    f"completion has no text key ({', '.join(_TEXT_KEYS)}); set --option text_key=...",
                    field=where,
                    reason="missing_field",
                    value=dict(item),
                )
            text = _fields.text(item, text_key) or ""
            score_key = _pick(_SCORE_KEYS, item, options.score_key)
            rank_key = None if score_key else _pick(_RANK_KEYS, item, options.rank_key)
            key = score_key or rank_key
            if key is None:
                raise RecordError(
                    f"completion has no score or rank ({', '.join(_SCORE_KEYS + _RANK_KEYS)}); "
                    "set --option score_key=... or rank_key=...",
                    field=where,
                    reason="missing_field",
                    value=dict(item),
                )
            raw = item.get(key)
            if raw is None or (isinstance(raw, str) and raw.strip().upper() in ("", "N/A", "NA", "NAN")):
                counts["unscored_dropped"] += 1
                continue
            value = _fields.as_number(raw, f"{where}.{key}")
            if not text.strip():
                counts["empty_dropped"] += 1
                continue
            scored.append((text, -value if key == rank_key else value))
        return scored, counts

    def _select(
        self, scored: list[tuple[str, float]], options: RankingOptions, prompt: str
    ) -> tuple[list[tuple[int, int]], int]:
        """``(better index, worse index)`` pairs into ``scored`` by the strategy, and the ties left out."""
        order = sorted(range(len(scored)), key=lambda i: -scored[i][1])  # stable: ties keep input order
        best = order[0]
        best_s = scored[best][1]
        tied_with_best = sum(1 for i in order[1:] if scored[i][1] == best_s)
        lower = [i for i in order if scored[i][1] < best_s]
        if options.strategy == "all-pairs":
            pairs, ties = [], 0
            for a, i in enumerate(order):
                for j in order[a + 1 :]:
                    if scored[i][1] == scored[j][1]:
                        ties += 1
                    else:
                        pairs.append((i, j))
            return pairs, ties
        if options.strategy == "best-vs-rest":
            return [(best, j) for j in lower], tied_with_best
        if options.strategy == "best-vs-worst":
            worst_s = scored[order[-1]][1]
            worst = next(i for i in order if scored[i][1] == worst_s)  # first of the worst, in input order
            return [(best, worst)], 0
        rng = random.Random(_row_seed(options.seed, prompt, scored))
        return [(best, rng.choice(lower))], tied_with_best


def _row_seed(seed: int, prompt: str, scored: list[tuple[str, float]]) -> int:
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode())
    for text, score in scored:
        digest.update(f"\x00{text}\x01{score!r}".encode())
    return int.from_bytes(digest.digest()[:8], "big")


@hookimpl(trylast=True)
def register_formats(register):
    register(RankingAdapter())
