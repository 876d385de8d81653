"""Axolotl configs written for a GPU fit the machine (without Axolotl installed): one warning line
per kind of change, Axolotl's dataset type and chat template mapped."""

from __future__ import annotations

from reward_plugin.hosts.axolotl import data_sources, stage_settings
from reward_plugin.hosts.axolotl_fit import fit_axolotl_config
from reward_plugin.hosts.hardware import Machine

CPU = Machine(accelerator=None, bf16_accelerator=False, cpu_bf16=True, cores=2)
GPU = Machine(accelerator="cuda", bf16_accelerator=True, cpu_bf16=False, cores=8)
EXAMPLE = {  # the GPU settings of Axolotl's examples/qwen2/reward-model.yaml
    "bf16": True,
    "fp16": None,
    "tf32": True,
    "optimizer": "adamw_bnb_8bit",
    "attn_implementation": "flash_attention_2",
    "chat_template": "qwen_25",
    "dataloader_num_workers": 8,
}


def test_a_gpu_config_fits_a_cpu_box_with_one_line_per_kind():
    cfg = dict(EXAMPLE)
    notices = fit_axolotl_config(cfg, CPU)
    assert (cfg["bf16"], cfg["fp16"], cfg["tf32"]) == (False, False, False)
    assert (cfg["optimizer"], cfg["attn_implementation"], cfg["dataloader_num_workers"]) == (
        "adamw_torch",
        "sdpa",
        2,
    )
    assert notices == [
        "no GPU here: the config asks for bf16, tf32; training in fp32 on the CPU",
        (
            "not available here (no GPU): optimizer adamw_bnb_8bit -> adamw_torch, attn_implementation "
            "flash_attention_2 -> sdpa"
        ),
        "more workers than the 2 CPU cores here: dataloader_num_workers 8 -> 2",
        (
            "Axolotl chat_template 'qwen_25': conversations are rendered with the template Axolotl attaches to the "
            "tokenizer (reward_chat_template unset)"
        ),
    ]


def test_on_a_gpu_only_missing_kernels_change():
    cfg = dict(EXAMPLE)
    notices = fit_axolotl_config(cfg, GPU)
    assert cfg["bf16"] is True and cfg["tf32"] is True and cfg["optimizer"] == "adamw_bnb_8bit"
    assert all("no GPU" not in line for line in notices)


def test_axolotl_dataset_type_and_chat_template_map_to_ours():
    cfg = {
        "datasets": [{"path": "pairs.jsonl", "type": "bradley_terry.chat_template"}],
        "chat_template": "qwen_25",
    }
    (source,) = data_sources(cfg)
    assert source["format"] == "axolotl-bt"
    assert stage_settings(cfg)["chat_template"] == "tokenizer"
    assert stage_settings({**cfg, "reward_chat_template": "chatml"})["chat_template"] == "chatml"
    assert fit_axolotl_config({**cfg, "reward_chat_template": "chatml"}, GPU) == []
