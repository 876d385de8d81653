"""A saved reward model scores as trained under plain ``AutoModelForSequenceClassification``.

Plain pooling reads the rightmost token that is not the pad id; with pad == EOS a row ending in the
EOS would be read one token early. The trainer saves a pad token that never ends a row; here the
saved folder, loaded by transformers alone, must give the rewards of an independent reference
(the score head on the last hidden state of each unpadded sequence) for rows that end in the EOS,
chat-templated rows and plain-text rows, in padded batches (right and left padding). Tolerance:
1e-4 in float32.
"""

from __future__ import annotations

import json

import datasets
import pytest
import torch
from conftest import read_hh_rows, tiny_llama_config
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from reward_plugin import RewardConfig, RewardTrainer
from reward_plugin.serving.export import SCORING_CONFIG_FILE

FP32_TOLERANCE = 1e-4


@pytest.fixture
def eos_pad_tokenizer(bpe_tokenizer_path):
    """The test BPE tokenizer with pad == eos == ``</s>`` (as SmolLM2 ships) and the chatml template."""
    tok = AutoTokenizer.from_pretrained(bpe_tokenizer_path)
    tok.pad_token = tok.eos_token
    return tok


def reference(model, ids: list[int]) -> float:
    with torch.no_grad():
        hidden = model.model(input_ids=torch.tensor([ids])).last_hidden_state
        return model.score(hidden[0, -1]).item()


def plain_rewards(model, tok, texts: list[str], side: str) -> list[float]:
    tok.padding_side = side
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits[:, 0].tolist()


def save_trained(tmp_path, tok, chat_template=None) -> str:
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(
        tiny_llama_config(vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    )
    rows = read_hh_rows(4)
    data = datasets.Dataset.from_list([{"chosen": r["chosen"], "rejected": r["rejected"]} for r in rows])
    args = RewardConfig(
        output_dir=str(tmp_path / "out"),
        report_to="none",
        bf16=False,
        max_steps=1,
        max_length=48,
        per_device_train_batch_size=2,
        save_strategy="no",
        disable_tqdm=True,
        chat_template=chat_template,
    )
    trainer = RewardTrainer(model=model, args=args, processing_class=tok, train_dataset=data)
    trainer.train()
    return args.output_dir


def test_rows_ending_in_eos_score_as_trained_under_plain_pooling(tmp_path, eos_pad_tokenizer):
    tok = eos_pad_tokenizer
    out = save_trained(tmp_path, tok, chat_template="chatml")
    assert tok.pad_token == tok.eos_token  # the trainer's tokenizer is left as it was
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    saved = AutoTokenizer.from_pretrained(out)
    assert saved.pad_token_id == model.config.pad_token_id != saved.eos_token_id
    settings = json.loads((tmp_path / "out" / SCORING_CONFIG_FILE).read_text())
    assert settings["max_length"] == 48 and settings["truncation"] == "left"
    assert saved.chat_template == settings["chat_template"] and "<|im_start|>" in settings["chat_template"]

    rows = read_hh_rows(6)
    eos_texts = [r["chosen"][-120:] + tok.eos_token for r in rows]
    plain_texts = [r["rejected"][-90 - 7 * i :] for i, r in enumerate(rows)]
    chat_texts = [
        saved.apply_chat_template(
            [
                {"role": "user", "content": r["chosen"][: 40 + 9 * i]},
                {"role": "assistant", "content": "Fine."},
            ],
            tokenize=False,
        )
        for i, r in enumerate(rows)
    ]
    for texts in (eos_texts, plain_texts, chat_texts):
        expected = [reference(model, saved(t)["input_ids"]) for t in texts]
        for side in ("right", "left"):
            got = plain_rewards(model, saved, texts, side)
            assert got == pytest.approx(expected, abs=FP32_TOLERANCE)
    assert all(saved(t)["input_ids"][-1] == saved.eos_token_id for t in eos_texts)

    # Control: under the old pad id (== EOS) plain pooling reads the token before the final EOS.
    model.config.pad_token_id = saved.eos_token_id
    saved.pad_token = saved.eos_token
    got = plain_rewards(model, saved, eos_texts, "right")
    expected = [reference(model, saved(t)["input_ids"]) for t in eos_texts]
    assert max(abs(a - b) for a, b in zip(got, expected)) > 1e-3


def test_a_pad_token_that_ends_no_row_is_kept(tmp_path, bpe_tokenizer_path):
    tok = AutoTokenizer.from_pretrained(bpe_tokenizer_path)
    assert tok.pad_token == "<pad>"
    out = save_trained(tmp_path, tok)
    assert AutoTokenizer.from_pretrained(out).pad_token == "<pad>"
    assert AutoModelForSequenceClassification.from_pretrained(out).config.pad_token_id == tok.pad_token_id
