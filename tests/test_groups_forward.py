"""One forward per group: every response's reward equals its own standard forward (fp32, 1e-5)."""

from __future__ import annotations

import pytest
import torch
from test_pair_batching import make_model, random_rows

from reward_plugin import RewardDataCollatorWithPadding
from reward_plugin.pairs.collators import PrefixSharedPairCollator
from reward_plugin.pairs.forward import packed_rewards
from reward_plugin.pairs.groups import GroupCollator, group_rewards
from reward_plugin.pairs.masks import allowed_pairs
from reward_plugin.scoring import ScoreReader

VOCAB = 64


def random_groups(n: int = 5, seed: int = 2) -> list[dict]:
    """Groups of 1-6 responses over a 0-12 token prompt, responses sharing some first tokens, all pairs."""
    g = torch.Generator().manual_seed(seed)

    def ids(k: int) -> list[int]:
        return torch.randint(3, VOCAB, (k,), generator=g).tolist()

    groups = []
    for i in range(n):
        k = 2 + i % 5
        shared = ids(int(torch.randint(0, 3, (1,), generator=g)))  # a common start of the responses
        responses = [shared + ids(int(torch.randint(1, 8, (1,), generator=g))) for _ in range(k)]
        pairs = [{"better": a, "worse": b, "margin": None} for a in range(k) for b in range(k) if a < b]
        groups.append(
            {
                "prompt_ids": ids(int(torch.randint(0, 13, (1,), generator=g))),
                "response_ids": responses,
                "pairs": pairs,
                "scores": [float(k - j) for j in range(k)],
            }
        )
    groups.append({"prompt_ids": [], "response_ids": [[9], [10], [11]], "pairs": [{"better": 0, "worse": 2, "margin": 1.0}], "scores": None})  # fmt: skip
    return groups


def sequence_rewards(model, sequences: list[list[int]]) -> torch.Tensor:
    """The reference: each sequence alone, right-padded, scored at its last token."""
    rows = [{"chosen_ids": s, "rejected_ids": s} for s in sequences]
    batch = RewardDataCollatorWithPadding(pad_token_id=0)(rows)
    return ScoreReader(model).rewards(model, batch["input_ids_chosen"], batch["attention_mask_chosen"])


def test_group_block_layout_and_mask_by_hand():
    rows = [
        {"prompt_ids": [5, 6], "response_ids": [[7], [8, 9], [4]], "pairs": [{"better": 0, "worse": 1}], "scores": None},
        {"chosen_ids": [3, 1], "rejected_ids": [3, 2]},
    ]  # fmt: skip
    batch = GroupCollator(pad_token_id=0, layout="packed", attention_cost_tokens=float("inf"))(rows)
    assert batch["packed_input_ids"].tolist() == [[5, 6, 7, 8, 9, 4, 3, 1, 2]]
    assert batch["packed_position_ids"].tolist() == [[0, 1, 2, 2, 3, 2, 0, 1, 1]]
    assert batch["packed_segments"].tolist() == [[0, 0, 1, 2, 2, 3, 0, 1, 2]]
    assert batch["packed_spans"].tolist() == [[0, 0, 2, 1, 2, 1], [0, 6, 1, 1, 1, 0]]
    assert batch["response_index"].tolist() == [2, 4, 5, 7, 8]
    assert batch["pair_better"].tolist() == [0, 3] and batch["pair_worse"].tolist() == [1, 4]
    assert batch["response_group"].tolist() == [0, 0, 0, 1, 1]
    mask = allowed_pairs(batch)[0, 0].int().tolist()
    assert mask[:6] == [
        [1, 0, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 1, 0, 0, 0, 0, 0],  # tail 2 sees the prompt, not tail 1
        [1, 1, 0, 1, 1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 1, 0, 0, 0],  # tail 3 sees the prompt and itself only
    ]


