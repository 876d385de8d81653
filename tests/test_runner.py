"""The runner's config handling: YAML loading, --KEY VALUE overrides, stage resolution, clear
errors, and the LLaMA-Factory ``stage: rm`` mapping (no training here; see test_train_cli.py)."""

from __future__ import annotations

import pytest

from reward_plugin.cli import main
from reward_plugin.commands import split_train_argv
from reward_plugin.errors import ConfigError, UnknownStageError
from reward_plugin.hosts.runner import (
    BUNDLED_SAMPLE,
    apply_overrides,
    default_config,
    drop_conflicting_keys,
    load_config,
    parse_overrides,
    prepare_run,
)

# --------------------------------------------------------------------------- overrides


def test_parse_overrides_reads_yaml_scalars_lists_flags_and_nested_keys():
    tokens = ["--learning-rate", "1e-4", "--max_steps", "7", "--report_to", "none", "tensorboard"]
    tokens += ["--bf16", "--peft.r", "16", "--peft.target_modules=all-linear", "--name", "null"]
    assert parse_overrides(tokens) == {
        "learning_rate": "1e-4",  # YAML 1.1 reads 1e-4 as text: the RewardConfig field parser makes it a float
        "max_steps": 7,
        "report_to": ["none", "tensorboard"],
        "bf16": True,
        "peft": {"r": 16, "target_modules": "all-linear"},
        "name": None,
    }


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (["stray"], "unexpected argument 'stray'"),
        (["--"], "unexpected argument '--'"),
        (["--a..b", "1"], "bad override key '--a..b'"),
        (["--peft", "3", "--peft.r", "1"], "conflicts with an earlier override of 'peft'"),
    ],
)
def test_parse_overrides_errors(tokens, message):
    with pytest.raises(ConfigError, match=message):
        parse_overrides(tokens)


def test_apply_overrides_merges_nested_mappings_without_touching_the_input():
    section = {"peft": {"r": 8, "lora_alpha": 16}, "max_steps": 10}
    merged = apply_overrides(section, {"peft": {"r": 4}, "max_steps": 2, "seed": 3})
    assert merged == {"peft": {"r": 4, "lora_alpha": 16}, "max_steps": 2, "seed": 3}
    assert section == {"peft": {"r": 8, "lora_alpha": 16}, "max_steps": 10}
    with pytest.raises(ConfigError, match=r"--max_steps.x: `max_steps` is 10 in the config, not a mapping"):
        apply_overrides(section, {"max_steps": {"x": 1}})


def test_split_train_argv_separates_config_resume_and_overrides():
    assert split_train_argv(["cfg.yaml", "--max_steps", "3", "--resume"]) == (
        ["cfg.yaml", "--resume"],
        ["--max_steps", "3"],
    )
    assert split_train_argv(["--resume", "ckpt", "--lr", "-1e-3"]) == (
        ["--resume", "ckpt"],
        ["--lr", "-1e-3"],
    )
    assert split_train_argv(["--resume", "run.yaml"]) == (
        ["run.yaml", "--resume"],
        [],
    )  # a YAML is the config


# ------------------------------------------------------------------------------ config


def test_default_config_validates_and_points_at_the_bundled_sample(tmp_path):
    stage, cfg = prepare_run(
        None, ["--output_dir", str(tmp_path), "--max_steps", "2", "--learning_rate", "1e-4"]
    )
    assert stage.name == "reward"
    assert cfg.train_data[0].paths == [str(BUNDLED_SAMPLE)] and cfg.train_data[0].format == "hh-rlhf"
    assert cfg.args.max_steps == 2 and cfg.args.output_dir == str(tmp_path) and cfg.args.learning_rate == 1e-4
    assert cfg.args.trust_remote_code is False
    assert default_config()["model"].endswith(cfg.model.split("/")[-1])


def test_command_line_keys_replace_the_conflicting_keys_of_the_config():
    section = {
        "train_data": {"path": "a.jsonl", "format": "hh-rlhf"},
        "eval_size": 0.25,
        "warmup_steps": 0.1,
        "learning_rate": 1e-4,
    }
    overrides = {"eval_data": "b.jsonl", "train_data": {"dataset_info": "d.json", "dataset": "x"}}
    kept, notices = drop_conflicting_keys(section, overrides, "cfg.yaml")
    assert kept == {"train_data": {}, "warmup_steps": 0.1, "learning_rate": 1e-4}
    assert notices == [
        (
            "cfg.yaml: --eval_data replaces `eval_size: 0.25`; --train_data.dataset_info replaces "
            "`train_data.path: 'a.jsonl'`; --train_data.dataset_info replaces `train_data.format: 'hh-rlhf'`"
        )
    ]
    assert section["eval_size"] == 0.25  # the input is not modified
    # Both keys of a pair given on the command line: nothing is dropped (the stage names the clash).
    assert drop_conflicting_keys(section, {"eval_data": "b", "eval_size": 2}, "x") == (section, [])


