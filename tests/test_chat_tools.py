"""Conversational rows with ``tools``, ``chat_template_kwargs`` and tool-call messages give the same
token ids as TRL 1.16's ``RewardTrainer`` preprocessing.

TRL renders each row with ``tokenizer.apply_chat_template(prompt + chosen, tools=tools,
**chat_template_kwargs)`` (transformers' own Jinja environment); we render in our sandbox and
tokenize the text. Both sides use the same template text: the shipped ``qwen3`` template (which
reads ``tools``, tool calls, tool results and ``enable_thinking``) and the real Qwen3 template of
the fixtures. The tokenizer is the hh-rlhf BPE of ``conftest`` plus Qwen's special tokens.
Tolerance: none, the id lists must be equal.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import FIXTURES, write_jsonl

from dataset_formats.errors import RecordError
from dataset_formats.records import PreferencePair
from dataset_formats.rendering import load_chat_template, render_pair, templates_dir
from reward_plugin.cli import main as reward_main

trl = pytest.importorskip("trl")

QWEN_SPECIAL = ["<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>", "</tool_call>"]
QWEN_SPECIAL += ["<tool_response>", "</tool_response>"]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the web",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    },
}


def call(name: str, arguments) -> dict:
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


#: TRL conversational preference rows (explicit and implicit prompt) with tools in both layouts.
ROWS = [
    {  # tools as a list; chosen calls a tool (content null), reads the result, answers
        "prompt": [
            {"role": "system", "content": "You are a weather bot."},
            {"role": "user", "content": "What is the weather in Paris?"},
        ],
        "chosen": [
            {"role": "assistant", "content": None, "tool_calls": [call("get_weather", {"city": "Paris"})]},
            {"role": "tool", "content": '{"temp": 18, "sky": "sunny"}', "tool_call_id": "c1"},
            {"role": "assistant", "content": "It is 18 degrees and sunny in Paris."},
        ],
        "rejected": [{"role": "assistant", "content": "I cannot know the weather."}],
        "tools": [WEATHER],
    },
    {  # tools as a JSON string; Qwen3 thinking off; two calls after text, arguments as JSON strings
        # (one row of a datasets table cannot mix string and object arguments)
        "prompt": [{"role": "user", "content": "Find the capital of Peru and the weather there."}],
        "chosen": [
            {
                "role": "assistant",
                "content": "Let me look that up.",
                "tool_calls": [
                    call("search", '{"query": "capital of Peru"}'),
                    call("get_weather", '{"city": "Lima"}'),
                ],
            }
        ],
        "rejected": [{"role": "assistant", "content": "The capital of Peru is Cusco."}],
        "tools": json.dumps([SEARCH, WEATHER]),
        "chat_template_kwargs": {"enable_thinking": False},
    },
    {  # multi-turn prompt with earlier tool results; reasoning in the answer; no tools column
        "prompt": [
            {"role": "user", "content": "Add 2 and 3."},
            {"role": "assistant", "content": "", "tool_calls": [call("add", {"a": 2, "b": 3})]},
            {"role": "tool", "content": "5"},
            {"role": "tool", "content": "(cached)"},
            {"role": "assistant", "content": "2 + 3 = 5."},
            {"role": "user", "content": "And times 4?"},
        ],
        "chosen": [{"role": "assistant", "content": "<think>\n5 * 4\n</think>\n\n20."}],
        "rejected": [{"role": "assistant", "content": "9."}],
        "chat_template_kwargs": {"enable_thinking": True},
    },
    {  # implicit prompt: whole conversations, the system message beside the tools
        "chosen": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": None, "tool_calls": [call("get_weather", {"city": "Oslo"})]},
        ],
        "rejected": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": "Cold, probably."},
        ],
        "tools": [WEATHER],
    },
]


def qwen_tokenizer(bpe_tokenizer_path: str, chat_template: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bpe_tokenizer_path)
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL})
    tokenizer.chat_template = chat_template
    return tokenizer


def trl_ids(tokenizer, rows: list[dict], tmp_path: Path) -> list[tuple[list[int], list[int]]]:
    """Each row through TRL 1.16's own preprocessing (``RewardTrainer._prepare_dataset``), one row per
    dataset so that Arrow does not unify the different tool layouts of different rows."""
    import datasets
    import torch
    from conftest import tiny_llama_config
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(
        tiny_llama_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    )
    args = trl.RewardConfig(output_dir=str(tmp_path / "trl"), max_length=None, report_to="none", bf16=False)
    first = datasets.Dataset.from_list(rows[:1])
    trainer = trl.RewardTrainer(model=model, args=args, train_dataset=first, processing_class=tokenizer)
    out = []
    for row in rows:
        prepared = trainer._prepare_dataset(datasets.Dataset.from_list([row]), tokenizer, args, "row")
        out.append((prepared[0]["chosen_ids"], prepared[0]["rejected_ids"]))
    return out


def our_ids(
    tokenizer, rows: list[dict], tmp_path: Path, template: str, fmt: str = "preference"
) -> list[tuple[list[int], list[int]]]:
    """The rows through ``reward-plugin convert --format FMT`` (the public CLI)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    folder = tmp_path / "tok"
    tokenizer.save_pretrained(folder)
    source = write_jsonl(tmp_path / "rows.jsonl", rows)
    out = tmp_path / "pairs.parquet"
    argv = ["convert", str(source), "--format", fmt, "--tokenizer", str(folder)]
    argv += ["--chat-template", template, "-o", str(out), "--no-progress", "--overwrite"]
    assert reward_main(argv) == 0
    table = pq.read_table(out).to_pylist()
    assert [r["source_row"] for r in table] == list(range(len(rows)))
    return [(r["input_ids_chosen"], r["input_ids_rejected"]) for r in table]


