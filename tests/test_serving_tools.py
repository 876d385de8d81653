"""``tools`` and ``chat_template_kwargs`` reach the chat template through the scorer, ``score`` and
``serve`` as they do in training.

The reference is training's own encoding of the same rows: ``reward-plugin convert`` with the
shipped ``qwen3`` template (which reads ``tools``, tool calls, tool results and
``enable_thinking``), the rows of ``test_chat_tools`` (tools as a list and as a JSON string,
``enable_thinking`` on and off, tool calls with null content, an implicit prompt). The model is a
tiny random Llama saved with that tokenizer and template. Token ids must be equal; rewards equal
the scorer's rewards of training's ids (1e-4 in float32: other packings).
"""

from __future__ import annotations

import json

import pytest
from conftest import save_tiny_llama, write_jsonl
from test_chat_tools import ROWS, our_ids, qwen_tokenizer

import dataset_formats as df
from dataset_formats.rendering import templates_dir
from reward_plugin import RewardScorer
from reward_plugin.cli import main

FP32_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory, bpe_tokenizer_path) -> str:
    """A saved tiny Llama reward model whose tokenizer carries Qwen's special tokens and the qwen3 template."""
    tokenizer = qwen_tokenizer(
        bpe_tokenizer_path, (templates_dir() / "qwen3.jinja").read_text(encoding="utf-8")
    )
    return save_tiny_llama(tmp_path_factory.mktemp("qwen-tools"), tokenizer)


@pytest.fixture(scope="module")
def training_ids(qwen_dir, tmp_path_factory) -> list[list[int]]:
    """Training's token ids of ROWS (chosen, rejected per row), through ``reward-plugin convert``."""
    from transformers import AutoTokenizer

    ids = our_ids(AutoTokenizer.from_pretrained(qwen_dir), ROWS, tmp_path_factory.mktemp("convert"), "qwen3")
    return [seq for pair in ids for seq in pair]


def items() -> dict[str, list]:
    """ROWS as the scorer's per-completion lists (GRPO style: extra columns as keyword lists)."""
    adapter = df.get_format("preference")
    out: dict[str, list] = {"prompts": [], "completions": [], "tools": [], "chat_template_kwargs": []}
    for row in ROWS:
        (pair,) = adapter.to_pairs(row, adapter.make_options({}))
        for side in (pair.chosen, pair.rejected):
            out["prompts"].append(pair.prompt)
            out["completions"].append(side)
            # The raw row values (a JSON string stays a string): the scorer reads them as training does.
            out["tools"].append(row.get("tools"))
            out["chat_template_kwargs"].append(row.get("chat_template_kwargs"))
    return out


def test_scorer_renders_tools_and_kwargs_as_training(qwen_dir, training_ids):
    scorer = RewardScorer.from_pretrained(qwen_dir, device="cpu", normalize=False)
    given = items()
    _, ids = scorer.encoder.encode(
        given["prompts"],
        given["completions"],
        tools=given["tools"],
        chat_template_kwargs=given["chat_template_kwargs"],
    )
    assert ids == training_ids
    # They matter: without them the rendering differs (tools block, the closed think block).
    _, bare = scorer.encoder.encode(given["prompts"], given["completions"])
    assert bare[0] != ids[0] and bare[2] != ids[2] and bare[6] != ids[6]
    expected = scorer.score_ids(training_ids)
    assert scorer(**given) == pytest.approx(expected, abs=FP32_TOLERANCE)
    with pytest.raises(ValueError, match=r"chat_template_kwargs\[0\]"):
        scorer(
            prompts=given["prompts"][:1], completions=given["completions"][:1], chat_template_kwargs=[["x"]]
        )
    with pytest.raises(ValueError, match=r"tools must be a list with one entry per completion"):
        scorer(prompts=given["prompts"][:2], completions=given["completions"][:2], tools=[given["tools"][0]])


def test_score_command_rows_carry_tools_and_kwargs(qwen_dir, training_ids, tmp_path):
    scorer = RewardScorer.from_pretrained(qwen_dir, device="cpu", normalize=False)
    expected = scorer.score_ids(training_ids)
    data = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    out = tmp_path / "scores.jsonl"
    argv = ["score", "--model", qwen_dir, "--data", str(data), "--format", "preference", "-o", str(out)]
    assert main([*argv, "--device", "cpu", "--no-progress"]) == 0
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    got = [v for x in lines for v in (x["chosen_reward"], x["rejected_reward"])]
    assert got == pytest.approx(expected, abs=FP32_TOLERANCE)
    # Plain completion rows with the columns; a bad kwargs value is that row's error.
    row = ROWS[1]
    completions = [
        {"prompt": row["prompt"], "completions": [row["chosen"], row["rejected"]], "tools": row["tools"]}
        | {"chat_template_kwargs": row["chat_template_kwargs"]},
        {"prompt": row["prompt"], "completion": row["chosen"], "chat_template_kwargs": ["x"]},
    ]
    data = write_jsonl(tmp_path / "completions.jsonl", completions)
    assert (
        main(
            [
                "score",
                "--model",
                qwen_dir,
                "--data",
                str(data),
                "-o",
                str(out),
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert lines[0]["rewards"] == pytest.approx(expected[2:4], abs=FP32_TOLERANCE)
    assert "chat_template_kwargs" in lines[1]["error"] and "line 2" in lines[1]["error"]


@pytest.mark.slow
def test_server_score_requests_carry_tools_and_kwargs(qwen_dir, training_ids):
    from test_serving_server import Server

    httpx = pytest.importorskip("httpx")
    scorer = RewardScorer.from_pretrained(qwen_dir, device="cpu")
    expected = scorer.score_ids(training_ids)
    given = items()
    server = Server(qwen_dir)
    try:
        got = server.post("/score", given, headers={})
        assert got.status_code == 200, got.text
        assert got.json()["rewards"] == pytest.approx(expected, abs=FP32_TOLERANCE)
        # One value for every item: the second row's tools and kwargs for its two completions.
        body = {k: v[2:4] for k, v in given.items() if k in ("prompts", "completions")}
        body |= {"tools": json.loads(ROWS[1]["tools"]), "chat_template_kwargs": {"enable_thinking": False}}
        got = server.post("/score", body, headers={})
        assert got.json()["rewards"] == pytest.approx(expected[2:4], abs=FP32_TOLERANCE)
        bad = server.post("/score", {**body, "chat_template_kwargs": {"tools": 1}}, headers={})
        assert bad.status_code == 422 and bad.json()["field"] == "chat_template_kwargs"
        assert "may not set 'tools'" in bad.json()["error"] and "Traceback" not in bad.text
        bad = server.post("/score", {**body, "tools": [[], [], []]}, headers={})
        assert bad.status_code == 422 and bad.json()["field"] == "tools"
        assert isinstance(httpx.get(server.url + "/health").json()["requests"], int)
    finally:
        assert server.stop() == 0
