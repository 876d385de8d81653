"""Configs written for a GPU machine fit the machine they run on: precision and workers degrade
with one warning line each, and the result is accepted by transformers (no stack of errors)."""

from __future__ import annotations

import pytest

from reward_plugin.hosts.hardware import Machine, detect_machine, fit_to_machine
from reward_plugin.hosts.runner import plan_run

CPU_BF16 = Machine(accelerator=None, bf16_accelerator=False, cpu_bf16=True, cores=2)
CPU_FP32 = Machine(accelerator=None, bf16_accelerator=False, cpu_bf16=False, cores=2)
OLD_GPU = Machine(accelerator="cuda", bf16_accelerator=False, cpu_bf16=False, cores=8)
GPU = Machine(accelerator="cuda", bf16_accelerator=True, cpu_bf16=False, cores=8)


@pytest.mark.parametrize(
    ("machine", "asked", "expected", "line"),
    [
        (CPU_BF16, {"bf16": True}, {"bf16": True, "use_cpu": True}, "training in bf16 on the CPU (native"),
        (
            CPU_FP32,
            {"bf16": True},
            {"bf16": False, "use_cpu": True},
            "training in fp32 on the CPU (this CPU has no",
        ),
        (
            CPU_BF16,
            {"fp16": True, "tf32": True},
            {"bf16": True, "fp16": False, "tf32": None, "use_cpu": True},
            "fp16, tf32",
        ),
        (
            OLD_GPU,
            {"bf16": True},
            {"bf16": False, "fp16": True},
            "this cuda device has no bf16: training in fp16",
        ),
    ],
)
def test_precision_degrades_with_one_line(machine, asked, expected, line):
    fitted, notices = fit_to_machine({"model": "m", **asked}, machine)
    assert {k: fitted[k] for k in expected} == expected
    assert len(notices) == 1 and line in notices[0]


@pytest.mark.parametrize(
    ("machine", "section"),
    [
        (GPU, {"bf16": True, "tf32": True, "dataloader_num_workers": 4}),
        (CPU_FP32, {"bf16": False}),
        (CPU_FP32, {"bf16": True, "use_cpu": True}),  # the CPU chosen on purpose: left alone
        (CPU_BF16, {}),
    ],
)
def test_configs_that_fit_are_left_alone(machine, section):
    assert fit_to_machine(section, machine) == (section, [])


def test_worker_counts_above_the_cores_are_clamped_in_one_line():
    section = {"dataset_num_proc": 16, "dataloader_num_workers": 4}
    fitted, notices = fit_to_machine(
        section, CPU_FP32, names={"dataset_num_proc": "preprocessing_num_workers"}
    )
    assert (fitted["dataset_num_proc"], fitted["dataloader_num_workers"]) == (2, 2)
    assert notices == [
        "more workers than the 2 CPU cores here: preprocessing_num_workers 16 -> 2, dataloader_num_workers 4 -> 2"
    ]
    assert section == {"dataset_num_proc": 16, "dataloader_num_workers": 4}  # the input is not changed


def test_a_gpu_config_validates_on_this_machine():
    """bf16 + tf32 + many workers: transformers refuses these on a CPU box unless fitted first."""
    machine = detect_machine()
    if machine.accelerator is not None:
        pytest.skip("this machine has an accelerator; the degrade path is covered by the fake machines above")
    section = {
        "model": "m",
        "train_data": "d.jsonl",
        "bf16": True,
        "tf32": True,
        "dataloader_num_workers": 999,
    }
    plan = plan_run(section)
    args = plan.config.args
    assert args.use_cpu is True and args.bf16 is machine.cpu_bf16 and not args.tf32
    assert args.dataloader_num_workers == machine.cores
    assert len(plan.notices) == 2 and plan.notices[0].startswith("no GPU here")
