"""The model card's usage snippet gives the reward training read, on a pad == EOS chat model.

The reference is the training path: a conversation converted with the tokenizer's own chat
template (the conversion default) and scored by :class:`ScoreReader` at its last token. The
snippet is taken from the rendered card and run as written (only the folder path filled in).
Without its ``pad_token_id = None`` line transformers would read the token before the final EOS,
which the test also shows.
"""

from __future__ import annotations

import re

import pytest
import torch
from conftest import FIXTURES, ROOT, tiny_llama_config
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from dataset_formats import encode_rows
from reward_plugin.modelcard import render_model_card
from reward_plugin.scoring import ScoreReader


@pytest.mark.parametrize(
    ("template", "ends_with_eos"),
    [
        (
            FIXTURES / "chat_templates" / "qwen3_instruct_2507.jinja",
            False,
        ),  # ChatML: "<|im_end|>\n" ends a turn
        (ROOT / "templates" / "mistral.jinja", True),  # "{answer}{eos}": the sequence ends with EOS == pad
    ],
)
def test_card_snippet_scores_the_last_token_in_the_training_format(
    tmp_path, bpe_tokenizer_path, template, ends_with_eos
):
    tokenizer = AutoTokenizer.from_pretrained(bpe_tokenizer_path)
    # pad == EOS (as in SmolLM2 and Qwen), here ChatML's end of turn
    tokenizer.add_special_tokens({"eos_token": "<|im_end|>", "pad_token": "<|im_end|>"})
    tokenizer.chat_template = template.read_text(encoding="utf-8")
    torch.manual_seed(0)
    config = tiny_llama_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    folder = tmp_path / "rm"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    # What training reads: the conversation converted as `convert` does, scored at its last token.
    row = {
        "prompt": [{"role": "user", "content": "Hi!"}],
        "chosen": [{"role": "assistant", "content": "Hello, how can I help?"}],
        "rejected": [{"role": "assistant", "content": "Go away."}],
    }
    table, _ = encode_rows([row], format="preference", tokenizer=tokenizer)
    ids = torch.tensor([table.column("input_ids_chosen").to_pylist()[0]])
    with torch.no_grad():
        want = ScoreReader(model).rewards(model, ids, torch.ones_like(ids)).item()

    card = render_model_card(model_name="rm")
    code = (
        re.search(r"```python\n(.*?)```", card, re.DOTALL)
        .group(1)
        .replace("PATH/TO/THIS/FOLDER", str(folder))
    )
    scope: dict = {}
    exec(compile(code, "model card", "exec"), scope)  # noqa: S102 - our own card's snippet, run as a user runs it
    assert abs(scope["reward"] - want) <= 1e-5

    # The snippet's text is the converted text: same token ids.
    assert scope["tokenizer"](scope["text"], return_tensors="pt")["input_ids"].tolist() == ids.tolist()
    # Without `pad_token_id = None` the final EOS (== pad) would be skipped: another token's score.
    assert (ids[0, -1].item() == tokenizer.pad_token_id) == ends_with_eos
    if ends_with_eos:
        fresh = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        with torch.no_grad():
            skipped = fresh(input_ids=ids).logits[0, 0].item()
        assert abs(skipped - want) > 1e-4
