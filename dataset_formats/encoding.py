"""Batched rendering, tokenization and the length policy: rendered pairs -> paired Arrow batches.

Chosen and rejected are tokenized as whole texts (prompt + response) in one batched call of the
fast tokenizer, with the special tokens the tokenizer adds (``[CLS] … [SEP]``, ``<s> …``). The
token boundary between prompt and response comes from the character offsets of the tokens:
prompt tokens are those that end at or before the last prompt character. The length policy uses
that boundary so that cutting the prompt is always tried before cutting a response:

* ``left`` (default): drop the oldest prompt tokens (the same number from chosen and rejected,
  so both keep the same context), keeping the leading special tokens; when a response alone is
  longer than ``max_length`` it is cut from the right (the trailing special tokens are kept) and
  the pair is counted as response-truncated.
* ``right``: keep the first ``max_length`` tokens (trailing special tokens are kept).
* ``drop``: reject a pair whose chosen or rejected sequence is too long, with reason ``too_long``.

A pair whose chosen and rejected token ids come out identical carries no preference and is
rejected with reason ``identical_tokens`` (``identical_after_truncation`` when the length policy
cut away the part that differed); one side left with no tokens at all (an empty response whose
prompt was cut to fit the other side) is ``empty_after_truncation``. Nothing is dropped without a
reason.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from .errors import OptionError, RecordError, TemplateError, UnsafeTemplateError
from .prefix import common_prefix_length
from .schema import PAIR_COLUMNS, pair_schema

TRUNCATION_CHOICES = ("left", "right", "drop")
_LONG_WARNING = "sequence-length-is-longer-than-the-specified-maximum"


@dataclass(frozen=True)
class LengthPolicy:
    """``max_length`` (None: no limit) and how to enforce it (``left``, ``right`` or ``drop``)."""

    max_length: int | None = None
    truncation: str = "left"

    def __post_init__(self) -> None:
        if self.truncation not in TRUNCATION_CHOICES:
            raise OptionError(
                f"`truncation` must be one of {', '.join(TRUNCATION_CHOICES)}, got {self.truncation!r}"
            )
        if self.max_length is not None and (
            isinstance(self.max_length, bool) or not isinstance(self.max_length, int)
        ):
            raise OptionError(f"`max_length` must be a positive integer or None, got {self.max_length!r}")
        if self.max_length is not None and self.max_length < 1:
            raise OptionError(f"`max_length` must be a positive integer, got {self.max_length!r}")


@dataclass
class EncodedPair:
    """The token ids of one pair after the length policy, or why it was rejected."""

    ids_chosen: list[int] | None
    ids_rejected: list[int] | None
    prompt_cut: bool = False
    response_cut: bool = False
    reason: str | None = None
    field: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def truncated(self) -> bool:
        return self.prompt_cut or self.response_cut


def load_tokenizer(spec: Any, *, trust_remote_code: bool = False, require_fast: bool = True) -> Any:
    """A tokenizer from a folder, a (cached) hub name or a ``.gguf`` file, or ``spec`` itself if it is a tokenizer.

    The project's one tokenizer loader: conversion, ``inspect``, the reward stage and the
    trainer (through :func:`reward_plugin.modeling.model_tokenizer`) all load through it.

    Args:
        spec: a tokenizer folder, a cached hub name, a ``.gguf`` checkpoint (its tokenizer and chat
            template), or a tokenizer object.
        trust_remote_code: allow a tokenizer that ships custom Python code.
        require_fast: refuse a slow (Python) tokenizer; conversion needs the character offsets
            only fast (Rust) tokenizers give.

    Returns:
        The tokenizer.

    Raises:
        OptionError: the tokenizer cannot be loaded (the message says why and how to fix it), or
            ``require_fast`` and it is not a fast tokenizer.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerBase

    if isinstance(spec, PreTrainedTokenizerBase):
        tokenizer = spec
    else:
        if not isinstance(spec, str) or not spec:
            raise OptionError(f"`tokenizer` must be a path, a hub name or a tokenizer object, got {spec!r}")
        looks_like_path = spec.startswith((os.sep, ".", "~")) or spec.count("/") > 1
        if spec.lower().endswith(".gguf") and not os.path.isfile(os.path.expanduser(spec)):
            raise OptionError(f"tokenizer {spec!r}: no such .gguf file; check the path")
        if looks_like_path and not os.path.exists(os.path.expanduser(spec)):
            raise OptionError(
                f"tokenizer {spec!r} could not be loaded (no such folder); pass a local tokenizer folder "
                "(with tokenizer.json) or a hub name that is already cached"
            )
        where, gguf = (spec, {})
        if spec.lower().endswith(".gguf"):
            # A GGUF checkpoint holds its tokenizer and chat template; transformers reads them.
            path = os.path.expanduser(spec)
            where, gguf = (os.path.dirname(os.path.abspath(path)), {"gguf_file": os.path.basename(path)})
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                where, use_fast=True, trust_remote_code=trust_remote_code, **gguf
            )
        except Exception as exc:  # transformers raises OSError, ValueError, KeyError… for a bad spec
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "custom code" in str(exc) or "trust_remote_code" in str(exc):
                fix = "remote code is off by default; pass --trust-remote-code only if you trust that code"
            else:
                fix = (
                    "pass a local tokenizer folder (with tokenizer.json) or a hub name that is already cached"
                )
            raise OptionError(f"tokenizer {spec!r} could not be loaded ({first}); {fix}") from exc
    if require_fast and not getattr(tokenizer, "is_fast", False):
        raise OptionError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', spec)!r} is not a fast tokenizer; conversion needs "
            "character offsets: use a tokenizer with a tokenizer.json"
        )
    # We handle long sequences ourselves; the "longer than model_max_length" warning is noise here.
    tokenizer.deprecation_warnings[_LONG_WARNING] = True
    return tokenizer


