"""The committed model coverage (reward_plugin/pairs/coverage.json, docs/models.md) is what the proof finds.

For each model type with a ``ForSequenceClassification`` class, :func:`verify_model_type` builds a
tiny random fp32 instance (sdpa and eager) and compares the packed/prefix-shared rewards of pairs
and groups with the standard forward, each sequence on its own (tolerance 1e-5). The default run
re-proves a subset of families (sliding windows, logit soft-capping, QK-norm, attention sinks and
MoE routing among them) and checks the docs page is generated from the table; the full sweep over
every type is marked slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from transformers import AutoModelForSequenceClassification

from reward_plugin.errors import UnsupportedModelError
from reward_plugin.pairs import resolve_pair_batching, unsupported_reason
from reward_plugin.pairs.coverage import (
    PATHS,
    TOLERANCE,
    models_markdown,
    sequence_classification_types,
    sweep,
    tiny_config,
    verify_model_type,
)
from reward_plugin.pairs.coverage_table import COVERAGE_FILE, load_coverage

#: Re-proved in the default run: plain (llama, mistral with its window), QK-norm (qwen3), sliding
#: layers + QK-norm (gemma3_text), soft-capping (gemma2), sinks + MoE (gpt_oss), MoE (qwen3_moe),
#: fused QKV (phi3), absolute positions (gpt2), and an encoder that is refused (bert).
FAST_SUBSET = (
    "llama",
    "mistral",
    "qwen3",
    "gemma3_text",
    "gemma2",
    "gpt_oss",
    "qwen3_moe",
    "phi3",
    "gpt2",
    "bert",
)


def committed() -> dict:
    return json.loads(COVERAGE_FILE.read_text(encoding="utf-8"))


def same_transformers() -> bool:
    """Whether the installed transformers is the one the committed table was proven with."""
    import transformers

    return committed()["transformers"] == transformers.__version__


#: Reason for skipping the whole-table checks under another transformers release (CI's minimums).
OTHER_RELEASE = "the table was proven with another transformers release; `python -m reward_plugin.pairs.coverage --write` re-proves it"


def assert_same_verdict(got: dict, want: dict) -> None:
    """Same fast paths, and the same kind of refusal (the numbers may move in the last bits)."""
    assert got["fast"] == want["fast"], (got["model_type"], got["errors"], want["errors"])
    assert (got["reason"] is None) == (want["reason"] is None), (got["reason"], want["reason"])
    for path in got["fast"]:
        assert got["errors"][path] <= TOLERANCE


@pytest.mark.parametrize("model_type", FAST_SUBSET)
def test_committed_verdict_is_reproved(model_type):
    if model_type not in sequence_classification_types():
        pytest.skip(f"{model_type} is not in the installed transformers")
    assert_same_verdict(verify_model_type(model_type), load_coverage()[model_type])


@pytest.mark.slow
def test_full_sweep_matches_the_committed_table():
    if not same_transformers():
        pytest.skip(OTHER_RELEASE)
    data = sweep()
    table = load_coverage()
    assert [m["model_type"] for m in data["models"]] == sorted(table)
    for got in data["models"]:
        assert_same_verdict(got, table[got["model_type"]])


def test_table_covers_every_sequence_classification_type_and_docs_are_generated():
    data = committed()
    assert (ROOT / "docs" / "models.md").read_text(encoding="utf-8") == models_markdown(data)
    if not same_transformers():
        pytest.skip(OTHER_RELEASE)
    assert sorted(m["model_type"] for m in data["models"]) == sequence_classification_types()
    for m in data["models"]:
        # every type is either exact on some path or refused with a reason, never both or neither
        assert bool(m["fast"]) != bool(m["reason"]), m
        assert set(m["fast"]) <= set(PATHS)


def test_the_families_people_train_are_on_the_fast_path():
    table = load_coverage()
    for model_type in ("llama", "qwen2", "qwen3", "qwen3_moe", "mistral", "gemma", "gemma2", "gemma3_text",
                       "phi3", "olmo2", "smollm3", "glm4", "exaone4", "ministral", "gpt_oss"):  # fmt: skip
        assert table[model_type]["fast"], (model_type, table[model_type])


def tiny_model(model_type: str, attn: str = "sdpa"):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(tiny_config(model_type), attn_implementation=attn)


def test_the_layout_follows_the_table():
    qwen3 = tiny_model("qwen3")
    assert unsupported_reason(qwen3) is None
    assert resolve_pair_batching("auto", qwen3) == "packed"
    assert resolve_pair_batching("packed", qwen3, "mask") == "packed"


def test_a_path_that_is_not_proven_is_refused_with_its_reason(monkeypatch):
    from reward_plugin.pairs import coverage_table as coverage

    qwen3 = tiny_model("qwen3")
    entry = {**load_coverage()["qwen3"], "fast": ["sdpa/segments"], "errors": {"sdpa/mask": 0.25}}
    monkeypatch.setattr(coverage, "load_coverage", lambda: {"qwen3": entry})
    assert resolve_pair_batching("packed", qwen3) == "packed"
    with pytest.raises(UnsupportedModelError) as raised:
        resolve_pair_batching("packed", qwen3, "mask")
    assert str(raised.value) == (
        "pair_batching='packed' cannot be exact here: Qwen3ForSequenceClassification: model_type='qwen3' with "
        "sdpa/mask differs from the standard forward by 2.5e-01 (exact: sdpa/segments); set "
        "pair_batching='standard' (or 'auto', which falls back to it)"
    )
    monkeypatch.setattr(coverage, "load_coverage", dict)
    assert resolve_pair_batching("auto", qwen3) == "standard"
    assert "is not among the types checked" in unsupported_reason(qwen3)


def test_an_encoder_is_refused_with_the_reason_from_the_table():
    bert = tiny_model("bert")
    reason = unsupported_reason(bert)
    assert reason == f"BertForSequenceClassification: model_type='bert': {load_coverage()['bert']['reason']}"
    assert "per-token `score`" in reason


def test_docs_link_the_table():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/models.md" in readme
    assert Path(COVERAGE_FILE).name == "coverage.json"