@pytest.mark.parametrize("attention", ["segments", "mask"])
@pytest.mark.parametrize("arch", ["llama", "mistral", "gpt2"])
def test_group_rewards_and_gradients_equal_each_response_alone(arch, attention):
    groups = random_groups()
    model = make_model(arch)
    sequences = [g["prompt_ids"] + r for g in groups for r in g["response_ids"]]
    want = sequence_rewards(model, sequences)
    model.zero_grad()
    (want * torch.linspace(0.5, 1.5, len(want))).sum().backward()
    want_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    for layout in ("standard", "prefix_shared", "packed"):
        batch = GroupCollator(pad_token_id=0, layout=layout)(groups)
        got = group_rewards(ScoreReader(model), model, batch, segments=attention == "segments")
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        model.zero_grad()
        (got * torch.linspace(0.5, 1.5, len(got))).sum().backward()
        for name, p in model.named_parameters():
            if p.grad is None:
                continue
            # Relative 1e-4 of the largest entry, and 1e-7 absolute for gradients that are ~0.
            bound = 1e-4 * float(want_grads[name].abs().max()) + 1e-7
            assert float((p.grad - want_grads[name]).abs().max()) <= bound, f"{layout}: {name}"


@pytest.mark.parametrize("pack", [False, True])
def test_pairs_as_groups_of_two_are_the_pair_layout(pack):
    rows = random_rows()
    model = make_model("llama")
    pair_batch = PrefixSharedPairCollator(pad_token_id=0, pack=pack)(rows)
    group_batch = GroupCollator(pad_token_id=0, layout="packed" if pack else "prefix_shared")(rows)
    for key in ("packed_input_ids", "packed_position_ids", "packed_segments", "packed_spans"):
        assert torch.equal(pair_batch[key], group_batch[key]), key
    chosen, rejected = packed_rewards(ScoreReader(model), model, pair_batch)
    rewards = group_rewards(ScoreReader(model), model, group_batch)
    assert torch.equal(rewards[group_batch["pair_better"]], chosen)
    assert torch.equal(rewards[group_batch["pair_worse"]], rejected)


def test_max_length_cuts_each_response_with_the_prompt_like_the_pair_collator():
    row = {
        "prompt_ids": [1, 5, 6, 7],
        "response_ids": [[8, 9, 2], [10, 2]],
        "pairs": [{"better": 0, "worse": 1}],
    }
    options = {"pad_token_id": 0, "max_length": 4, "truncation": "left", "keep_token_ids": {1, 2}}
    batch = GroupCollator(**options, layout="standard")(row and [row])
    pairs = RewardDataCollatorWithPadding(**options)(
        [{"chosen_ids": [1, 5, 6, 7, 8, 9, 2], "rejected_ids": [1, 5, 6, 7, 10, 2]}]
    )
    assert batch["group_input_ids"].tolist() == [
        pairs["input_ids_chosen"][0].tolist(),
        pairs["input_ids_rejected"][0].tolist(),
    ]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt_ids": [1], "response_ids": [[2], []], "pairs": [{"better": 0, "worse": 1}]}, "at least one token"),
        ({"prompt_ids": [1], "response_ids": [[2], [3]], "pairs": []}, "has no pairs"),
        ({"prompt_ids": [1], "response_ids": [[2], [3]], "pairs": [{"better": 0, "worse": 2}]}, "two different responses 0..1"),
        ({"prompt_ids": [1], "response_ids": [[2], [3]], "pairs": [{"better": 1, "worse": 1}]}, "two different responses"),
        ({"prompt_ids": [1], "response_ids": [[2], [3]], "pairs": [{"better": 0, "worse": 1}], "scores": [1.0]}, "1 scores for 2 responses"),
    ],
)  # fmt: skip
def test_bad_groups_are_one_line_errors_naming_the_group(row, message):
    from reward_plugin.errors import DataError

    good = {"prompt_ids": [1], "response_ids": [[2], [3]], "pairs": [{"better": 0, "worse": 1}]}
    with pytest.raises(DataError, match=message) as info:
        GroupCollator(pad_token_id=0)([good, row])
    assert str(info.value).startswith("group 1 of the batch") and "\n" not in str(info.value)
