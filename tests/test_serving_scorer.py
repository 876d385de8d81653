"""RewardScorer: rewards equal a plain ``AutoModelForSequenceClassification`` forward on the same texts.

The scorer runs group blocks packed without padding (decoders) or padded rows (encoders); the
reference is transformers alone: the saved folder loaded with ``AutoModelForSequenceClassification``
and its tokenizer, texts rendered by hand (``prompt + completion``, or ``apply_chat_template``) and
run as one right-padded batch. Tolerance: 1e-4 in float32.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import read_hh_rows, tiny_llama_config, tokenized_pairs
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from reward_plugin import RewardConfig, RewardScorer, RewardTrainer
from reward_plugin.errors import DataError

FP32_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory, bpe_tokenizer_path) -> str:
    """A tiny Llama reward model trained 2 steps (pad == eos, chatml template), saved by the trainer."""
    tok = AutoTokenizer.from_pretrained(bpe_tokenizer_path)
    tok.pad_token = tok.eos_token
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(
        tiny_llama_config(vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    )
    out = tmp_path_factory.mktemp("scorer") / "rm"
    args = RewardConfig(
        output_dir=str(out),
        report_to="none",
        bf16=False,
        max_steps=2,
        max_length=48,
        learning_rate=1e-2,
        per_device_train_batch_size=4,
        save_strategy="no",
        disable_tqdm=True,
        chat_template="chatml",
    )
    RewardTrainer(
        model=model, args=args, processing_class=tok, train_dataset=tokenized_pairs(tok, n=8)
    ).train()
    return str(out)


def plain_forward(folder: str, texts: list[str]) -> list[float]:
    """transformers alone: the saved model and tokenizer, one right-padded batch."""
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "right"
    with torch.no_grad():
        return model(**tok(texts, padding=True, return_tensors="pt")).logits[:, 0].tolist()


def items(n_prompts: int = 4, per_prompt: int = 3):
    rows = read_hh_rows(n_prompts * per_prompt)
    prompts, completions = [], []
    for k in range(n_prompts * per_prompt):
        prompts.append(rows[k // per_prompt]["chosen"][: 40 + 8 * (k // per_prompt)])
        completions.append(" " + rows[k]["rejected"][-(10 + 3 * k) :])
    order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(1)).tolist()
    return [prompts[k] for k in order], [completions[k] for k in order]


def test_plain_text_rewards_equal_a_plain_forward_raw_and_normalized(trained_dir):
    prompts, completions = items()
    expected = plain_forward(trained_dir, [p + c for p, c in zip(prompts, completions)])
    scorer = RewardScorer.from_pretrained(trained_dir, device="cpu", normalize=False)
    assert max(len(scorer.tokenizer(p + c)["input_ids"]) for p, c in zip(prompts, completions)) <= 48
    assert scorer.grouped and scorer.model.dtype == torch.float32
    assert scorer(prompts=prompts, completions=completions, completion_ids=None) == pytest.approx(
        expected, abs=FP32_TOLERANCE
    )
    stats = json.loads((__import__("pathlib").Path(trained_dir) / "reward_stats.json").read_text())
    normalized = RewardScorer.from_pretrained(trained_dir, device="cpu")
    assert normalized.normalize
    want = [(r - stats["mean"]) / stats["std"] for r in expected]
    assert normalized(prompts=prompts, completions=completions) == pytest.approx(want, abs=FP32_TOLERANCE)


def test_default_token_budget_is_smaller_on_cpu(trained_dir):
    from reward_plugin.serving.batching import CPU_TOKEN_BUDGET, DEFAULT_TOKEN_BUDGET, default_token_budget

    assert RewardScorer.from_pretrained(trained_dir, device="cpu").token_budget == CPU_TOKEN_BUDGET == 4096
    assert default_token_budget("cuda:0") == DEFAULT_TOKEN_BUDGET == 16384
    assert RewardScorer.from_pretrained(trained_dir, device="cpu", token_budget=999).token_budget == 999


def test_small_token_budget_splits_forwards_with_the_same_rewards(trained_dir):
    prompts, completions = items()
    expected = plain_forward(trained_dir, [p + c for p, c in zip(prompts, completions)])
    scorer = RewardScorer.from_pretrained(trained_dir, device="cpu", normalize=False, token_budget=64)
    sizes: list[int] = []
    handle = scorer.model.model.embed_tokens.register_forward_hook(
        lambda m, args, out: sizes.append(args[0].numel())
    )
    try:
        assert scorer(prompts=prompts, completions=completions) == pytest.approx(expected, abs=FP32_TOLERANCE)
    finally:
        handle.remove()
    longest = max(len(scorer.tokenizer(p + c)["input_ids"]) for p, c in zip(prompts, completions))
    assert len(sizes) > 1 and max(sizes) <= max(64, longest)
    # One forward for everything with a large budget: the shared prompts are encoded once.
    sizes.clear()
    scorer.token_budget = 10**6
    handle = scorer.model.model.embed_tokens.register_forward_hook(
        lambda m, args, out: sizes.append(args[0].numel())
    )
    try:
        scorer(prompts=prompts, completions=completions)
    finally:
        handle.remove()
    total = sum(len(scorer.tokenizer(p + c)["input_ids"]) for p, c in zip(prompts, completions))
    assert len(sizes) == 1 and sizes[0] < total


def test_conversational_items_use_the_saved_chat_template(trained_dir):
    rows = read_hh_rows(6)
    prompts = [[{"role": "user", "content": r["chosen"][9:30]}] for r in rows[:3] for _ in range(2)]
    completions = [
        [{"role": "assistant", "content": f"Answer {k}: " + rows[k]["rejected"][-12:]}] for k in range(6)
    ]
    tok = AutoTokenizer.from_pretrained(trained_dir)
    assert "<|im_start|>" in tok.chat_template
    texts = [tok.apply_chat_template(p + c, tokenize=False) for p, c in zip(prompts, completions)]
    expected = plain_forward(trained_dir, texts)
    # The markup alone is ~40 tokens of this small tokenizer: lift the trained limit of 48.
    scorer = RewardScorer.from_pretrained(trained_dir, device="cpu", normalize=False, max_length=256)
    assert scorer(prompts=prompts, completions=completions) == pytest.approx(expected, abs=FP32_TOLERANCE)
    assert scorer.score_texts(texts) == pytest.approx(expected, abs=FP32_TOLERANCE)


def test_truncation_keeps_the_completion_and_cuts_the_prompt(trained_dir):
    rows = read_hh_rows(2)
    prompts = [rows[0]["chosen"], rows[1]["chosen"]]
    completions = [" Sure, here it is.", " No."]
    tok = AutoTokenizer.from_pretrained(trained_dir)
    scorer = RewardScorer.from_pretrained(trained_dir, device="cpu", normalize=False)
    assert scorer.encoder.max_length == 48  # as trained
    ids = [tok(p + c)["input_ids"] for p, c in zip(prompts, completions)]
    assert all(len(i) > 48 for i in ids)
    model = AutoModelForSequenceClassification.from_pretrained(trained_dir).eval()
    with torch.no_grad():
        expected = [model(input_ids=torch.tensor([i[-48:]])).logits[0, 0].item() for i in ids]
    assert scorer(prompts=prompts, completions=completions) == pytest.approx(expected, abs=FP32_TOLERANCE)


def test_encoder_models_score_padded_rows(tmp_path, bpe_tokenizer):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(bpe_tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=1,
        pad_token_id=bpe_tokenizer.pad_token_id,
    )
    BertForSequenceClassification(config).save_pretrained(tmp_path)
    bpe_tokenizer.save_pretrained(tmp_path)
    prompts, completions = items(3, 2)
    expected = plain_forward(str(tmp_path), [p + c for p, c in zip(prompts, completions)])
    scorer = RewardScorer.from_pretrained(tmp_path, device="cpu", token_budget=128)
    assert not scorer.grouped and not scorer.normalize  # no reward_stats.json: raw rewards
    assert scorer(prompts=prompts, completions=completions) == pytest.approx(expected, abs=FP32_TOLERANCE)


def test_a_peft_adapter_loads_on_its_base(tmp_path, tiny_llama_dir):
    from peft import LoraConfig, get_peft_model

    base = AutoModelForSequenceClassification.from_pretrained(tiny_llama_dir)
    torch.manual_seed(3)
    config = LoraConfig(
        task_type="SEQ_CLS", r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(base, config)
    peft_model.save_pretrained(tmp_path / "adapter")
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(tmp_path / "adapter")
    prompts, completions = items(2, 2)
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    merged = peft_model.merge_and_unload().eval()
    with torch.no_grad():
        expected = merged(
            **tok([p + c for p, c in zip(prompts, completions)], padding=True, return_tensors="pt")
        )
    scorer = RewardScorer.from_pretrained(tmp_path / "adapter", device="cpu")
    assert scorer(prompts=prompts, completions=completions) == pytest.approx(
        expected.logits[:, 0].tolist(), abs=FP32_TOLERANCE
    )


def test_bad_items_raise_one_line_errors(trained_dir):
    scorer = RewardScorer.from_pretrained(trained_dir, device="cpu")
    with pytest.raises(DataError, match="2 prompts but 1 completions"):
        scorer(prompts=["a", "b"], completions=["c"])
    with pytest.raises(DataError, match=r"completions\[0\]"):
        scorer(prompts=["a"], completions=[{"text": 3}])
