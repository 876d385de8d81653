"""Chat templates (shipped, file, tokenizer), the sandbox and its budgets, and render_pair."""

from __future__ import annotations

import time

import pytest
from conftest import read_hh_rows

from dataset_formats import PreferencePair, RecordError, TemplateError
from dataset_formats.adapters.hh_rlhf import HHRLHFAdapter
from dataset_formats.rendering import (
    ChatTemplate,
    RenderedPair,
    TemplateRowError,
    list_templates,
    load_chat_template,
    render_pair,
    templates_dir,
)

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "2+2?"},
]

# Written by hand from each format's public description (see templates/README.md).
EXPECTED = {
    "chatml": (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    ),
    "llama3": (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "zephyr": "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n<|user|>\n2+2?</s>\n<|assistant|>\n",
    "mistral": "<s>[INST] Be brief.\n\nHi [/INST] Hello!</s>[INST] 2+2? [/INST]",
    "hh-rlhf": "Be brief.\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: 2+2?\n\nAssistant:",
}
SPECIAL = {
    "chatml": {},
    "llama3": {"bos_token": "<|begin_of_text|>"},
    "zephyr": {"eos_token": "</s>"},
    "mistral": {"bos_token": "<s>", "eos_token": "</s>"},
    "hh-rlhf": {},
}


def test_shipped_templates_are_listed_and_documented():
    names = list_templates()
    assert set(EXPECTED) <= set(names)
    readme = (templates_dir() / "README.md").read_text(encoding="utf-8")
    for name in names:
        assert f"`{name}`" in readme, f"templates/README.md says nothing about {name}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_template_renders_the_documented_format(name):
    template = load_chat_template(name)
    assert template.render(CONVERSATION, add_generation_prompt=True, **SPECIAL[name]) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_template_matches_transformers_apply_chat_template(name):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0, "<s>": 1, "</s>": 2}, unk_token="<unk>")),
        bos_token="<s>",
        eos_token="</s>",
    )
    template = load_chat_template(name)
    for gen in (False, True):
        msgs = CONVERSATION if gen else CONVERSATION + [{"role": "assistant", "content": "4"}]
        ours = template.render(msgs, add_generation_prompt=gen, bos_token="<s>", eos_token="</s>")
        theirs = tok.apply_chat_template(
            msgs, chat_template=template.source, tokenize=False, add_generation_prompt=gen
        )
        assert ours == theirs


def test_mistral_refuses_turns_that_do_not_alternate():
    template = load_chat_template("mistral")
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(TemplateRowError) as info:
        template.render(bad)
    err = info.value
    assert isinstance(err, RecordError) and isinstance(err, TemplateError)
    assert err.reason == "template_error" and err.field == "messages"
    assert "'mistral'" in str(err) and "turn 1 is user" in str(err)


def test_template_from_file_and_from_tokenizer(tmp_path):
    path = tmp_path / "mine.jinja"
    path.write_text("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}", encoding="utf-8")
    template = load_chat_template(str(path))
    assert template.render(CONVERSATION[1:3]) == "<user>Hi<assistant>Hello!"

    class Tok:
        name_or_path = "tiny"
        chat_template = "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}"

    assert load_chat_template("tokenizer", Tok()).render(CONVERSATION[1:2], bos_token="[B]") == "[B]Hi"
    Tok.chat_template = None
    with pytest.raises(
        TemplateError, match="tokenizer 'tiny' has no chat_template; pick a shipped one: .*chatml"
    ):
        load_chat_template("tokenizer", Tok())
    with pytest.raises(TemplateError, match="needs a tokenizer"):
        load_chat_template("tokenizer")
    assert load_chat_template(None) is None


def test_templates_pickle_for_worker_processes():
    import pickle

    template = load_chat_template("llama3")
    copy = pickle.loads(pickle.dumps(template))
    assert (copy.name, copy.source) == ("llama3", template.source)
    assert copy.render(CONVERSATION, True, bos_token="<|begin_of_text|>") == EXPECTED["llama3"]


def test_unknown_template_name_lists_the_shipped_ones(tmp_path):
    with pytest.raises(TemplateError) as info:
        load_chat_template("chatmll")
    message = str(info.value)
    assert message.startswith("unknown chat template 'chatmll'; shipped templates: ")
    for name in EXPECTED:
        assert name in message
    with pytest.raises(TemplateError, match="cannot be read"):
        load_chat_template(str(tmp_path / "missing.jinja"))


def test_syntax_error_names_template_and_line():
    with pytest.raises(TemplateError, match=r"chat template 'broken': syntax error on line 2"):
        ChatTemplate("broken", "ok\n{% for m in messages %}")


