"""hh-rlhf on the real shared rows: split on the last assistant marker and exact round trip."""

from __future__ import annotations

from conftest import read_hh_rows

from dataset_formats import RecordError, get_format
from dataset_formats.adapters.hh_rlhf import parse_transcript
from dataset_formats.rendering import load_chat_template, render_pair

MARKER = "\n\nAssistant:"


def test_real_rows_round_trip_exactly_and_only_empty_responses_are_rejected():
    adapter = get_format("hh-rlhf")
    options = adapter.make_options({})
    reasons = []
    for row in read_hh_rows(800):
        try:
            (pair,) = adapter.to_pairs(row, options)
        except RecordError as err:
            reasons.append(err.reason)
            # independent check: the rejected rows really have a blank final response
            assert any(
                not row[k][row[k].rfind(MARKER) + len(MARKER) :].strip() for k in ("chosen", "rejected")
            )
            continue
        text = render_pair(pair, None)
        assert (text.chosen, text.rejected) == (row["chosen"], row["rejected"])
        # the prompt is everything up to and including the last assistant marker
        assert text.prompt == row["chosen"][: row["chosen"].rfind(MARKER) + len(MARKER)]
        assert pair.prompt[-1]["role"] == "user"
    assert set(reasons) <= {"empty_response"}
    assert len(reasons) <= 5


def test_multi_turn_history_re_renders_with_a_chat_template():
    row = {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Name a color.\n\nAssistant: Blue.",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Name a color.\n\nAssistant: I won't.",
    }
    adapter = get_format("hh-rlhf")
    (pair,) = adapter.to_pairs(row, adapter.make_options({}))
    text = render_pair(pair, load_chat_template("chatml"))
    assert text.prompt == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n"
        "<|im_start|>user\nName a color.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert text.chosen == text.prompt + "Blue.<|im_end|>\n"
    assert text.rejected == text.prompt + "I won't.<|im_end|>\n"


def test_text_before_the_first_turn_becomes_a_system_message():
    parsed = parse_transcript("Be kind.\n\nHuman: Hi\n\nAssistant: Hello", "chosen")
    assert parsed.prompt == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]
    assert parsed.response == "Hello"


def test_response_may_mention_the_marker_words_inline():
    parsed = parse_transcript(
        "\n\nHuman: Quote it.\n\nAssistant: He said 'Assistant: no' and left.", "chosen"
    )
    assert parsed.response == "He said 'Assistant: no' and left."
