"""Margin-from-score adapters: ``llama2-labels``, ``score-pair``, ``shp`` and ``helpsteer2``.

Each turns a graded comparison into a pair with a ``margin`` (how much better chosen is), which
the Llama 2 loss ``-logsigmoid(r_chosen - r_rejected - margin)`` uses. Every one of them sets
``produces_margin`` and gives each pair a finite, non-negative margin.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..adapter import FormatAdapter
from ..errors import RecordError
from ..hookspecs import hookimpl
from ..records import Message, PreferencePair
from . import _fields
from .preference import empty_flags, read_preference

#: Llama 2 (Touvron et al., 2023, Table 28): margin per preference rating, two variants.
LLAMA2_MARGINS = {
    "small": {
        "significantly better": 1.0,
        "better": 2 / 3,
        "slightly better": 1 / 3,
        "negligibly better": 0.0,
    },
    "large": {"significantly better": 3.0, "better": 2.0, "slightly better": 1.0, "negligibly better": 0.0},
}
_LABEL_ALIASES = {
    "unsure": "negligibly better",
    "negligibly better or unsure": "negligibly better",
    "negligibly better/unsure": "negligibly better",
    "negligibly better / unsure": "negligibly better",
}


def llama2_margin(label: Any, table: str, field: str = "label") -> float:
    """The margin of a Llama 2 rating (``"significantly better"`` ... ``"negligibly better / unsure"``)."""
    if not isinstance(label, str):
        raise RecordError(
            f"expected a rating string, got {type(label).__name__} {label!r}",
            field=field,
            reason="wrong_type",
            value=label,
        )
    key = re.sub(r"[\s_-]+", " ", label.strip().lower())
    key = _LABEL_ALIASES.get(key, key)
    margins = LLAMA2_MARGINS[table]
    if key not in margins:
        valid = ", ".join(repr(k) for k in [*margins, "unsure"])
        raise RecordError(
            f"unknown Llama 2 rating {label!r}; use one of {valid}",
            field=field,
            reason="unknown_label",
            value=label,
        )
    return margins[key]


@dataclass
class Llama2Options:
    """Options of ``llama2-labels``.

    Attributes:
        label_field: the column with the rating of chosen over rejected.
        table: ``small`` (1, 2/3, 1/3, 0) or ``large`` (3, 2, 1, 0), the two margin tables of the
            Llama 2 paper; the small one helps more on the easy, clearly separated pairs.
        scale: multiplies the table value.
        allow_empty_response: keep pairs with an empty response.
    """

    label_field: str = "label"
    table: Literal["small", "large"] = "small"
    scale: float = 1.0
    allow_empty_response: bool = False


class Llama2LabelsAdapter(FormatAdapter):
    """Preference rows (any ``preference`` layout) plus a Llama 2 rating → margin from a table."""

    name = "llama2-labels"
    description = "preference rows with a Llama 2 rating (significantly better ... unsure) -> margin table"
    Options = Llama2Options
    required_fields = ("chosen", "rejected", "label")
    produces_margin = True

    def to_pairs(self, row: Mapping[str, Any], options: Llama2Options) -> list[PreferencePair]:
        prompt, chosen, rejected = read_preference(row, allow_empty=options.allow_empty_response)
        label = _fields.require(row, options.label_field)
        margin = options.scale * llama2_margin(label, options.table, options.label_field)
        return [PreferencePair(prompt, chosen, rejected, margin=margin)]

    def detect(self, columns: list[str], sample: list[dict[str, Any]]) -> bool:
        return super().detect(columns, sample) and all(isinstance(r.get("label"), str) for r in sample)


@dataclass
class ScorePairOptions:
    """Options of ``score-pair``.

    Attributes:
        scale: margin = scale * (score_chosen - score_rejected); use 1/(max-min score) to map a
            rating scale onto [0, 1].
        order: when score_chosen < score_rejected, ``reject`` the row (reason ``score_order``)
            or ``swap`` the responses so the higher score is chosen.
        chosen_score_field, rejected_score_field: the columns with the scores; a dotted path
            reaches into an object (``metadata.score_chosen``).
        allow_empty_response: keep pairs with an empty response (one with a lower score is kept
            anyway, counted under the flag ``empty_response``).

    Equal scores make a tie (margin 0), which the conversion's ``ties`` policy handles.
    """

    scale: float = 1.0
    order: Literal["reject", "swap"] = "reject"
    chosen_score_field: str = "score_chosen"
    rejected_score_field: str = "score_rejected"
    allow_empty_response: bool = False


class ScorePairAdapter(FormatAdapter):
    """Rows with ``score_chosen``/``score_rejected`` (ultrafeedback_binarized) → margin = scaled difference."""

    name = "score-pair"
    description = (
        "preference rows with score_chosen/score_rejected (ultrafeedback_binarized) -> margin = difference"
    )
    Options = ScorePairOptions
    required_fields = ("chosen", "rejected", "score_chosen", "score_rejected")
    produces_margin = True

    def to_pairs(self, row: Mapping[str, Any], options: ScorePairOptions) -> list[PreferencePair]:
        cf, rf = options.chosen_score_field, options.rejected_score_field
        sc = _fields.number_at(row, cf)
        sr = _fields.number_at(row, rf)
        # The scores rank an empty response too (kept with the flag ``empty_response``).
        prompt, chosen, rejected = read_preference(row, allow_empty=options.allow_empty_response or sc != sr)
        flags = [] if options.allow_empty_response else empty_flags(chosen, rejected)
        if sc == sr:
            return [PreferencePair(prompt, chosen, rejected, margin=0.0, tie="equal_scores")]
        if sc < sr:
            if options.order == "reject":
                raise RecordError(
                    f"{cf} {sc:g} is below {rf} {sr:g}; pass --option order=swap to trust the scores",
                    field=cf,
                    reason="score_order",
                    value=sc,
                )
            chosen, rejected, sc, sr = rejected, chosen, sr, sc
        pair = PreferencePair(prompt, chosen, rejected, margin=options.scale * (sc - sr))
        if flags:
            pair.meta["flags"] = flags
        return [pair]


@dataclass
class SHPOptions:
    """Options of ``shp``.

    Attributes:
        margin: ``log_ratio``: scale * ln(preferred score / other score), scores below 1 counted
            as 1 (the SHP authors use the score ratio as the strength of a preference);
            ``difference``: scale * (preferred score - other score).
        scale: multiplies the margin.
        min_score_ratio: reject rows whose score ratio is below this (reason ``low_score_ratio``);
            the SHP authors recommend 2 for training.
        allow_empty_response: keep pairs with an empty response.
    """

    margin: Literal["log_ratio", "difference"] = "log_ratio"
    scale: float = 1.0
    min_score_ratio: float = 1.0
    allow_empty_response: bool = False


class SHPAdapter(FormatAdapter):
    """Stanford Human Preferences rows: ``history``, ``human_ref_A/B``, ``score_A/B``, ``labels`` (1: A preferred)."""

    name = "shp"
    description = (
        "Stanford SHP rows: history, human_ref_A/B, score_A/B, labels -> margin from the score ratio"
    )
    Options = SHPOptions
    required_fields = ("history", "human_ref_A", "human_ref_B", "score_A", "score_B", "labels")
    produces_margin = True

    def to_pairs(self, row: Mapping[str, Any], options: SHPOptions) -> list[PreferencePair]:
        history = _fields.text(row, "history")
        ref_a, ref_b = _fields.text(row, "human_ref_A"), _fields.text(row, "human_ref_B")
        score_a, score_b = _fields.number(row, "score_A"), _fields.number(row, "score_B")
        label = _fields.require(row, "labels")
        if label not in (0, 1) or isinstance(label, float) and not label.is_integer():
            raise RecordError(
                f"labels must be 1 (A preferred) or 0 (B preferred), got {label!r}",
                field="labels",
                reason="wrong_type",
                value=label,
            )
        tie = score_a == score_b
        if not tie and (score_a > score_b) != (label == 1):
            raise RecordError(
                f"labels={label!r} disagrees with score_A={score_a:g}, score_B={score_b:g}",
                field="labels",
                reason="label_mismatch",
                value=label,
            )
        (win, win_s), (lose, lose_s) = (
            ((ref_a, score_a), (ref_b, score_b)) if label == 1 else ((ref_b, score_b), (ref_a, score_a))
        )
        fields = ("human_ref_A", "human_ref_B") if label == 1 else ("human_ref_B", "human_ref_A")
        _fields.check_responses(win, lose, allow_empty=options.allow_empty_response, fields=fields)
        prompt: list[Message] = [{"role": "user", "content": history}]
        if tie:
            return [PreferencePair(prompt, win, lose, margin=0.0, tie="equal_scores")]
        ratio = max(win_s, 1.0) / max(lose_s, 1.0)
        if ratio < options.min_score_ratio:
            raise RecordError(
                f"score ratio {ratio:.3g} is below min_score_ratio={options.min_score_ratio:g}",
                field="score_B" if label == 1 else "score_A",
                reason="low_score_ratio",
                value=ratio,
            )
        margin = math.log(ratio) if options.margin == "log_ratio" else win_s - lose_s
        return [PreferencePair(prompt, win, lose, margin=options.scale * margin)]


@dataclass
class HelpSteer2Options:
    """Options of ``helpsteer2``.

    Attributes:
        strength_field: the column with the strength in -3..3 (``overall_preference`` in HelpSteer3).
        prompt_field: the column with the prompt (text, or messages as HelpSteer3's ``context``).
        scale: margin = scale * |strength| (1: the margin is 1, 2 or 3).
        min_strength: reject rows with |strength| below this (reason ``weak_preference``);
            strength 0 ("about the same") is a tie, which the conversion's ``ties`` policy handles.
        allow_empty_response: keep pairs with an empty response.
    """

    strength_field: str = "preference_strength"
    prompt_field: str = "prompt"
    scale: float = 1.0
    min_strength: int = 1
    allow_empty_response: bool = False


_EXTRA_ID = "<extra_id_1>"


def split_helpsteer_prompt(prompt: str) -> list[Message]:
    """A HelpSteer2 prompt as messages; multi-turn prompts join turns with ``<extra_id_1>User``/``Assistant``."""
    parts = prompt.split(_EXTRA_ID)
    messages: list[Message] = [{"role": "user", "content": parts[0]}]
    for part in parts[1:]:
        head, _, body = part.partition("\n")
        role = {"User": "user", "Assistant": "assistant"}.get(head.strip())
        if role is None:  # not the multi-turn layout: keep the prompt whole
            return [{"role": "user", "content": prompt}]
        messages.append({"role": role, "content": body})
    return messages


class HelpSteer2Adapter(FormatAdapter):
    """HelpSteer2-preference rows: ``prompt``, ``response_1``, ``response_2``, ``preference_strength`` (-3..3).

    A negative strength means response 1 is better, positive means response 2; the size
    (1 slightly, 2 better, 3 much better) becomes the margin.
    """

    name = "helpsteer2"
    description = (
        "HelpSteer2 preference rows: prompt, response_1/2, preference_strength -3..3 -> margin = |strength|"
    )
    Options = HelpSteer2Options
    required_fields = ("prompt", "response_1", "response_2", "preference_strength")
    produces_margin = True

    def to_pairs(self, row: Mapping[str, Any], options: HelpSteer2Options) -> list[PreferencePair]:
        raw_prompt = _fields.require(row, options.prompt_field)
        if isinstance(raw_prompt, list):
            prompt = _fields.messages(raw_prompt, options.prompt_field)
        else:
            prompt = split_helpsteer_prompt(_fields.text(row, options.prompt_field))
        r1, r2 = _fields.text(row, "response_1"), _fields.text(row, "response_2")
        strength = _fields.number(row, options.strength_field)
        if not strength.is_integer() or not -3 <= strength <= 3:
            raise RecordError(
                f"preference strength must be an integer from -3 to 3, got {strength:g}; use -3..-1 when "
                "response_1 is better and 1..3 when response_2 is",
                field=options.strength_field,
                reason="out_of_range",
                value=strength,
            )
        if strength == 0:  # "about the same": a tie, in the source's order
            _fields.check_responses(
                r1, r2, allow_empty=options.allow_empty_response, fields=("response_1", "response_2")
            )
            return [PreferencePair(prompt, r1, r2, margin=0.0, tie="strength_zero")]
        if abs(strength) < options.min_strength:
            raise RecordError(
                f"|preference strength| {abs(strength):g} is below min_strength={options.min_strength}",
                field=options.strength_field,
                reason="weak_preference",
                value=strength,
            )
        chosen, rejected = (r1, r2) if strength < 0 else (r2, r1)
        fields = ("response_1", "response_2") if strength < 0 else ("response_2", "response_1")
        _fields.check_responses(chosen, rejected, allow_empty=options.allow_empty_response, fields=fields)
        return [PreferencePair(prompt, chosen, rejected, margin=options.scale * abs(strength))]


@hookimpl(trylast=True)
def register_formats(register):
    register(Llama2LabelsAdapter())
    register(ScorePairAdapter())
    register(SHPAdapter())
    register(HelpSteer2Adapter())