HOSTILE = {
    "class": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "globals": "{{ lipsum.__globals__['os'].system('true') }}",
    "cycler": "{{ cycler.__init__.__globals__ }}",
    "mutate": "{{ messages.append({'role': 'user', 'content': 'x'}) }}",
    "format": "{{ '{0.__class__}'.format(messages) }}",
    "nested loops": "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
    "loop over messages": "{% for m in messages %}{% for i in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
    "string bomb": "{{ 'x' * 10 ** 9 }}",
    "list bomb": "{% set xs = [1] * 100000000 %}{{ xs | length }}",
    "filter bomb": "{{ 'x' | center(2000000000) }}",
    "method bomb": "{{ 'x'.ljust(2000000000) }}",
    "recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "output": "{% for i in range(100000) %}{{ 'y' * 100 }}{% endfor %}",
}


@pytest.mark.parametrize("source", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_templates_fail_fast_with_a_clear_error(source):
    template = ChatTemplate("evil.jinja", source)
    start = time.monotonic()
    with pytest.raises(TemplateError) as info:
        template.render(CONVERSATION)
    assert time.monotonic() - start < 3.0
    message = str(info.value)
    assert "'evil.jinja'" in message and "\n" not in message
    assert not isinstance(info.value, RecordError), "a hostile template must stop the run, not skip rows"


def test_raise_exception_loopcontrols_and_generation_tag():
    source = (
        "{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}"
        "{% if m.role == 'assistant' %}{% generation %}[{{ m.content }}]{% endgeneration %}"
        "{% else %}{{ m.content }}{% endif %}{% endfor %}"
        "{% if messages | length > 9 %}{{ raise_exception('too long') }}{% endif %}{{ messages | tojson }}"
    )
    out = ChatTemplate("t", source).render(CONVERSATION[:3])
    assert out.startswith("Hi[Hello!][")
    arithmetic = "{{ 3 * 4 }} {{ 2 ** 10 }} {{ 'ab' * 2 }} {{ [0] * 2 }} {{ range(3) | list }}"
    assert ChatTemplate("t", arithmetic).render([]) == "12 1024 abab [0, 0] [0, 1, 2]"
    with pytest.raises(TemplateRowError, match="'t' refused the messages: too long"):
        ChatTemplate("t", source).render(CONVERSATION * 3)


def test_render_pair_text_pairs_concatenate_and_ignore_templates():
    chatml = load_chat_template("chatml")
    explicit = PreferencePair("The sky is", " blue.", " green.")
    assert render_pair(explicit, chatml) == RenderedPair(
        "The sky is", "The sky is blue.", "The sky is green."
    )
    implicit = PreferencePair(None, "The sky is blue.", "The sky is green.")
    assert render_pair(implicit, None) == RenderedPair("", "The sky is blue.", "The sky is green.")


def test_render_pair_conversational_with_template():
    pair = PreferencePair(CONVERSATION, "4", [{"role": "assistant", "content": "5"}])
    out = render_pair(pair, load_chat_template("zephyr"), eos_token="</s>")
    assert out.prompt == EXPECTED["zephyr"]
    assert out.chosen == EXPECTED["zephyr"] + "4</s>\n"
    assert out.rejected == EXPECTED["zephyr"] + "5</s>\n"
    implicit = PreferencePair(
        None, CONVERSATION[1:3], CONVERSATION[1:2] + [{"role": "assistant", "content": "Hey"}]
    )
    out = render_pair(implicit, load_chat_template("chatml"))
    assert (
        out.prompt == ""
        and out.chosen.endswith("Hello!<|im_end|>\n")
        and out.rejected.endswith("Hey<|im_end|>\n")
    )


def test_render_pair_falls_back_to_shared_text_when_template_rewrites_history():
    # The generation prompt differs from how the finished turn starts: the prompt must still be a
    # prefix of both texts (their common prefix).
    source = (
        "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant (thinking): {% endif %}"
    )
    pair = PreferencePair([{"role": "user", "content": "Hi"}], "Hello", "Hey")
    out = render_pair(pair, ChatTemplate("thinking", source))
    assert out == RenderedPair(
        "user: Hi\nassistant: He", "user: Hi\nassistant: Hello\n", "user: Hi\nassistant: Hey\n"
    )


def test_hh_default_matches_the_shipped_jinja_template_on_real_rows():
    adapter = HHRLHFAdapter()
    options = adapter.make_options({"allow_empty_response": True})
    template = load_chat_template("hh-rlhf")
    for row in read_hh_rows(200):
        (pair,) = adapter.to_pairs(row, options)
        assert render_pair(pair, None) == render_pair(pair, template)


def test_unknown_role_in_default_rendering_is_a_record_error():
    pair = PreferencePair([{"role": "tool", "content": "x"}], "a", "b")
    with pytest.raises(RecordError) as info:
        render_pair(pair, None)
    assert info.value.reason == "unknown_role"
