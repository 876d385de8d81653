"""hh-rlhf on the real shared rows: the split, exact round trip, flags, and the strict options."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import HH_RLHF, read_hh_rows, tiny_llama_config

from dataset_formats import RecordError, get_format
from dataset_formats.adapters.hh_rlhf import parse_transcript
from dataset_formats.conversion import encode_rows
from dataset_formats.rendering import load_chat_template, render_pair
from reward_plugin.cli import main as reward_main

MARKER = "\n\nAssistant:"
STRICT = {"split": "last_turn", "allow_empty_response": False}

# Rows of the kinds found in real hh-rlhf files, written for these tests (the real harmless-base
# train rows behind them are not in ../shared/): a final answer that goes on with a whole further
# exchange, one that goes on with a Human turn, and an empty rejected answer.
EDGE_ROWS = [
    {
        "chosen": "\n\nHuman: How do I boil an egg?\n\nAssistant: Nine minutes in boiling water."
        "\n\nHuman: Thanks!\n\nAssistant: You're welcome.",
        "rejected": "\n\nHuman: How do I boil an egg?\n\nAssistant: I don't know.",
    },
    {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Name a color.\n\nAssistant: Blue.",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Name a color.\n\nAssistant: Red."
        "\n\nHuman: Why red?",
    },
    {
        "chosen": "\n\nHuman: Say something kind.\n\nAssistant: You matter.",
        "rejected": "\n\nHuman: Say something kind.\n\nAssistant: ",
    },
]


def trl_split(chosen: str, rejected: str) -> tuple[str, str, str]:
    """TRL's hh-rlhf rule, written out independently: the common character prefix, cut back to
    its last assistant marker (kept with the prompt), and the two remainders."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    end = chosen[:n].rfind(MARKER) + len(MARKER)
    return chosen[:end], chosen[end:], rejected[end:]


def test_real_rows_round_trip_exactly_and_all_are_kept_by_default():
    adapter = get_format("hh-rlhf")
    options = adapter.make_options({})
    flagged = []
    for i, row in enumerate(read_hh_rows(800)):
        (pair,) = adapter.to_pairs(row, options)
        text = render_pair(pair, None)
        assert (text.chosen, text.rejected) == (row["chosen"], row["rejected"])
        # the prompt is everything up to and including the last assistant marker
        assert text.prompt == row["chosen"][: row["chosen"].rfind(MARKER) + len(MARKER)]
        assert pair.prompt[-1]["role"] == "user"
        if pair.meta.get("flags"):
            flagged.append((i, pair.meta["flags"]))
    # independent: the rows whose text after the last marker is blank on either side
    blank = [
        i
        for i, row in enumerate(read_hh_rows(800))
        if any(not row[k][row[k].rfind(MARKER) + len(MARKER) :].strip() for k in ("chosen", "rejected"))
    ]
    assert flagged == [(i, ["empty_response"]) for i in blank]
    assert blank == [86, 516]


def test_real_rows_under_the_strict_options_reject_only_the_empty_answers():
    adapter = get_format("hh-rlhf")
    options = adapter.make_options(STRICT)
    rejected = []
    for i, row in enumerate(read_hh_rows(600)):
        try:
            adapter.to_pairs(row, options)
        except RecordError as err:
            rejected.append((i, err.reason, err.field))
    assert rejected == [(86, "empty_response", "chosen"), (516, "empty_response", "chosen")]


@pytest.mark.parametrize("row", EDGE_ROWS)
def test_edge_rows_split_as_trl_does_and_render_back_exactly(row):
    adapter = get_format("hh-rlhf")
    (pair,) = adapter.to_pairs(row, adapter.make_options({}))
    prompt, chosen, rejected = trl_split(row["chosen"], row["rejected"])
    text = render_pair(pair, None)
    assert (text.prompt, text.chosen, text.rejected) == (prompt, row["chosen"], row["rejected"])
    # the one space after the marker belongs to the marker
    assert (" " + pair.chosen, " " + pair.rejected) == (chosen, rejected)


def test_edge_rows_are_flagged_and_the_strict_options_reject_them():
    adapter = get_format("hh-rlhf")
    flags = [adapter.to_pairs(r, adapter.make_options({}))[0].meta["flags"] for r in EDGE_ROWS]
    assert flags == [["turn_marker_in_response"], ["turn_marker_in_response"], ["empty_response"]]
    reasons = []
    for row in EDGE_ROWS:
        with pytest.raises(RecordError) as info:
            adapter.to_pairs(row, adapter.make_options(STRICT))
        reasons.append((info.value.reason, info.value.field))
    assert reasons == [
        ("prompt_mismatch", "rejected"),
        ("malformed_transcript", "rejected"),
        ("empty_response", "rejected"),
    ]