@pytest.mark.parametrize(
    ("template_file", "spec"),
    [(templates_dir() / "qwen3.jinja", "qwen3"), (FIXTURES / "chat_templates" / "qwen3.jinja", "tokenizer")],
    ids=["shipped-qwen3", "real-qwen3-tokenizer"],
)
def test_token_ids_equal_trl_preprocessing(tmp_path, bpe_tokenizer_path, template_file, spec):
    tokenizer = qwen_tokenizer(bpe_tokenizer_path, template_file.read_text(encoding="utf-8"))
    reference = trl_ids(tokenizer, ROWS, tmp_path)
    ours = our_ids(tokenizer, ROWS, tmp_path, spec)
    assert ours == reference
    # The tools and the calls are really in the ids (not an empty rendering on both sides).
    text = tokenizer.decode(ours[0][0])
    assert '"name": "get_weather"' in text and "<tool_call>" in text and "<tool_response>" in text
    assert "# Tools" in tokenizer.decode(ours[1][1]) and '"search"' in tokenizer.decode(ours[1][1])
    assert "# Tools" not in tokenizer.decode(ours[2][0])


def test_shipped_qwen3_renders_tool_rows_like_the_real_qwen3_template():
    from dataset_formats.registry import get_format
    from dataset_formats.rendering import ChatTemplate

    real = ChatTemplate(
        "real-qwen3", (FIXTURES / "chat_templates" / "qwen3.jinja").read_text(encoding="utf-8")
    )
    shipped = load_chat_template("qwen3")
    adapter = get_format("preference")
    for row in ROWS:
        for pair in adapter.to_pairs(row, adapter.make_options({})):
            ours, theirs = render_pair(pair, shipped), render_pair(pair, real)
            assert (ours.prompt, ours.chosen, ours.rejected) == (
                theirs.prompt,
                theirs.chosen,
                theirs.rejected,
            )


def test_chat_format_rows_carry_tools_too(tmp_path, bpe_tokenizer_path):
    """The ``chat`` layout (``messages`` + replies) with the same tools gives the same ids as the
    TRL preference rows (explicit-prompt rows only: ``chat`` has no implicit prompt)."""
    tokenizer = qwen_tokenizer(
        bpe_tokenizer_path, (templates_dir() / "qwen3.jinja").read_text(encoding="utf-8")
    )
    rows = [r for r in ROWS if "prompt" in r]
    chat_rows = [{"messages": r["prompt"], **{k: v for k, v in r.items() if k != "prompt"}} for r in rows]
    preference = our_ids(tokenizer, rows, tmp_path / "p", "qwen3")
    chat = our_ids(tokenizer, chat_rows, tmp_path / "c", "qwen3", fmt="chat")
    assert chat == preference


