"""RewardDataCollatorWithPadding: exact tensors for padding, truncation, margins and errors."""

from __future__ import annotations

import pytest
import torch

from reward_plugin import DataError, RewardDataCollatorWithPadding


def pair(chosen, rejected, **extra):
    return {
        "input_ids_chosen": chosen,
        "attention_mask_chosen": [1] * len(chosen),
        "input_ids_rejected": rejected,
        "attention_mask_rejected": [1] * len(rejected),
        **extra,
    }


def assert_equal(actual: torch.Tensor, expected: list) -> None:
    assert actual.tolist() == expected
    assert actual.dtype == torch.long


def test_pads_chosen_and_rejected_to_one_length_on_the_right():
    batch = RewardDataCollatorWithPadding(pad_token_id=7)(
        [pair([1, 2, 3], [4, 5]), pair([6], [8, 9, 10, 11])]
    )
    assert set(batch) == {
        "input_ids_chosen",
        "attention_mask_chosen",
        "input_ids_rejected",
        "attention_mask_rejected",
    }
    assert_equal(batch["input_ids_chosen"], [[1, 2, 3, 7], [6, 7, 7, 7]])
    assert_equal(batch["attention_mask_chosen"], [[1, 1, 1, 0], [1, 0, 0, 0]])
    assert_equal(batch["input_ids_rejected"], [[4, 5, 7, 7], [8, 9, 10, 11]])
    assert_equal(batch["attention_mask_rejected"], [[1, 1, 0, 0], [1, 1, 1, 1]])


def test_keeps_zeros_of_a_given_attention_mask():
    example = pair([1, 2, 3], [4, 5])
    example["attention_mask_chosen"] = [0, 1, 1]  # a pre-padded row: the mask is passed through
    batch = RewardDataCollatorWithPadding(pad_token_id=0)([example])
    assert_equal(batch["attention_mask_chosen"], [[0, 1, 1]])
    assert_equal(batch["attention_mask_rejected"], [[1, 1, 0]])


def test_pad_to_multiple_of_rounds_the_length_up():
    collator = RewardDataCollatorWithPadding(pad_token_id=0, pad_to_multiple_of=4)
    batch = collator([pair([1, 2, 3, 4, 5], [6])])
    assert_equal(batch["input_ids_chosen"], [[1, 2, 3, 4, 5, 0, 0, 0]])
    assert_equal(batch["input_ids_rejected"], [[6, 0, 0, 0, 0, 0, 0, 0]])
    assert_equal(batch["attention_mask_rejected"], [[1, 0, 0, 0, 0, 0, 0, 0]])
    # A length already on the multiple is not padded further.
    assert collator([pair([1, 2, 3, 4], [5])])["input_ids_chosen"].shape == (1, 4)


def test_left_padding():
    batch = RewardDataCollatorWithPadding(pad_token_id=0, padding_side="left")([pair([1, 2, 3], [4])])
    assert_equal(batch["input_ids_chosen"], [[1, 2, 3]])
    assert_equal(batch["input_ids_rejected"], [[0, 0, 4]])
    assert_equal(batch["attention_mask_rejected"], [[0, 0, 1]])


def test_margin_passes_through_as_float32():
    batch = RewardDataCollatorWithPadding()([pair([1], [2], margin=1.5), pair([3], [4], margin=-0.25)])
    assert batch["margin"].dtype == torch.float32
    assert batch["margin"].tolist() == [1.5, -0.25]


def test_no_margin_key_without_margins():
    assert "margin" not in RewardDataCollatorWithPadding()([pair([1], [2])])


def test_trl_id_columns_get_all_ones_masks():
    batch = RewardDataCollatorWithPadding(pad_token_id=9)([{"chosen_ids": [1, 2], "rejected_ids": [3, 4, 5]}])
    assert_equal(batch["input_ids_chosen"], [[1, 2, 9]])
    assert_equal(batch["attention_mask_chosen"], [[1, 1, 0]])
    assert_equal(batch["input_ids_rejected"], [[3, 4, 5]])
    assert_equal(batch["attention_mask_rejected"], [[1, 1, 1]])


