"""Fit a config written for a GPU machine to the machine it runs on.

Host configs (LLaMA-Factory's and Axolotl's examples) ask for ``bf16: true``, ``tf32: true`` and
16 preprocessing workers. On a CPU box transformers refuses such arguments with a stack of errors;
here they degrade instead, each kind with one warning line: mixed precision becomes bf16 on the
CPU where the CPU computes bf16 natively (else fp32) and ``use_cpu`` is set; worker counts above
the number of CPU cores are clamped to it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Config keys that start worker processes, clamped to the number of CPU cores.
WORKER_KEYS = ("dataset_num_proc", "dataloader_num_workers")


@dataclass(frozen=True)
class Machine:
    """What the run can use.

    Attributes:
        accelerator: the name of the accelerator torch sees (``cuda``, ``xpu``, ``mps``, ...), or None.
        bf16_accelerator: the accelerator computes bf16.
        cpu_bf16: the CPU computes bf16 natively (AVX512-BF16 / AMX).
        cores: CPU cores this process may use.
    """

    accelerator: str | None
    bf16_accelerator: bool
    cpu_bf16: bool
    cores: int


def detect_machine() -> Machine:
    """The accelerator, bf16 support and CPU cores of this machine."""
    import torch

    from ..config import cpu_has_native_bf16

    accelerator, bf16_accelerator = None, False
    if torch.cuda.is_available():
        accelerator, bf16_accelerator = "cuda", torch.cuda.is_bf16_supported()
    elif getattr(torch, "accelerator", None) is not None and torch.accelerator.is_available():
        accelerator, bf16_accelerator = str(torch.accelerator.current_accelerator().type), True
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return Machine(accelerator, bf16_accelerator, cpu_has_native_bf16(), cores)


def _precision(section: dict[str, Any], machine: Machine) -> str | None:
    """Degrade bf16/fp16/tf32 in ``section`` in place; the warning line, or None when nothing changed."""
    asked = [key for key in ("bf16", "fp16", "tf32") if section.get(key) is True]
    if machine.accelerator is not None:
        if section.get("bf16") is True and not machine.bf16_accelerator:
            section["bf16"], section["fp16"] = False, True
            return f"this {machine.accelerator} device has no bf16: training in fp16 instead"
        return None
    if not asked or section.get("use_cpu") is True:
        return None  # nothing asked for, or the config already chose the CPU knowingly
    for key in asked:
        section[key] = False
    if section.get("tf32") is False:
        section["tf32"] = None
    mixed = {"bf16", "fp16"} & set(asked)
    if mixed and machine.cpu_bf16:
        section["bf16"] = True
        what = "bf16 on the CPU (native on this CPU)"
    else:
        what = "fp32 on the CPU" + (" (this CPU has no native bf16)" if mixed else "")
    section["use_cpu"] = True
    return f"no GPU here: the config asks for {', '.join(asked)}; training in {what}, `use_cpu` set"


def _workers(section: dict[str, Any], machine: Machine, names: Mapping[str, str]) -> str | None:
    clamped = []
    for key in WORKER_KEYS:
        value = section.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > machine.cores:
            section[key] = machine.cores
            clamped.append(f"{names.get(key, key)} {value} -> {machine.cores}")
    if not clamped:
        return None
    return f"more workers than the {machine.cores} CPU cores here: {', '.join(clamped)}"


def fit_to_machine(
    section: Mapping[str, Any], machine: Machine | None = None, names: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """A copy of a ``reward`` stage config that runs on this machine, and the warning lines.

    Args:
        section: the stage config (RewardConfig fields among its keys).
        machine: the machine to fit (default: :func:`detect_machine`).
        names: how the config file spelled a key (``dataset_num_proc`` ->
            ``preprocessing_num_workers`` in a LLaMA-Factory YAML), for the warnings.

    Returns:
        The adjusted config and at most two warning lines (precision/device, worker counts).
    """
    machine = machine or detect_machine()
    out = dict(section)
    notices = [_precision(out, machine), _workers(out, machine, names or {})]
    return out, [line for line in notices if line]
