"""How ``pair_attention`` resolves to a backend for a model and a device (no GPU needed: the device is a value)."""

from __future__ import annotations

import pytest
from test_pair_batching import make_model

from reward_plugin import RewardConfig
from reward_plugin.pairs.backends import resolve_pair_attention


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_auto_never_runs_the_per_pair_loop_on_cuda(attn):
    model = make_model("llama", attn=attn)
    assert resolve_pair_attention("auto", model, "cuda").name in ("varlen", "mask")
    assert resolve_pair_attention("auto", model, "cuda:0").name in ("varlen", "mask")
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


def test_auto_on_cuda_runs_varlen_with_torchs_kernel_where_torch_has_it(monkeypatch):
    from reward_plugin.pairs import backends

    model = make_model("llama")
    monkeypatch.setattr(backends, "torch_varlen_available", lambda: True)
    assert resolve_pair_attention("auto", model, "cuda") == backends.AttentionBackend("varlen", "torch")
    monkeypatch.setattr(backends, "torch_varlen_available", lambda: False)
    assert resolve_pair_attention("auto", model, "cuda").name == "mask"
    # Attention dropout while training: the varlen kernels have none, so auto keeps the mask.
    monkeypatch.setattr(backends, "torch_varlen_available", lambda: True)
    model.config.attention_dropout = 0.1
    model.train()
    assert resolve_pair_attention("auto", model, "cuda").name == "mask"
    model.eval()
    assert resolve_pair_attention("auto", model, "cuda").name == "varlen"


def test_varlen_runs_the_reference_kernel_without_a_cuda_kernel_and_flex_is_flex():
    model = make_model("llama")
    assert str(resolve_pair_attention("varlen", model, "cpu")) == "varlen (reference)"
    assert str(resolve_pair_attention("flex", model, "cpu")) == "flex (flex)"


@pytest.mark.parametrize("impl", ["flash_attention_2", "flash_attention_3"])
def test_flash_attention_models_pack_through_varlen(monkeypatch, impl):
    import importlib.util

    from reward_plugin.errors import UnsupportedModelError
    from reward_plugin.pairs import backends
    from reward_plugin.pairs.layout import unsupported_reason

    model = make_model("llama")
    model.config._attn_implementation = impl  # the kernels are not installed here: the name is enough
    assert unsupported_reason(model) is None  # the layout packs flash-attention models
    package = "flash_attn_interface" if impl == "flash_attention_3" else "flash_attn"
    kernel = "flash_attn_3" if impl == "flash_attention_3" else "flash_attn_2"
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        backends.importlib.util,
        "find_spec",
        lambda name, *a: object() if name == package else real_find_spec(name, *a),
    )
    assert resolve_pair_attention("auto", model, "cuda") == backends.AttentionBackend("varlen", kernel)
    assert resolve_pair_attention("varlen", model, "cuda").kernel == kernel
    with pytest.raises(UnsupportedModelError, match="ignores custom masks"):
        resolve_pair_attention("mask", model, "cuda")
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(UnsupportedModelError, match=f"the {package} package is not installed"):
        resolve_pair_attention("auto", model, "cuda")


def test_flex_without_flex_attention_is_a_one_line_error(monkeypatch):
    from reward_plugin.errors import UnsupportedModelError
    from reward_plugin.pairs import backends

    monkeypatch.setattr(backends, "flex_available", lambda: False)
    with pytest.raises(UnsupportedModelError, match="needs torch.nn.attention.flex_attention"):
        resolve_pair_attention("flex", make_model("llama"), "cuda")