def test_yaml_errors_name_the_file_and_position(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: x\ntrain_data: [a, b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid YAML at line \d+, column \d+"):
        load_config(bad)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="must be a mapping of keys to values, got a list"):
        load_config(listed)


def test_unknown_key_suggests_the_close_one_and_names_the_file(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: m\ntrain_data: d.jsonl\nlearning_rte: 1e-5\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        prepare_run(cfg)
    assert str(info.value).startswith(f"{cfg}: unknown key 'learning_rte' in the reward stage config")
    assert "did you mean 'learning_rate'" in str(info.value)


def test_yaml_no_means_the_choice_no():
    # YAML 1.1 reads a bare `no` as false, in files and in --KEY VALUE overrides alike
    _, cfg = prepare_run(
        {"model": "m", "train_data": "d.jsonl", "save_strategy": False}, ["--eval_strategy", "no"]
    )
    assert (cfg.args.save_strategy, cfg.args.eval_strategy) == ("no", "no")


def test_bad_values_are_config_errors_naming_the_key():
    base = {"model": "m", "train_data": "d.jsonl"}
    with pytest.raises(ConfigError, match="`learning_rate`.*'fast'"):
        prepare_run({**base, "learning_rate": "fast"})
    with pytest.raises(ConfigError, match="`eval_size` as a fraction must be in"):
        prepare_run({**base, "eval_size": 1.5})
    with pytest.raises(ConfigError, match="`model` is required"):
        prepare_run({"train_data": "d.jsonl"})
    with pytest.raises(ConfigError, match="give `eval_data` or `eval_size`, not both"):
        prepare_run({**base, "eval_size": 0.1, "eval_data": "e.jsonl"})
    with pytest.raises(ConfigError, match="`peft.peft_type` 'NOPE' is not a peft method"):
        prepare_run({**base, "peft": {"peft_type": "nope"}})


def test_unknown_stage_lists_the_registered_ones():
    with pytest.raises(UnknownStageError) as info:
        prepare_run({"stage": "ppo", "model": "m", "train_data": "d"})
    assert "'ppo'" in str(info.value) and "reward" in str(info.value)


def test_cli_prints_one_error_line_and_exits_1(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("stage: nonsense\n", encoding="utf-8")
    assert main(["train", str(cfg)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "nonsense" in err[0]
    assert main(["train", str(cfg), "stray-argument"]) == 1
    assert "unexpected argument 'stray-argument'" in capsys.readouterr().err


def test_train_help_says_remote_code_is_off(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--KEY VALUE" in out and "embedded default" in out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "trust_remote_code is off" in capsys.readouterr().out


# ---------------------------------------------------------------------- LLaMA-Factory


LLAMAFACTORY_YAML = """\
### model
model_name_or_path: {model}
trust_remote_code: false

### method
stage: rm
do_train: true
finetuning_type: lora
lora_rank: 4
lora_target: all

### dataset
dataset: dpo_en_demo
dataset_dir: {dataset_dir}
template: chatml
cutoff_len: 96
max_samples: 12
overwrite_cache: true
preprocessing_num_workers: 1

### output
output_dir: {output_dir}
logging_steps: 1
plot_loss: true

### train
per_device_train_batch_size: 2
gradient_accumulation_steps: 1
learning_rate: 1.0e-4
num_train_epochs: 1.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: false
"""


def llamafactory_dir(tmp_path):
    import json
    import shutil

    from conftest import LLAMAFACTORY_DEMO

    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(LLAMAFACTORY_DEMO, data / "dpo_en_demo.json")
    info = {
        "dpo_en_demo": {
            "file_name": "dpo_en_demo.json",
            "ranking": True,
            "formatting": "sharegpt",
            "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
        }
    }
    (data / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    return data


def test_llamafactory_rm_yaml_maps_onto_the_reward_stage(tmp_path, caplog):
    data = llamafactory_dir(tmp_path)
    cfg_file = tmp_path / "llamafactory_rm.yaml"
    cfg_file.write_text(
        LLAMAFACTORY_YAML.format(model="some/model", dataset_dir=data, output_dir=tmp_path / "out"),
        encoding="utf-8",
    )
    stage, cfg = prepare_run(cfg_file)
    assert stage.name == "reward"
    assert cfg.model == "some/model"
    (source,) = cfg.train_data
    assert source.paths == [str(data / "dpo_en_demo.json")]
    assert (source.format, source.max_samples) == ("llamafactory", 12)
    assert source.options["formatting"] == "sharegpt"
    assert cfg.peft["r"] == 4 and cfg.peft["lora_alpha"] == 8 and cfg.peft["target_modules"] == "all-linear"
    args = cfg.args
    assert (args.max_length, args.chat_template, args.learning_rate) == (96, "chatml", 1e-4)
    assert args.warmup_steps == 0.1 and args.lr_scheduler_type == "cosine"
    assert args.per_device_train_batch_size == 2 and args.dataset_num_proc == 1
    assert any("plot_loss" in r.message for r in caplog.records)


def test_llamafactory_unsupported_keys_are_all_named(tmp_path):
    section = {
        "stage": "rm",
        "model_name_or_path": "m",
        "dataset": "d",
        "pissa_init": True,
        "freeze_vision_tower": 1,
    }
    with pytest.raises(
        ConfigError, match=r"unsupported keys 'freeze_vision_tower', 'pissa_init'; remove them"
    ):
        prepare_run(section)
    with pytest.raises(ConfigError, match="`finetuning_type: freeze` is not supported"):
        prepare_run({"stage": "rm", "model_name_or_path": "m", "dataset": "d", "finetuning_type": "freeze"})


def test_llamafactory_notices_are_grouped_and_every_template_resolves():
    from reward_plugin.hosts.llamafactory import map_llamafactory

    section = {"stage": "rm", "model_name_or_path": "m", "dataset": "d", "plot_loss": True}
    section.update(overwrite_cache=True, overwrite_output_dir=True, template="qwen")
    mapping = map_llamafactory(section)
    assert mapping.section["chat_template"] == "qwen2.5"
    assert len(mapping.notices) == 2
    ignored, template = mapping.notices
    assert ignored.startswith("LLaMA-Factory keys without effect here: overwrite_cache (")
    assert "; overwrite_output_dir (" in ignored and "; plot_loss (" in ignored
    assert template == "LLaMA-Factory template 'qwen': using the shipped 'qwen2.5' template (same format)"
    mapping = map_llamafactory({**section, "template": "cohere"})
    assert mapping.section["chat_template"] == "tokenizer"
    assert (
        "'cohere': it has no shipped equivalent; using the model tokenizer's own chat template"
        in (mapping.notices[-1])
    )
    assert "chat_template" not in map_llamafactory({**section, "chat_template": "x.jinja"}).notices[-1]


def test_train_check_prints_the_mapped_config_without_training(tmp_path, capsys):
    import yaml

    data = llamafactory_dir(tmp_path)
    cfg_file = tmp_path / "llamafactory_rm.yaml"
    text = LLAMAFACTORY_YAML.format(model="some/model", dataset_dir=data, output_dir=tmp_path / "out")
    cfg_file.write_text(text.replace("bf16: false", "bf16: true\ntf32: true"), encoding="utf-8")
    assert main(["train", str(cfg_file), "--check", "--dataloader_num_workers", "64"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"# {cfg_file}: stage 'reward'; nothing was trained\n")
    shown = yaml.safe_load(out)
    assert shown["model"] == "some/model" and shown["chat_template"] == "chatml"
    assert shown["peft"]["target_modules"] == "all-linear" and shown["max_length"] == 96
    assert shown["use_cpu"] is True and shown["tf32"] is None  # this test machine has no GPU
    assert shown["dataloader_num_workers"] <= 64
    lines = err.strip().splitlines()
    assert lines[0].startswith("LLaMA-Factory keys without effect here: overwrite_cache (")
    assert lines[1] == "LLaMA-Factory template 'chatml': using the shipped 'chatml' template (same format)"
    assert lines[2].startswith("no GPU here: the config asks for bf16, tf32; training in ")
    assert len([line for line in lines if "without effect" in line]) == 1
    assert not (tmp_path / "out").exists()


def test_llamafactory_template_without_equivalent_needs_the_tokenizers_template(
    tmp_path, tiny_llama_dir, capsys
):
    """``template: cohere`` falls back to the tokenizer's template; a tokenizer without one is one error line."""
    data = llamafactory_dir(tmp_path)
    cfg_file = tmp_path / "llamafactory_rm.yaml"
    text = LLAMAFACTORY_YAML.format(model=tiny_llama_dir, dataset_dir=data, output_dir=tmp_path / "out")
    cfg_file.write_text(text.replace("template: chatml", "template: cohere"), encoding="utf-8")
    assert main(["train", str(cfg_file)]) == 1
    err = capsys.readouterr().err
    assert (
        "LLaMA-Factory template 'cohere': it has no shipped equivalent; using the model tokenizer's own"
        in err
    )
    assert err.strip().splitlines()[-1].startswith("error: ") and "has no chat_template" in err
    assert "Traceback" not in err