def test_convert_counts_the_flags_and_keeps_every_row(tmp_path, bpe_tokenizer):
    rows = [*EDGE_ROWS, *read_hh_rows(3)]
    table, stats = encode_rows(rows, format="hh-rlhf", tokenizer=bpe_tokenizer)
    assert (stats.rows_read, stats.rows_written, stats.rows_rejected) == (6, 6, 0)
    assert stats.pairs_flagged == {"turn_marker_in_response": 2, "empty_response": 1}
    assert stats.to_dict()["pairs_flagged"] == {"empty_response": 1, "turn_marker_in_response": 2}
    assert "written pairs kept with a flag: empty_response: 1, turn_marker_in_response: 2" in stats.summary()
    # the ids are those of the whole transcripts, as TRL tokenizes them
    assert table.column("input_ids_chosen").to_pylist()[0] == bpe_tokenizer(rows[0]["chosen"])["input_ids"]
    assert (
        table.column("input_ids_rejected").to_pylist()[2] == bpe_tokenizer(rows[2]["rejected"])["input_ids"]
    )
    _, strict = encode_rows(
        rows, format="hh-rlhf", tokenizer=bpe_tokenizer, on_error="skip", format_options=STRICT
    )
    assert (strict.rows_written, strict.rejected_by_reason) == (
        3,
        {"prompt_mismatch": 1, "malformed_transcript": 1, "empty_response": 1},
    )
    assert strict.pairs_flagged == {}


def test_the_bundled_file_converts_whole_with_default_options(tmp_path, minilm_path, capsys):
    stats_path = tmp_path / "stats.json"
    argv = ["convert", str(HH_RLHF), "--tokenizer", minilm_path, "--max-length", "256"]
    argv += ["--stats-json", str(stats_path), "-o", str(tmp_path / "pairs.parquet")]
    assert reward_main(argv) == 0
    stats = json.loads(stats_path.read_text())
    assert stats["format"] == "hh-rlhf"
    assert stats["rows_read"] == stats["rows_written"] == 800 and stats["rows_rejected"] == 0
    assert stats["pairs_flagged"] == {"empty_response": 2}
    assert "written pairs kept with a flag: empty_response: 2" in capsys.readouterr().out


def test_empty_answers_train_in_every_pair_layout(tmp_path, bpe_tokenizer):
    """A pair whose chosen side is the prompt alone is read, packed and scored like any other."""
    from transformers import AutoModelForSequenceClassification

    from reward_plugin import RewardDataCollatorWithPadding
    from reward_plugin.pairs import packed_rewards
    from reward_plugin.pairs.collators import PrefixSharedPairCollator
    from reward_plugin.scoring import ScoreReader

    rows = [EDGE_ROWS[2], {"chosen": EDGE_ROWS[2]["rejected"], "rejected": EDGE_ROWS[2]["chosen"]}]
    rows += read_hh_rows(2)
    table, _ = encode_rows(rows, format="hh-rlhf", tokenizer=bpe_tokenizer)
    pairs = table.select(
        ["input_ids_chosen", "attention_mask_chosen", "input_ids_rejected", "attention_mask_rejected"]
    )
    examples = pairs.to_pylist()
    torch.manual_seed(0)
    pad = bpe_tokenizer.pad_token_id
    config = tiny_llama_config(vocab_size=len(bpe_tokenizer), pad_token_id=pad)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    fresh = copy.deepcopy(model)
    batch = RewardDataCollatorWithPadding(pad_token_id=pad)(examples)
    ids = torch.cat([batch["input_ids_chosen"], batch["input_ids_rejected"]])
    mask = torch.cat([batch["attention_mask_chosen"], batch["attention_mask_rejected"]])
    want = ScoreReader(model).rewards(model, ids, mask).chunk(2)
    for pack in (False, True):
        got = packed_rewards(
            ScoreReader(model), model, PrefixSharedPairCollator(pad_token_id=pad, pack=pack)(examples)
        )
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=0, atol=1e-5)
    expected_loss = -torch.nn.functional.logsigmoid(want[0] - want[1]).mean().detach()
    # and through the trainer: every pair is trained on, in the standard and the packed layout
    import datasets

    from reward_plugin import RewardConfig, RewardTrainer

    for mode in ("standard", "packed"):
        args = RewardConfig(
            output_dir=str(tmp_path / mode),
            pair_batching=mode,
            max_steps=1,
            logging_steps=1,
            per_device_train_batch_size=4,
            use_cpu=True,
            bf16=False,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
            save_final_model=False,
            save_reward_stats=False,
        )
        dataset = datasets.Dataset(pairs)
        trainer = RewardTrainer(
            model=copy.deepcopy(fresh), args=args, train_dataset=dataset, processing_class=bpe_tokenizer
        )
        trainer.train()
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        # the first step's loss is the mean pairwise loss of the four pairs before any update
        assert losses == [pytest.approx(float(expected_loss), abs=1e-4)]


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