def test_pad_id_and_side_come_from_the_tokenizer(bpe_tokenizer):
    collator = RewardDataCollatorWithPadding(tokenizer=bpe_tokenizer)
    assert collator.pad_token_id == bpe_tokenizer.pad_token_id == 0
    assert collator.padding_side == bpe_tokenizer.padding_side


def test_left_truncation_keeps_the_end_and_a_leading_special_token():
    collator = RewardDataCollatorWithPadding(
        pad_token_id=0, max_length=4, truncation="left", keep_token_ids={101}
    )
    batch = collator([pair([101, 11, 12, 13, 14, 102], [21, 22, 23, 24, 25, 26])])
    assert_equal(batch["input_ids_chosen"], [[101, 13, 14, 102]])
    assert_equal(batch["input_ids_rejected"], [[23, 24, 25, 26]])
    assert_equal(batch["attention_mask_chosen"], [[1, 1, 1, 1]])


def test_right_truncation_keeps_the_start_and_a_trailing_special_token():
    collator = RewardDataCollatorWithPadding(
        pad_token_id=0, max_length=3, truncation="right", keep_token_ids={2}
    )
    batch = collator([pair([1, 5, 6, 7, 2], [8, 9, 10, 11]), pair([3], [4])])
    assert_equal(batch["input_ids_chosen"], [[1, 5, 2], [3, 0, 0]])
    assert_equal(batch["input_ids_rejected"], [[8, 9, 10], [4, 0, 0]])


def test_truncation_cuts_the_mask_with_the_ids():
    example = pair([1, 2, 3, 4], [5])
    example["attention_mask_chosen"] = [0, 1, 1, 1]
    batch = RewardDataCollatorWithPadding(max_length=2, truncation="right")([example])
    assert_equal(batch["attention_mask_chosen"], [[0, 1]])


def test_missing_column_names_the_columns_present():
    example = {"input_ids_chosen": [1], "input_ids_rejected": [2], "margin": 0.0}
    with pytest.raises(DataError) as info:
        RewardDataCollatorWithPadding()([example])
    assert str(info.value) == (
        "pair 0 of the batch has no tokenized preference pairs: it needs the columns input_ids_chosen, "
        "attention_mask_chosen, input_ids_rejected, attention_mask_rejected (or chosen_ids, rejected_ids); "
        "columns present: input_ids_chosen, input_ids_rejected, margin"
    )


def test_text_columns_are_not_pairs():
    with pytest.raises(DataError, match=r"columns present: chosen, prompt, rejected$"):
        RewardDataCollatorWithPadding()([{"prompt": "p", "chosen": "a", "rejected": "b"}])


def test_mask_length_mismatch_is_an_error():
    example = pair([1, 2], [3])
    example["attention_mask_chosen"] = [1]
    with pytest.raises(
        DataError, match=r"'attention_mask_chosen' has 1 entries but 'input_ids_chosen' has 2"
    ):
        RewardDataCollatorWithPadding()([example])


def test_empty_sequence_is_an_error():
    with pytest.raises(DataError, match=r"pair 1 of the batch: 'input_ids_rejected' is empty \(\[\]\)"):
        RewardDataCollatorWithPadding()([pair([1], [2]), pair([1], [])])


def test_margin_on_some_pairs_only_is_an_error():
    with pytest.raises(DataError, match=r"pair 1 of the batch has no 'margin' value while pair 0 has one"):
        RewardDataCollatorWithPadding()([pair([1], [2], margin=1.0), pair([1], [2])])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"truncation": "middle"}, "`truncation` must be 'left' or 'right', got 'middle'"),
        ({"padding_side": "up"}, "`padding_side` must be 'left' or 'right', got 'up'"),
        ({"max_length": 0}, "`max_length` must be a positive integer or None, got 0"),
        ({"pad_to_multiple_of": 0}, "`pad_to_multiple_of` must be a positive integer or None, got 0"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError) as info:
        RewardDataCollatorWithPadding(**kwargs)
    assert str(info.value) == message


def test_documented_examples_run():
    import doctest
    from pathlib import Path

    import reward_plugin.pairs.collators

    docs = Path(__file__).resolve().parents[1] / "docs" / "training.md"
    assert doctest.testfile(str(docs), module_relative=False).failed == 0
    assert doctest.testmod(reward_plugin.pairs.collators).failed == 0
