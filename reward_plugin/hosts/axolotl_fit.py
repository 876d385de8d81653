"""Axolotl configs as users already have them: Axolotl's own reward-model dataset type and chat
template names, and a config written for a GPU machine run on the machine at hand.

Used by :class:`reward_plugin.hosts.axolotl.RewardPlugin` from its ``register`` hook, which Axolotl
calls before it validates the config, so every change here is one warning line instead of an
error from Axolotl's validation or from transformers. Importing this module does not import Axolotl.
"""

from __future__ import annotations

import importlib.util
from collections.abc import MutableMapping
from typing import Any

from .hardware import Machine, detect_machine

#: Axolotl ``datasets[].type`` values -> the dataset-toolkit format that reads the same rows.
AXOLOTL_DATASET_TYPES = {"bradley_terry.chat_template": "axolotl-bt"}

#: 8-bit optimizers (bitsandbytes, CUDA) -> the optimizer used without a GPU.
EIGHT_BIT_OPTIMIZERS = ("adamw_bnb_8bit", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit")

#: Attention kernels that need a GPU and the ``flash_attn`` package.
FLASH_ATTENTION = ("flash_attention_2", "flash_attention_3")


def dataset_format(kind: Any) -> Any:
    """The dataset-toolkit format of an Axolotl ``datasets[].type`` (unchanged when it is not Axolotl's)."""
    return AXOLOTL_DATASET_TYPES.get(kind, kind) if isinstance(kind, str) else kind


def chat_template_notice(cfg: MutableMapping[str, Any]) -> str | None:
    """The line saying which template renders conversations when Axolotl's ``chat_template`` is used."""
    name = cfg.get("chat_template")
    if not name or cfg.get("reward_chat_template"):
        return None
    return (
        f"Axolotl chat_template {name!r}: conversations are rendered with the template Axolotl attaches "
        "to the tokenizer (reward_chat_template unset)"
    )


def _precision(cfg: MutableMapping[str, Any], machine: Machine) -> str | None:
    asked = [key for key in ("bf16", "fp16", "tf32") if cfg.get(key) is True or cfg.get(key) == "auto"]
    if machine.accelerator is not None or not asked:
        return None
    for key in ("bf16", "fp16", "tf32"):
        cfg[key] = False
    # Axolotl loads the weights in the training precision and builds TrainingArguments without
    # `use_cpu`, which transformers needs for bf16 on a CPU: full precision is what runs here.
    return f"no GPU here: the config asks for {', '.join(asked)}; training in fp32 on the CPU"


def _kernels(cfg: MutableMapping[str, Any], machine: Machine) -> list[str]:
    changes = []
    optimizer = cfg.get("optimizer")
    if optimizer in EIGHT_BIT_OPTIMIZERS and machine.accelerator != "cuda":
        cfg["optimizer"] = "adamw_torch"
        changes.append(f"optimizer {optimizer} -> adamw_torch")
    attention = cfg.get("attn_implementation")
    if attention in FLASH_ATTENTION and (
        machine.accelerator != "cuda" or importlib.util.find_spec("flash_attn") is None
    ):
        cfg["attn_implementation"] = "sdpa"
        changes.append(f"attn_implementation {attention} -> sdpa")
    if cfg.get("flash_attention") and machine.accelerator != "cuda":
        cfg["flash_attention"] = False
        changes.append("flash_attention -> false")
    return changes


def fit_axolotl_config(cfg: MutableMapping[str, Any], machine: Machine | None = None) -> list[str]:
    """Adjust an Axolotl config in place so that it runs on this machine.

    Without a GPU: ``bf16``/``fp16``/``tf32`` become fp32 training, 8-bit (bitsandbytes) optimizers
    become ``adamw_torch`` and FlashAttention becomes ``sdpa``; ``dataset_processes`` and
    ``dataloader_num_workers`` above the CPU cores are clamped.

    Args:
        cfg: the Axolotl config (Axolotl's ``DictDefault`` before validation).
        machine: the machine to fit (default: :func:`~reward_plugin.hosts.hardware.detect_machine`).

    Returns:
        The warning lines: one for precision, one for kernels, one for worker counts, one for the
        chat template; only those that apply.
    """
    machine = machine or detect_machine()
    notices = [_precision(cfg, machine)]
    kernels = _kernels(cfg, machine)
    if kernels:
        notices.append(f"not available here ({machine.accelerator or 'no GPU'}): {', '.join(kernels)}")
    clamped = []
    for key in ("dataset_processes", "dataloader_num_workers"):
        value = cfg.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > machine.cores:
            cfg[key] = machine.cores
            clamped.append(f"{key} {value} -> {machine.cores}")
    if clamped:
        notices.append(f"more workers than the {machine.cores} CPU cores here: {', '.join(clamped)}")
    notices.append(chat_template_notice(cfg))
    return [line for line in notices if line]
