"""How ``pair_attention`` resolves to a backend for a model and a device (no GPU needed: the device is a value)."""

from __future__ import annotations

import pytest
from test_pair_batching import make_model

from reward_plugin import RewardConfig
from reward_plugin.pairs.backends import resolve_pair_attention


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_auto_never_runs_the_per_pair_loop_on_cuda(attn):
    model = make_model("llama", attn=attn)
    assert resolve_pair_attention("auto", model, "cuda").name != "segments"
    assert resolve_pair_attention("auto", model, "cuda:0").name != "segments"
    # On the CPU the per-pair loop is the fastest exact backend.
    assert resolve_pair_attention("auto", model, "cpu").name == "segments"


def test_explicit_values_are_kept_and_flex_models_use_their_block_mask():
    model = make_model("llama")
    assert resolve_pair_attention("segments", model, "cuda").name == "segments"
    assert resolve_pair_attention("mask", model, "cpu").name == "mask"
    model.config._attn_implementation = "flex_attention"
    assert resolve_pair_attention("auto", model, "cpu").name == "mask"
    assert resolve_pair_attention("segments", model, "cpu").name == "mask"


def test_auto_is_the_default_and_unknown_values_are_refused(tmp_path):
    assert RewardConfig(output_dir=str(tmp_path)).pair_attention == "auto"
    with pytest.raises(ValueError, match="pair_attention must be one of"):
        resolve_pair_attention("dense", None, "cpu")