class PairEncoder:
    """Tokenize rendered pairs in batches and apply a :class:`LengthPolicy`.

    Args:
        tokenizer: a fast tokenizer (see :func:`load_tokenizer`).
        policy: the length policy.
    """

    def __init__(self, tokenizer: Any, policy: LengthPolicy | None = None):
        self.tokenizer = tokenizer
        self.policy = policy or LengthPolicy()
        self.n_lead, self.n_trail = _special_layout(tokenizer)
        self.bos_id = getattr(tokenizer, "bos_token_id", None)
        L = self.policy.max_length
        if L is not None and L < self.n_lead + self.n_trail + 1:
            raise OptionError(
                f"`max_length`={L} leaves no room for text: this tokenizer adds {self.n_lead + self.n_trail} "
                f"special token(s) to every sequence; use --max-length {self.n_lead + self.n_trail + 1} or more"
            )

    def tokenize(self, texts: list[str]) -> Any:
        """One batched call of the tokenizer (ids only; masks are all ones and built in Arrow)."""
        return self.tokenizer(
            texts,
            add_special_tokens=True,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )

    def encode(
        self,
        prompts: Sequence[str],
        chosen: Sequence[str],
        rejected: Sequence[str],
        groups: Sequence[Any] | None = None,
    ) -> list[EncodedPair]:
        """Encode pairs of full texts; ``chosen[i]`` and ``rejected[i]`` start with ``prompts[i]``.

        Args:
            prompts: the shared prompt text of each pair ("" when unknown: the longest common token
                prefix is used instead).
            chosen: the full chosen texts (prompt + chosen response).
            rejected: the full rejected texts (prompt + rejected response).
            groups: a group key per pair (the source row); pairs with the same key share their
                prompt, and ``left`` truncation cuts it once for the whole group (by what its
                longest sequence needs), so every response of the group keeps the same context.

        Returns:
            One :class:`EncodedPair` per pair, in order.
        """
        n = len(prompts)
        if not n:
            return []
        batch = self.tokenize(list(chosen) + list(rejected))
        ids = batch["input_ids"]
        encodings = batch.encodings
        sides = []
        for i in range(n):
            ids_c, b_c = self._with_boundary(ids[i], encodings[i], prompts[i], chosen[i])
            ids_r, b_r = self._with_boundary(ids[n + i], encodings[n + i], prompts[i], rejected[i])
            if not prompts[i] or b_c is None or b_r is None:
                b_c = b_r = self._common_prefix_boundary(ids_c, ids_r)
            sides.append((ids_c, b_c, ids_r, b_r))
        L = self.policy.max_length
        if groups is None or L is None or self.policy.truncation != "left":
            return [self._apply_policy(*pair) for pair in sides]
        # One cut per group: the prompt ends where the earliest boundary of the group says, and
        # loses what the group's longest sequence is over the limit.
        cut: dict[Any, int] = {}
        boundary: dict[Any, int] = {}
        for key, (ids_c, b_c, ids_r, b_r) in zip(groups, sides):
            cut[key] = max(cut.get(key, 0), len(ids_c) - L, len(ids_r) - L)
            boundary[key] = min(boundary.get(key, b_c), b_c, b_r)
        return [
            self._apply_policy(ids_c, boundary[key], ids_r, boundary[key], cut=cut[key])
            for key, (ids_c, _, ids_r, _) in zip(groups, sides)
        ]

    # boundaries --------------------------------------------------------------------------------

    def _with_boundary(
        self, ids: list[int], encoding: Any, prompt: str, text: str
    ) -> tuple[list[int], int | None]:
        """``ids`` (without a doubled BOS) and the index of the first response token (None: unknown)."""
        if not prompt or not text.startswith(prompt):
            boundary = None
        else:
            boundary = _first_token_at_or_after(encoding, len(prompt), len(text), len(ids) - self.n_trail)
        nl = self.n_lead
        # A chat template that writes the BOS token itself plus a tokenizer that adds one gives <s><s>.
        if (
            nl
            and self.bos_id is not None
            and len(ids) > nl
            and ids[nl - 1] == self.bos_id
            and ids[nl] == self.bos_id
        ):
            ids = ids[:nl] + ids[nl + 1 :]
            if boundary is not None and boundary > nl:
                boundary -= 1
        if boundary is not None:
            boundary = max(boundary, nl)
        return ids, boundary

    def _common_prefix_boundary(self, a: list[int], b: list[int]) -> int:
        """Index after the longest common token prefix (:func:`~dataset_formats.prefix.common_prefix_length`)
        past the template's leading tokens, leaving each a content token before its trailing ones."""
        return common_prefix_length((a, b), start=self.n_lead, keep=self.n_trail + 1)

    # policy ------------------------------------------------------------------------------------

    def _apply_policy(
        self, ids_c: list[int], b_c: int, ids_r: list[int], b_r: int, cut: int | None = None
    ) -> EncodedPair:
        """The length policy on one pair; ``cut``: the prompt tokens its group drops (``left`` only)."""
        L = self.policy.max_length
        pair = EncodedPair(ids_c, ids_r)
        if L is not None and (len(ids_c) > L or len(ids_r) > L or (cut or 0) > 0):
            mode = self.policy.truncation
            if mode == "drop":
                longer, name = (ids_c, "chosen") if len(ids_c) > L else (ids_r, "rejected")
                return EncodedPair(
                    None,
                    None,
                    reason="too_long",
                    field=name,
                    message=(
                        f"{name} is {len(longer)} tokens, longer than max_length={L} with truncation='drop'; "
                        "raise --max-length or use --truncation left"
                    ),
                )
            if mode == "left":
                cut = max(len(ids_c), len(ids_r)) - L if cut is None else cut
                pair.ids_chosen, pc, rc = self._cut_left(ids_c, b_c, cut, L)
                pair.ids_rejected, pr, rr = self._cut_left(ids_r, b_r, cut, L)
            else:
                pair.ids_chosen, pc, rc = self._cut_right(ids_c, b_c, L)
                pair.ids_rejected, pr, rr = self._cut_right(ids_r, b_r, L)
            pair.prompt_cut, pair.response_cut = pc or pr, rc or rr
            if not pair.ids_chosen or not pair.ids_rejected:
                # An empty response next to a long one: the prompt cut for the long side left nothing.
                name = "chosen" if not pair.ids_chosen else "rejected"
                return EncodedPair(
                    None,
                    None,
                    reason="empty_after_truncation",
                    field=name,
                    message=(
                        f"{name} has no tokens left after cutting the prompt to fit max_length={L} (its response "
                        "is empty); raise --max-length"
                    ),
                )
        if pair.ids_chosen == pair.ids_rejected:
            cause = " after truncation" if pair.truncated else ""
            return EncodedPair(
                None,
                None,
                reason="identical_after_truncation" if pair.truncated else "identical_tokens",
                field="rejected",
                message=(
                    f"chosen and rejected have the same {len(pair.ids_chosen or [])} token ids{cause}, so the pair carries no "
                    "preference; check the texts or raise --max-length"
                ),
            )
        return pair

    def _cut_left(self, ids: list[int], boundary: int, cut: int, L: int) -> tuple[list[int], bool, bool]:
        nl, nt = self.n_lead, self.n_trail
        drop = min(cut, boundary - nl)
        if drop > 0:
            ids = ids[:nl] + ids[nl + drop :]
        if len(ids) <= L:
            return ids, drop > 0, False
        # The prompt is gone and a response alone is too long: cut it from the right.
        end = len(ids) - nt
        return ids[: L - nt] + ids[end:], drop > 0, True

    def _cut_right(self, ids: list[int], boundary: int, L: int) -> tuple[list[int], bool, bool]:
        if len(ids) <= L:
            return ids, False, False
        nt = self.n_trail
        keep = L - nt
        end = len(ids) - nt
        return ids[:keep] + ids[end:], keep < boundary, keep < end


