"""LLaMA-Factory ``template`` names: every name resolves, and for the families reward models are
trained on the rendering equals ``tokenizer.apply_chat_template`` with the model's real template.

The real templates are fixtures (``tests/fixtures/chat_templates/``, origins in its README); a
tokenizer is built on the fly with each family's special tokens and that ``chat_template``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FIXTURES, LLAMAFACTORY_DEMO

from dataset_formats.encoding import render_pairs
from dataset_formats.records import PreferencePair
from dataset_formats.registry import get_format
from dataset_formats.rendering import TOKENIZER_SPEC, load_chat_template
from reward_plugin.hosts.lf_templates import (
    LLAMAFACTORY_TEMPLATES,
    SHIPPED_EQUIVALENTS,
    resolve_template,
)

CHAT_TEMPLATES = FIXTURES / "chat_templates"
QWEN = {"eos_token": "<|im_end|>"}
LLAMA3 = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
MISTRAL = {"bos_token": "<s>", "eos_token": "</s>"}
GEMMA = {"bos_token": "<bos>", "eos_token": "<eos>"}
PHI3 = {"bos_token": "<s>", "eos_token": "<|endoftext|>"}
DEEPSEEK = {"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"}

# (LLaMA-Factory template, the model's own template, its special tokens, system messages allowed)
FAMILIES = [
    ("qwen", "qwen2_5.jinja", QWEN, True),  # Qwen2.5-Instruct
    ("qwen2_vl", "qwen2.jinja", QWEN, True),  # Qwen2-Instruct's format
    ("qwen3", "qwen3.jinja", QWEN, True),  # Qwen3 (thinking; an empty <think> block)
    ("qwen3_nothink", "qwen3_instruct_2507.jinja", QWEN, True),  # Qwen3-4B-Instruct-2507
    ("chatml", "qwen3_instruct_2507.jinja", QWEN, True),
    ("smollm2", "smollm2.jinja", QWEN, True),  # SmolLM2-Instruct (tokenizer's template)
    ("llama3", "llama3.jinja", LLAMA3, True),  # Meta-Llama-3-8B-Instruct
    ("mistral", "mistral_v3.jinja", MISTRAL, False),  # Mistral-7B-Instruct-v0.3
    ("gemma", "gemma.jinja", GEMMA, False),  # Gemma 1/2: no system role
    ("gemma3", "gemma3.jinja", GEMMA, True),
    ("phi", "phi3.jinja", PHI3, True),  # Phi-3 (tokenizer's template: it ends with eos)
    ("deepseek3", "deepseekv3.jinja", DEEPSEEK, True),  # DeepSeek-V3
    ("deepseekr1", "deepseek_r1_distill.jinja", DEEPSEEK, True),  # R1-Distill (tokenizer's)
]


def template_names_fixture() -> list[str]:
    path = FIXTURES / "hosts" / "llamafactory" / "template_names.txt"
    return [
        line.strip() for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#")
    ]


def make_tokenizer(chat_template: str, special: dict[str, str]):
    """A word-level fast tokenizer with the family's special tokens and ``chat_template``."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")), unk_token="<unk>"
    )
    tokenizer.add_special_tokens(dict(special))
    tokenizer.chat_template = chat_template
    return tokenizer


def as_messages(answer) -> list[dict]:
    return [{"role": "assistant", "content": answer}] if isinstance(answer, str) else list(answer)


def demo_pairs(with_system: bool) -> list:
    """Pairs of LLaMA-Factory's dpo_en_demo (multi-turn prompts) through our llamafactory adapter,
    plus one answer that carries a reasoning block; with a system message opening every prompt, or none at all."""
    rows = json.loads(Path(LLAMAFACTORY_DEMO).read_text(encoding="utf-8"))[:12]
    adapter = get_format("llamafactory")
    options = adapter.make_options({"formatting": "sharegpt"})
    pairs = [
        PreferencePair(list(p.prompt), as_messages(p.chosen), as_messages(p.rejected))
        for row in rows
        for p in adapter.to_pairs(row, options)
    ]
    assert any(len(p.prompt) > 1 for p in pairs)  # multi-turn prompts are covered
    pairs[0].chosen[0]["content"] = "<think>\nweigh both sides\n</think>\n\n" + pairs[0].chosen[0]["content"]
    if with_system:
        for pair in pairs:
            if pair.prompt[0]["role"] != "system":
                pair.prompt.insert(0, {"role": "system", "content": "You answer briefly."})
        return pairs
    return [pair for pair in pairs if pair.prompt[0]["role"] != "system"]


def test_every_llamafactory_template_name_resolves():
    names = template_names_fixture()
    assert len(names) == 125 and set(names) == LLAMAFACTORY_TEMPLATES
    for name in names:
        resolved = resolve_template(name)
        assert name in resolved.notice and "\n" not in resolved.notice
        if name in SHIPPED_EQUIVALENTS:
            assert load_chat_template(resolved.spec).name == resolved.spec
        else:
            assert resolved.spec == TOKENIZER_SPEC and "tokenizer's own chat template" in resolved.notice
    unknown = resolve_template("qwen9")
    assert unknown.spec == TOKENIZER_SPEC and "defines no such template" in unknown.notice


@pytest.mark.parametrize(("name", "fixture", "special", "system"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_rendering_equals_apply_chat_template(name, fixture, special, system):
    tokenizer = make_tokenizer((CHAT_TEMPLATES / fixture).read_text(encoding="utf-8"), special)
    spec = resolve_template(name).spec
    template = load_chat_template(spec, tokenizer)
    checked_prompts = 0
    for with_system in (False, True) if system else (False,):
        pairs = demo_pairs(with_system)
        for pair, rendered in zip(pairs, render_pairs(pairs, template, tokenizer)):
            chosen = tokenizer.apply_chat_template(pair.prompt + pair.chosen, tokenize=False)
            rejected = tokenizer.apply_chat_template(pair.prompt + pair.rejected, tokenize=False)
            assert rendered.chosen == chosen
            assert rendered.rejected == rejected
            prompt = tokenizer.apply_chat_template(pair.prompt, tokenize=False, add_generation_prompt=True)
            if chosen.startswith(prompt) and rejected.startswith(prompt):
                assert rendered.prompt == prompt
                checked_prompts += 1
            else:  # e.g. R1/V3 open the generation prompt with <think>, absent from a finished turn
                assert chosen.startswith(rendered.prompt) and rejected.startswith(rendered.prompt)
    if not name.startswith("deepseek"):
        assert checked_prompts > 0


def test_llamafactory_mistral_is_not_the_v1_template():
    """LLaMA-Factory's ``mistral`` writes ``[/INST]`` without the space of Mistral v0.1/v0.2."""
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    text = load_chat_template(resolve_template("mistral").spec).render(messages, **MISTRAL)
    assert text == "<s>[INST] Hi[/INST] Hello</s>"
    assert load_chat_template("mistral").render(messages, **MISTRAL) == "<s>[INST] Hi [/INST] Hello</s>"
