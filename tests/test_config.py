"""RewardConfig: defaults, validation, and HfArgumentParser flags."""

from __future__ import annotations

import dataclasses

import pytest
from transformers import HfArgumentParser, TrainingArguments

from reward_plugin import ConfigError, RewardConfig
from reward_plugin.config import cpu_has_native_bf16

REWARD_FIELDS = {
    "model_init_kwargs",
    "trust_remote_code",
    "disable_dropout",
    "max_length",
    "truncation",
    "dataset_format",
    "chat_template",
    "dataset_num_proc",
    "pad_to_multiple_of",
    "group_by_length",
    "pair_batching",
    "center_rewards_coefficient",
    "save_reward_stats",
    "reward_stats_pass",
    "save_final_model",
    "dataset_format_options",
    "dataset_on_error",
}


def test_defaults(tmp_path):
    c = RewardConfig(output_dir=str(tmp_path))
    assert c.max_length is None and c.center_rewards_coefficient is None and c.chat_template is None
    assert c.gradient_checkpointing is True and c.disable_dropout is True and c.trust_remote_code is False
    assert (c.truncation, c.dataset_format, c.pair_batching) == ("left", "auto", "auto")
    assert c.group_by_length is False and c.save_reward_stats is True and c.remove_unused_columns is False
    assert c.save_final_model is True
    assert c.logging_steps == 10


def test_every_field_has_help():
    ours = {f.name: f for f in dataclasses.fields(RewardConfig)}
    assert REWARD_FIELDS <= set(ours)
    for name in REWARD_FIELDS | {"gradient_checkpointing", "bf16", "logging_steps", "remove_unused_columns"}:
        assert ours[name].metadata.get("help"), name


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        ("fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni", True),  # AVX512-BF16
        ("fpu avx2 avx512f amx_bf16 amx_tile amx_int8", True),  # AMX
        ("fpu sse2 avx2 avx512f avx512bw avx512_vnni", False),  # AVX512 without BF16: emulated
        ("fpu sse2 avx2 fma", False),
    ],
)
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\n", encoding="utf-8")
    assert cpu_has_native_bf16(str(cpuinfo)) is native
    assert cpu_has_native_bf16(str(tmp_path / "no-such-file")) is False


@pytest.mark.parametrize("native", [True, False])
def test_bf16_auto_on_a_cpu_only_machine(tmp_path, monkeypatch, native):
    """No accelerator: bf16 (with use_cpu, which transformers needs for CPU bf16) only when native."""
    import torch

    from reward_plugin import config as config_module

    monkeypatch.setattr(config_module, "cpu_has_native_bf16", lambda: native)
    if getattr(torch, "accelerator", None) is not None:
        monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    c = RewardConfig(output_dir=str(tmp_path))
    assert (c.bf16, c.use_cpu) == ((True, True) if native else (False, False))
    assert RewardConfig(output_dir=str(tmp_path), bf16=False).bf16 is False


def test_gradient_checkpointing_is_handed_to_the_new_name_without_a_warning(tmp_path, recwarn):
    on = RewardConfig(output_dir=str(tmp_path))
    off = RewardConfig(output_dir=str(tmp_path), gradient_checkpointing=False)
    if any(f.name == "activation_checkpointing" for f in dataclasses.fields(TrainingArguments)):
        assert on.activation_checkpointing is True and off.activation_checkpointing is False
    assert not [w for w in recwarn if "gradient_checkpointing" in str(w.message)]


def test_parser_turns_fields_into_flags(tmp_path):
    parser = HfArgumentParser(RewardConfig)
    (c,) = parser.parse_args_into_dataclasses(
        [
            "--output_dir",
            str(tmp_path),
            "--max_length",
            "256",
            "--no_gradient_checkpointing",
            "--center_rewards_coefficient",
            "0.01",
            "--pair_batching",
            "auto",
            "--group_by_length",
            "--model_init_kwargs",
            '{"dtype": "float32"}',
            "--bf16",
            "false",
            "--dataset_format_options",
            '{"allow_empty_response": true}',
        ]
    )
    assert c.max_length == 256 and c.gradient_checkpointing is False and c.center_rewards_coefficient == 0.01
    assert c.pair_batching == "auto" and c.group_by_length is True and c.bf16 is False
    assert c.model_init_kwargs == {"dtype": "float32"}
    assert c.dataset_format_options == {"allow_empty_response": True}
    (d,) = parser.parse_dict({"output_dir": str(tmp_path), "truncation": "right", "save_reward_stats": False})
    assert d.truncation == "right" and d.save_reward_stats is False
    assert "--pair_batching {standard,prefix_shared,packed,auto}" in parser.format_help()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("truncation", "middle", "`truncation` must be one of left, right, got 'middle'"),
        (
            "pair_batching",
            "fast",
            "`pair_batching` must be one of standard, prefix_shared, packed, auto, got 'fast'",
        ),
        ("max_length", 0, "`max_length` must be a positive integer or None, got 0"),
        ("pad_to_multiple_of", -8, "`pad_to_multiple_of` must be a positive integer or None, got -8"),
        (
            "center_rewards_coefficient",
            -0.1,
            "`center_rewards_coefficient` must be a number >= 0 or None, got -0.1",
        ),
        ("dataset_format", "", "`dataset_format` must be a format name or 'auto', got ''"),
        ("dataset_on_error", "ignore", "`dataset_on_error` must be one of raise, skip, got 'ignore'"),
    ],
)
def test_validation(tmp_path, field, value, message):
    with pytest.raises(ConfigError) as info:
        RewardConfig(output_dir=str(tmp_path), **{field: value})
    assert str(info.value).startswith(message)


def test_on_error_has_one_default_everywhere(tmp_path):
    """convert (library and CLI), RewardConfig, a runner data source and Axolotl's datasets all
    stop at the first bad raw row unless told to skip (docs/convert.md says why)."""
    import argparse
    import inspect

    from dataset_formats.commands import add_commands
    from dataset_formats.conversion import convert, encode_rows
    from reward_plugin.hosts.axolotl import data_sources
    from reward_plugin.stages.sources import parse_sources

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    cli = parser.parse_args(["convert", "in.jsonl", "--tokenizer", "t", "-o", "out.parquet"])
    defaults = {
        "convert()": inspect.signature(convert).parameters["on_error"].default,
        "encode_rows()": inspect.signature(encode_rows).parameters["on_error"].default,
        "convert --on-error": cli.on_error,
        "RewardConfig.dataset_on_error": RewardConfig(output_dir=str(tmp_path)).dataset_on_error,
        "train_data.on_error": parse_sources({"path": "a.jsonl"}, "train_data")[0].on_error,
        "reward_on_error (Axolotl)": data_sources({"datasets": [{"path": "a.jsonl"}]})[0]["on_error"],
    }
    assert defaults == dict.fromkeys(defaults, "raise")