def render_pairs(pairs: Sequence[Any], template: Any, tokenizer: Any) -> list[Any]:
    """Render each :class:`~dataset_formats.records.PreferencePair` to full texts.

    Args:
        pairs: the pairs of a batch.
        template: a chat template from :func:`dataset_formats.rendering.load_chat_template`, or
            None for plain-text rendering.
        tokenizer: supplies ``bos_token`` / ``eos_token`` to the template.

    Returns:
        Per pair, a ``RenderedPair`` (``prompt``, ``chosen``, ``rejected``; the last two start with
        ``prompt``) or the :class:`RecordError` that rendering raised (a template failure becomes a
        RecordError on field ``chat_template`` with reason ``template_error``).

    Raises:
        UnsafeTemplateError: the template reached for Python internals (stops the whole run).
    """
    from .rendering import render_pair

    bos, eos = getattr(tokenizer, "bos_token", None), getattr(tokenizer, "eos_token", None)
    out: list[Any] = []
    for pair in pairs:
        try:
            out.append(render_pair(pair, template, bos_token=bos, eos_token=eos))
        except RecordError as exc:
            out.append(exc)
        except UnsafeTemplateError:
            raise  # a hostile template is never one row's problem: stop the run
        except TemplateError as exc:
            error = RecordError(str(exc), field="chat_template", reason="template_error")
            error.__cause__ = exc
            out.append(error)
    return out