def test_chat_template_kwargs_reach_the_template(tmp_path, bpe_tokenizer_path):
    """A template whose whole rendering depends on a row variable: ids differ per row and equal TRL's."""
    template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' }}"
        "{% if m['role'] == 'assistant' and style is defined %}{{ '[' + style + '] ' }}{% endif %}"
        "{{ m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    )
    tokenizer = qwen_tokenizer(bpe_tokenizer_path, template)
    base = {
        "prompt": [{"role": "user", "content": "Say hello."}],
        "chosen": [{"role": "assistant", "content": "Hello there!"}],
        "rejected": [{"role": "assistant", "content": "Go away."}],
    }
    rows = [base, {**base, "chat_template_kwargs": {"style": "formal"}}]
    rows.append({**base, "chat_template_kwargs": json.dumps({"style": "pirate"})})
    custom = tmp_path / "style.jinja"
    custom.write_text(template, encoding="utf-8")
    ours = our_ids(tokenizer, rows, tmp_path, str(custom))
    assert len({tuple(c) for c, _ in ours}) == 3
    assert "[formal]" in tokenizer.decode(ours[1][0]) and "[pirate]" in tokenizer.decode(ours[2][1])
    # TRL takes chat_template_kwargs only as an object: compare the first two rows with it.
    assert ours[:2] == trl_ids(tokenizer, rows[:2], tmp_path)


def test_enable_thinking_false_closes_the_think_block_of_the_prompt():
    """Qwen3 with ``enable_thinking: false``: the prompt ends with the empty think block the answer opens with."""
    pair = PreferencePair(
        [{"role": "user", "content": "Hi"}],
        [{"role": "assistant", "content": "Hello"}],
        [{"role": "assistant", "content": "Bye"}],
        chat_template_kwargs={"enable_thinking": False},
    )
    rendered = render_pair(pair, load_chat_template("qwen3"))
    assert rendered.prompt == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert rendered.chosen == rendered.prompt + "Hello<|im_end|>\n"
    pair.chat_template_kwargs = None
    assert render_pair(pair, load_chat_template("qwen3")).prompt.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ({"tools": "[{"}, "tools", "tools is a string but not valid JSON"),
        ({"tools": {"name": "f"}}, "tools", "tools must be a list of tool schema objects"),
        ({"chat_template_kwargs": ["x"]}, "chat_template_kwargs", "must be an object"),
        (
            {"chat_template_kwargs": {"add_generation_prompt": True}},
            "chat_template_kwargs.add_generation_prompt",
            "may not set 'add_generation_prompt'",
        ),
        ({"chat_template_kwargs": {"range": [1, 2]}}, "chat_template_kwargs.range", "may not set 'range'"),
        (
            {"chosen": [{"role": "assistant", "content": None, "tool_calls": [{"arguments": {}}]}]},
            "chosen[0].tool_calls[0]",
            "a tool call needs a function name",
        ),
        (
            {"chosen": [{"role": "user", "content": None, "tool_calls": [{"name": "f"}]}]},
            "chosen[0]",
            "message has a null 'content' key",
        ),
    ],
)
def test_bad_tools_and_kwargs_name_the_field(row, field, message):
    from dataset_formats.registry import get_format

    adapter = get_format("preference")
    base = {"prompt": [{"role": "user", "content": "Hi"}], "chosen": "Hello", "rejected": "Bye"}
    base["chosen"] = [{"role": "assistant", "content": "Hello"}]
    base["rejected"] = [{"role": "assistant", "content": "Bye"}]
    with pytest.raises(RecordError) as info:
        adapter.to_pairs({**base, **row}, adapter.make_options({}))
    assert info.value.field == field and message in str(info.value)


def test_tool_calls_without_a_template_are_rejected_not_dropped():
    """The plain hh-rlhf style cannot show tools or tool calls: the row is refused, naming the fix."""
    pair = PreferencePair(
        [{"role": "user", "content": "Weather?"}],
        [{"role": "assistant", "content": None, "tool_calls": [call("get_weather", {"city": "Oslo"})]}],
        [{"role": "assistant", "content": "No idea."}],
    )
    with pytest.raises(RecordError, match="--chat-template") as info:
        render_pair(pair, None)
    assert info.value.reason == "needs_chat_template"
    pair.tools = [WEATHER]
    with pytest.raises(RecordError, match="--chat-template") as info:
        render_pair(pair, None)
    assert info.value.field == "tools"
