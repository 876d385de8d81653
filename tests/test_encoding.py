"""Tokenization and the length policy, checked against direct tokenizer calls on the pieces."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataset_formats.encoding import (
    EncodedPair,
    LengthPolicy,
    PairEncoder,
    build_record_batch,
    load_tokenizer,
)
from dataset_formats.errors import OptionError
from dataset_formats.schema import PAIR_COLUMNS

PROMPT = "\n\nHuman: What is the capital of France and why is it famous?\n\nAssistant:"
CHOSEN = " Paris, known for art and food."
REJECTED = " I will not tell you."


@pytest.fixture(scope="module")
def minilm(minilm_path):
    return load_tokenizer(minilm_path)


def _pieces(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def _encode(tok, policy, prompt=PROMPT, chosen=CHOSEN, rejected=REJECTED) -> EncodedPair:
    (pair,) = PairEncoder(tok, policy).encode([prompt], [prompt + chosen], [prompt + rejected])
    return pair


def test_without_a_limit_ids_are_the_tokenizers_own(minilm):
    pair = _encode(minilm, LengthPolicy())
    assert pair.ok and not pair.truncated
    assert pair.ids_chosen == minilm(PROMPT + CHOSEN)["input_ids"]
    assert pair.ids_rejected == minilm(PROMPT + REJECTED)["input_ids"]


def test_left_truncation_cuts_the_oldest_prompt_tokens_of_both_and_keeps_responses(minilm):
    cls, sep = minilm.cls_token_id, minilm.sep_token_id
    p, c, r = _pieces(minilm, PROMPT), _pieces(minilm, CHOSEN), _pieces(minilm, REJECTED)
    L = 2 + len(p) + max(len(c), len(r)) - 5
    pair = _encode(minilm, LengthPolicy(L, "left"))
    cut = 2 + len(p) + max(len(c), len(r)) - L
    assert pair.ids_chosen == [cls] + p[cut:] + c + [sep]
    assert pair.ids_rejected == [cls] + p[cut:] + r + [sep]  # the same context for both
    assert max(len(pair.ids_chosen), len(pair.ids_rejected)) == L
    assert pair.prompt_cut and not pair.response_cut


def test_left_truncation_cuts_a_response_that_alone_is_too_long(minilm):
    cls, sep = minilm.cls_token_id, minilm.sep_token_id
    c, r = _pieces(minilm, CHOSEN), _pieces(minilm, REJECTED)
    L = 4
    pair = _encode(minilm, LengthPolicy(L, "left"))
    assert pair.ids_chosen == [cls] + c[: L - 2] + [sep]
    assert pair.ids_rejected == [cls] + r[: L - 2] + [sep]
    assert pair.prompt_cut and pair.response_cut


def test_right_truncation_keeps_the_first_tokens_and_the_trailing_special(minilm):
    sep = minilm.sep_token_id
    L = 22
    pair = _encode(minilm, LengthPolicy(L, "right"))
    full = minilm(PROMPT + CHOSEN)["input_ids"]
    assert len(full) > L
    assert pair.ids_chosen == full[: L - 1] + [sep]
    assert pair.response_cut


def test_right_truncation_that_removes_both_responses_rejects_the_pair(minilm):
    pair = _encode(minilm, LengthPolicy(8, "right"))
    assert not pair.ok and pair.reason == "identical_after_truncation" and pair.field == "rejected"


def test_drop_rejects_a_long_pair_with_a_reason(minilm):
    n = len(minilm(PROMPT + CHOSEN)["input_ids"])
    pair = _encode(minilm, LengthPolicy(10, "drop"))
    assert (pair.ok, pair.reason, pair.field) == (False, "too_long", "chosen")
    assert pair.message == (
        f"chosen is {n} tokens, longer than max_length=10 with truncation='drop'; "
        "raise --max-length or use --truncation left"
    )
    assert _encode(minilm, LengthPolicy(200, "drop")).ok


def test_texts_that_tokenize_the_same_are_rejected(minilm):
    pair = _encode(minilm, LengthPolicy(), chosen=" Yes.", rejected=" YES.")  # MiniLM lowercases
    assert pair.reason == "identical_tokens"


def test_implicit_prompt_uses_the_common_token_prefix(minilm):
    cls, sep = minilm.cls_token_id, minilm.sep_token_id
    p, c, r = _pieces(minilm, PROMPT), _pieces(minilm, CHOSEN), _pieces(minilm, REJECTED)
    L = 2 + len(p) + max(len(c), len(r)) - 3
    pair = _encode(
        minilm, LengthPolicy(L, "left"), prompt="", chosen=PROMPT + CHOSEN, rejected=PROMPT + REJECTED
    )
    assert pair.ids_chosen == [cls] + p[3:] + c + [sep]
    assert pair.ids_rejected == [cls] + p[3:] + r + [sep]


def test_byte_level_bpe_boundary_and_truncation(bpe_tokenizer):
    tok = load_tokenizer(bpe_tokenizer)
    p, c = _pieces(tok, PROMPT), _pieces(tok, CHOSEN)
    assert tok(PROMPT + CHOSEN)["input_ids"] == p + c  # no special tokens, boundary on a pre-token edge
    L = len(p) + len(c) - 4
    pair = _encode(tok, LengthPolicy(L, "left"))
    assert pair.ids_chosen == p[4:] + c
    assert pair.ids_rejected[-len(_pieces(tok, REJECTED)) :] == _pieces(tok, REJECTED)


def test_bos_written_by_a_template_is_not_doubled(tmp_path, bpe_tokenizer):
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    # A copy: the session's tokenizer (saved with the tiny models of other tests) keeps its processor.
    backend = Tokenizer.from_str(bpe_tokenizer.backend_tokenizer.to_str())
    backend.post_processor = TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", backend.token_to_id("<s>"))]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    encoder = PairEncoder(tok, LengthPolicy(12, "left"))
    assert (encoder.n_lead, encoder.n_trail) == (1, 0)
    prompt = "<s>" + PROMPT
    (pair,) = encoder.encode([prompt], [prompt + CHOSEN], [prompt + REJECTED])
    bos = tok.bos_token_id
    assert pair.ids_chosen[0] == bos and pair.ids_chosen[1] != bos
    assert pair.ids_chosen[1:] == _pieces(tok, PROMPT + CHOSEN)[-11:]
    assert pair.ids_chosen[-len(_pieces(tok, CHOSEN)) :] == _pieces(tok, CHOSEN)


def test_max_length_that_leaves_no_room_is_an_option_error(minilm):
    with pytest.raises(OptionError) as info:
        PairEncoder(minilm, LengthPolicy(2))
    assert str(info.value) == (
        "`max_length`=2 leaves no room for text: this tokenizer adds 2 special token(s) to every sequence; "
        "use --max-length 3 or more"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"truncation": "middle"}, "`truncation` must be one of left, right, drop, got 'middle'"),
        ({"max_length": 0}, "`max_length` must be a positive integer, got 0"),
        ({"max_length": "12"}, "`max_length` must be a positive integer or None, got '12'"),
    ],
)
def test_length_policy_validation(kwargs, message):
    with pytest.raises(OptionError) as info:
        LengthPolicy(**kwargs)
    assert str(info.value) == message


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(OptionError, match=r"^tokenizer '.*nowhere' could not be loaded \(.*\); pass a local"):
        load_tokenizer(str(tmp_path / "nowhere"))
    from transformers import ByT5Tokenizer  # a pure-Python ("slow") tokenizer that needs no files

    with pytest.raises(OptionError, match="is not a fast tokenizer; conversion needs character offsets"):
        load_tokenizer(ByT5Tokenizer())
    slow = ByT5Tokenizer()
    assert load_tokenizer(slow, require_fast=False) is slow


def test_the_model_tokenizer_loads_through_the_one_loader(tmp_path, bpe_tokenizer_path):
    """No tokenizer files: None (tokenized data trains without one); a tokenizer that is there
    but broken: the loader's clear error, not a silent None; a good one: the same ids."""
    from reward_plugin.modeling import model_tokenizer

    assert model_tokenizer(None) is None and model_tokenizer("") is None
    (tmp_path / "weights-only").mkdir()
    (tmp_path / "weights-only" / "config.json").write_text("{}")
    assert model_tokenizer(str(tmp_path / "weights-only")) is None
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer.json").write_text("{not json")
    with pytest.raises(OptionError, match=rf"^tokenizer {str(broken)!r} could not be loaded \("):
        model_tokenizer(str(broken))
    loaded = model_tokenizer(bpe_tokenizer_path)
    assert (
        loaded("Hello there")["input_ids"] == load_tokenizer(bpe_tokenizer_path)("Hello there")["input_ids"]
    )


def test_record_batch_schema_masks_and_margin(minilm):
    pairs = PairEncoder(minilm).encode(["", ""], ["a b", "c"], ["a d e", "f"])
    batch = build_record_batch(pairs, [4, 9], [0.5, None])
    assert batch.schema.names == [*PAIR_COLUMNS, "margin", "source_row"]
    data = batch.to_pydict()
    for side in ("chosen", "rejected"):
        assert data[f"input_ids_{side}"] == [getattr(p, f"ids_{side}") for p in pairs]
        assert data[f"attention_mask_{side}"] == [[1] * len(x) for x in data[f"input_ids_{side}"]]
    assert data["margin"] == [0.5, 0.0] and data["source_row"] == [4, 9]
    assert "margin" not in build_record_batch(pairs, [4, 9], None).schema.names


WORDS = st.lists(
    st.sampled_from(["the", "cat", "sat", "on", "mat", "why", "dog", "ran", "far", "away"]),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=WORDS, chosen=WORDS, rejected=WORDS, L=st.integers(3, 60))
def test_left_policy_invariants(minilm, prompt, chosen, rejected, L):
    """Length never exceeds L; [CLS]/[SEP] kept; a response that fits is kept whole, at the end."""
    p = "Human: " + " ".join(prompt) + " Assistant:"
    c, r = " " + " ".join(chosen), " " + " ".join(rejected) + " no"
    pair = _encode(minilm, LengthPolicy(L, "left"), prompt=p, chosen=c, rejected=r)
    if not pair.ok:
        assert pair.reason == "identical_after_truncation"
        return
    for ids, response in ((pair.ids_chosen, c), (pair.ids_rejected, r)):
        resp = _pieces(minilm, response)
        assert len(ids) <= L
        assert ids[0] == minilm.cls_token_id and ids[-1] == minilm.sep_token_id
        if len(resp) + 2 <= L:
            assert ids[-1 - len(resp) : -1] == resp
        else:
            assert ids[1:-1] == resp[: L - 2] and pair.response_cut