def _first_token_at_or_after(encoding: Any, start: int, text_len: int, fallback: int) -> int:
    """Index of the first token that covers a character at or after ``start`` (the response start)."""
    for pos in range(start, min(text_len, start + 32)):
        token = encoding.char_to_token(pos)
        if token is not None:
            return token
    if text_len <= start + 32:
        return fallback
    # A long run of characters no token covers (e.g. whitespace): search the offsets instead.
    for index, (_first, last) in enumerate(encoding.offsets):
        if last > start:
            return index
    return fallback


def _special_layout(tokenizer: Any) -> tuple[int, int]:
    """How many special tokens the tokenizer puts before and after a single sequence."""
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x", add_special_tokens=True)["input_ids"]
    for lead in range(len(full) - len(plain) + 1):
        if full[lead : lead + len(plain)] == plain:
            return lead, len(full) - len(plain) - lead
    return 0, 0


def build_record_batch(
    pairs: Sequence[EncodedPair],
    rows: Sequence[int],
    margins: Sequence[float | None] | None,
    ties: Sequence[bool] | None = None,
) -> pa.RecordBatch:
    """Arrow batch of written pairs: the four columns, ``margin`` when ``margins`` is given, ``source_row``.

    Args:
        pairs: encoded pairs that passed the policy (``ok``).
        rows: the source row number of each pair.
        margins: per-pair margins (None entries become 0.0), or None for no margin column.
        ties: per-pair tie flags, or None for no ``tie`` column.

    Returns:
        A ``pyarrow.RecordBatch`` with :func:`~dataset_formats.schema.pair_schema`.
    """
    schema = pair_schema(with_margin=margins is not None, with_tie=ties is not None)
    list_type = schema.field(PAIR_COLUMNS[0]).type
    columns = []
    for ids in ([p.ids_chosen for p in pairs], [p.ids_rejected for p in pairs]):
        id_array = pa.array(ids, type=list_type)
        ones = pa.array(_ones(len(id_array.values)), type=list_type.value_type)
        mask = pa.ListArray.from_arrays(id_array.offsets, ones, type=list_type)
        columns += [id_array, mask]
    if margins is not None:
        columns.append(pa.array([0.0 if m is None else float(m) for m in margins], type=pa.float32()))
    if ties is not None:
        columns.append(pa.array([bool(t) for t in ties], type=pa.bool_()))
    columns.append(pa.array(rows, type=pa.int64()))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _ones(n: int) -> Any:
    import numpy as np

    return np.ones(n, dtype=np.int32)
