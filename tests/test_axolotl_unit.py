"""The Axolotl plugin's config mapping, without Axolotl: keys -> reward stage config, host args -> RewardConfig.

The plugin itself runs under real Axolotl in tests/test_axolotl_e2e.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

pytest.importorskip("pydantic")

from reward_plugin.errors import ConfigError
from reward_plugin.hosts import axolotl as host

DOC = Path(__file__).resolve().parents[1] / "docs" / "hosts.md"


def test_plugin_is_off_without_reward_stage_or_reward_model():
    assert not host.active({"base_model": "m", "datasets": [{"path": "x.jsonl"}]})
    assert not host.active({"reward_stage": None})
    assert not host.active({"reward_stage": None, "reward_model": False})
    assert host.active({"reward_stage": "reward"})
    # Axolotl's own reward-model configs: listing the plugin is enough, the stage is `reward`.
    assert host.stage_name({"reward_model": True}) == "reward"
    assert host.stage_name({"reward_model": True, "reward_stage": "reward"}) == "reward"


def test_settings_map_prefixed_keys_onto_reward_config_fields():
    cfg = {
        "reward_stage": "reward",
        "reward_dataset_format": "hh-rlhf",
        "reward_truncation": "right",
        "reward_center_rewards_coefficient": 0.01,
        "reward_chat_template": "chatml",
        "reward_pair_batching": "standard",
        "reward_pair_attention": "mask",
        "reward_disable_dropout": False,
        "reward_save_stats": True,
        "sequence_len": 256,
    }
    assert host.stage_settings(cfg) == {
        "dataset_format": "hh-rlhf",
        "truncation": "right",
        "center_rewards_coefficient": 0.01,
        "chat_template": "chatml",
        "pair_batching": "standard",
        "pair_attention": "mask",
        "disable_dropout": False,
        "save_reward_stats": True,
        "max_length": 256,
    }
    # reward_max_length wins over sequence_len; Axolotl's own center_rewards_coefficient is the fallback.
    assert host.stage_settings(
        {"reward_max_length": 64, "sequence_len": 256, "center_rewards_coefficient": 0.1}
    ) == {
        "max_length": 64,
        "center_rewards_coefficient": 0.1,
    }


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"reward_max_length": 0}, "`reward_max_length` must be a positive integer, got 0"),
        (
            {"reward_center_rewards_coefficient": "lots"},
            "`reward_center_rewards_coefficient` must be a number",
        ),
        ({"reward_margin": "big"}, "`reward_margin` must be true (use the data's margins), false"),
        ({"reward_dataset_options": ["a"]}, "`reward_dataset_options` must be a mapping"),
        ({"reward_on_error": "ignore"}, "`reward_on_error` must be 'raise' or 'skip', got 'ignore'"),
    ],
)
def test_settings_errors_name_the_key(cfg, message):
    with pytest.raises(ConfigError) as info:
        host.stage_settings(cfg)
    assert message in str(info.value)


def test_datasets_entries_become_stage_sources():
    cfg = {
        "reward_dataset_options": {"scale": 0.5},
        "reward_on_error": "skip",
        "datasets": [
            {"path": "a.jsonl"},
            {"path": "s.jsonl", "type": "score-pair"},
            {"data_files": ["b1", "b2"]},
            {"path": "bt.jsonl", "type": "bradley_terry.chat_template"},
        ],
    }
    assert host.data_sources(cfg) == [
        {"path": ["a.jsonl"], "on_error": "skip", "options": {"scale": 0.5}},
        {"path": ["s.jsonl"], "on_error": "skip", "format": "score-pair", "options": {"scale": 0.5}},
        {"path": ["b1", "b2"], "on_error": "skip", "options": {"scale": 0.5}},
        {"path": ["bt.jsonl"], "on_error": "skip", "format": "axolotl-bt", "options": {"scale": 0.5}},
    ]
    # Axolotl's drop_system_message on a bradley_terry entry becomes the axolotl-bt option.
    bt = {"path": "bt.jsonl", "type": "bradley_terry.chat_template", "drop_system_message": True}
    assert host.data_sources({"datasets": [bt]}) == [
        {
            "path": ["bt.jsonl"],
            "on_error": "raise",
            "format": "axolotl-bt",
            "options": {"drop_system_message": True},
        }
    ]
    with pytest.raises(
        ConfigError, match=r"`datasets\[0\].type` is 'alpaca', which is not a dataset-toolkit format"
    ):
        host.data_sources({"datasets": [{"path": "a.jsonl", "type": "alpaca"}]})
    with pytest.raises(ConfigError, match=r"`test_datasets\[0\]` has no `path`"):
        host.data_sources({"test_datasets": [{"split": "test"}]}, "test_datasets")


def test_stage_section_validates_through_the_reward_stage(tmp_path):
    from reward_plugin.stages import get_stage

    cfg = {
        "base_model": "some/model",
        "reward_dataset_format": "hh-rlhf",
        "datasets": [{"path": "train.jsonl"}],
        "val_set_size": 8.0,  # Axolotl stores the count as a float
        "sequence_len": 128,
        "seed": 3,
        "output_dir": str(tmp_path / "out"),
    }
    stage_cfg = get_stage("reward").validate_config(host.stage_section(cfg))
    assert stage_cfg.model == "some/model"
    assert [s.paths for s in stage_cfg.train_data] == [["train.jsonl"]]
    assert stage_cfg.eval_size == 8 and isinstance(stage_cfg.eval_size, int)
    assert (stage_cfg.args.max_length, stage_cfg.args.dataset_format, stage_cfg.args.seed) == (
        128,
        "hh-rlhf",
        3,
    )
    assert host.stage_section({**cfg, "val_set_size": 0.25})["eval_size"] == 0.25


def test_a_hand_written_axolotl_config_gives_these_reward_config_values(tmp_path):
    """Every reward key of an Axolotl config, and the RewardConfig the reward stage builds from it."""
    from reward_plugin import RewardConfig
    from reward_plugin.stages import get_stage

    cfg = {
        "base_model": "org/base",
        "reward_stage": "reward",
        "reward_dataset_format": "hh-rlhf",
        "reward_dataset_options": {"allow_empty_response": False},
        "reward_on_error": "skip",
        "reward_truncation": "right",
        "reward_max_length": 96,
        "sequence_len": 512,  # reward_max_length wins
        "reward_center_rewards_coefficient": 0.02,
        "reward_chat_template": "chatml",
        "reward_pair_batching": "standard",
        "reward_pair_attention": "mask",
        "reward_disable_dropout": False,
        "reward_save_stats": False,
        "datasets": [{"path": "train.jsonl"}],
        "val_set_size": 0.1,
        "seed": 5,
        "dataset_processes": 2,
        "output_dir": str(tmp_path / "rm"),
    }
    stage_cfg = get_stage("reward").validate_config(host.stage_section(cfg))
    args = stage_cfg.args
    assert isinstance(args, RewardConfig)
    assert stage_cfg.model == "org/base" and stage_cfg.eval_size == 0.1
    assert [(s.paths, s.format, s.options, s.on_error) for s in stage_cfg.train_data] == [
        (["train.jsonl"], None, {"allow_empty_response": False}, "skip")
    ]
    assert (args.dataset_format, args.truncation, args.max_length) == ("hh-rlhf", "right", 96)
    assert (args.center_rewards_coefficient, args.chat_template) == (0.02, "chatml")
    assert (args.pair_batching, args.pair_attention) == ("standard", "mask")
    assert (args.disable_dropout, args.save_reward_stats) == (False, False)
    assert (args.seed, args.dataset_num_proc, args.output_dir) == (5, 2, str(tmp_path / "rm"))


def test_host_training_arguments_become_a_reward_config(tmp_path):
    from dataclasses import dataclass, field

    from transformers import TrainingArguments

    from reward_plugin import RewardConfig

    @dataclass
    class HostArguments(TrainingArguments):  # what Axolotl does: TrainingArguments plus its own fields
        sample_packing: bool = field(default=False)

    args = HostArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        learning_rate=3e-4,
        max_steps=7,
        logging_steps=1,
        lr_scheduler_type="constant",
        seed=11,
        sample_packing=True,
        use_cpu=True,
    )
    converted = host.to_reward_config(args, {"center_rewards_coefficient": 0.01, "max_length": 64})
    assert isinstance(converted, RewardConfig)
    assert (converted.output_dir, converted.per_device_train_batch_size, converted.learning_rate) == (
        str(tmp_path),
        4,
        3e-4,
    )
    assert (converted.max_steps, converted.logging_steps, converted.seed) == (7, 1, 11)
    assert converted.lr_scheduler_type == "constant"
    assert (converted.center_rewards_coefficient, converted.max_length) == (0.01, 64)
    assert converted.save_final_model is False  # the host saves the model itself
    assert not hasattr(converted, "sample_packing")
    with pytest.raises(ConfigError, match="`truncation` must be one of left, right"):
        host.to_reward_config(args, {"truncation": "middle"})


def test_margin_policy_keeps_drops_or_replaces_the_margin_column():
    import datasets

    ds = datasets.Dataset.from_dict({"input_ids_chosen": [[1], [2]], "margin": [5.0, 1.0]})
    assert host.apply_margin_policy(ds, None)["margin"] == [5.0, 1.0]
    assert host.apply_margin_policy(ds, True)["margin"] == [5.0, 1.0]
    assert "margin" not in host.apply_margin_policy(ds, False).column_names
    assert host.apply_margin_policy(ds, 0.5)["margin"] == [0.5, 0.5]
    no_margin = ds.remove_columns("margin")
    assert host.apply_margin_policy(no_margin, 2)["margin"] == [2.0, 2.0]


def test_margin_policy_on_groups_sets_the_margin_of_every_pair():
    import datasets
    import pyarrow as pa

    from dataset_formats.groups import group_schema

    rows = [
        {
            "prompt_ids": [1],
            "response_ids": [[2], [3], [4]],
            "pairs": [{"better": 0, "worse": 1, "margin": 2.0}, {"better": 0, "worse": 2, "margin": None}],
            "scores": None,
            "source_row": 0,
        },
        {
            "prompt_ids": [5],
            "response_ids": [[6], [7]],
            "pairs": [{"better": 1, "worse": 0, "margin": 1.0}],
            "scores": [0.0, 1.0],
            "source_row": 1,
        },
    ]
    ds = datasets.Dataset(pa.Table.from_pylist(rows, schema=group_schema()))

    def margins(dataset):
        return [[p["margin"] for p in pairs] for pairs in dataset["pairs"]]

    assert margins(host.apply_margin_policy(ds, True)) == [[2.0, None], [1.0]]
    assert margins(host.apply_margin_policy(ds, False)) == [[None, None], [None]]
    fixed = host.apply_margin_policy(ds, 0.5)
    assert margins(fixed) == [[0.5, 0.5], [0.5]]
    assert "margin" not in fixed.column_names and fixed.features == ds.features
    assert [[(p["better"], p["worse"]) for p in pairs] for pairs in fixed["pairs"]] == [
        [(0, 1), (0, 2)],
        [(1, 0)],
    ]


def test_saved_config_update_is_idempotent(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"num_labels": 1}))
    stats = {"mean": 0.25, "std": 1.5}
    assert host.update_saved_config(tmp_path, stats)
    first = (tmp_path / "config.json").read_text()
    assert host.update_saved_config(tmp_path, stats)
    assert (tmp_path / "config.json").read_text() == first
    assert json.loads(first) == {"num_labels": 1, "reward_mean": 0.25, "reward_std": 1.5}
    assert not host.update_saved_config(tmp_path / "missing", stats)


def test_total_steps_follow_axolotl_batch_settings():
    assert host.RewardPlugin.total_num_steps({"max_steps": 5}, 1000) == 5
    cfg = {"micro_batch_size": 4, "gradient_accumulation_steps": 2, "num_epochs": 2}
    assert host.RewardPlugin.total_num_steps(cfg, 30) == 8  # ceil(30 * 2 / 8)


def _doc_yaml(after_marker: str) -> dict:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(re.escape(after_marker) + r"\n```yaml\n(.*?)\n```", text, re.DOTALL)
    assert match, f"docs/hosts.md has no yaml block after {after_marker!r}"
    return yaml.safe_load(match.group(1))


def test_documented_axolotl_yaml_and_runner_yaml_are_the_same_run():
    """docs/hosts.md shows one run twice: as an Axolotl YAML with the plugin and as a runner YAML."""
    from reward_plugin.hosts.runner import prepare_run
    from reward_plugin.stages import get_stage

    axolotl_cfg = _doc_yaml("<!-- axolotl-yaml -->")
    runner_cfg = _doc_yaml("<!-- axolotl-runner-yaml -->")
    assert axolotl_cfg["plugins"] == [host.PLUGIN_NAME]
    assert {k for k in axolotl_cfg if k.startswith("reward_")} <= set(host.PLUGIN_KEYS)

    via_plugin = get_stage("reward").validate_config(host.stage_section(axolotl_cfg))
    _, via_runner = prepare_run(runner_cfg)
    assert via_plugin.model == via_runner.model
    for key in ("train_data", "eval_data"):
        plugin_sources = [
            (s.paths, s.format or axolotl_cfg["reward_dataset_format"]) for s in getattr(via_plugin, key)
        ]
        runner_sources = [(s.paths, s.format) for s in getattr(via_runner, key)]
        assert plugin_sources == runner_sources
    # The reward settings, written out as the documented run has them, through both paths.
    for args in (via_plugin.args, via_runner.args):
        assert (args.max_length, args.truncation, args.center_rewards_coefficient, args.seed) == (
            1024,
            "left",
            0.01,
            42,
        )
        assert args.output_dir == "outputs/qwen-rm"
    # The training keys Axolotl itself turns into TrainingArguments, and the runner's values.
    assert (
        axolotl_cfg["micro_batch_size"],
        axolotl_cfg["gradient_accumulation_steps"],
        axolotl_cfg["num_epochs"],
        axolotl_cfg["learning_rate"],
        axolotl_cfg["logging_steps"],
    ) == (8, 2, 1, 1e-5, 10)
    runner = via_runner.args
    assert (
        runner.per_device_train_batch_size,
        runner.gradient_accumulation_steps,
        runner.num_train_epochs,
        runner.learning_rate,
        runner.logging_steps,
    ) == (8, 2, 1, 1e-5, 10)


def test_flash_attention_keeps_pairs_packed_through_the_varlen_backend(monkeypatch):
    import importlib.util

    from test_pair_batching import make_model

    from reward_plugin.pairs import backends, resolve_pair_batching

    assert host.stage_settings({"flash_attention": True}) == {"pair_attention": "varlen"}
    assert host.stage_settings({"attn_implementation": "flash_attention_2"}) == {"pair_attention": "varlen"}
    assert host.stage_settings({"flash_attention": True, "reward_pair_attention": "auto"}) == {
        "pair_attention": "auto"
    }
    assert host.stage_settings({"flash_attention": False}) == {}
    # The model Axolotl loads for `flash_attention: true` packs, through flash-attn's varlen function.
    model = make_model("llama")
    model.config._attn_implementation = "flash_attention_2"
    assert resolve_pair_batching("auto", model) == "packed"
    found = importlib.util.find_spec  # flash-attn is not installed here: pretend it is
    monkeypatch.setattr(
        backends.importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "flash_attn" else found(name, *a),
    )
    backend = backends.resolve_pair_attention("varlen", model, "cuda")
    assert backend == backends.AttentionBackend("varlen", "flash_attn_2")
