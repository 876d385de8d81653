"""An Axolotl plugin for benchmarks only: times the training loop and counts what reaches the model.

Listed in the ``plugins:`` of every configuration that ``benchmarks/axolotl_speed.py`` runs (with
and without reward_plugin), so both sides carry the same probe. It counts at the model, not at the
collator (Axolotl's data loader may call another collator object than ``trainer.data_collator``):

* the trainer's ``compute_loss`` is wrapped on the instance (``add_callbacks_post_trainer``, the
  hook that receives the trainer Axolotl trains); each training call records its optimizer step,
  the pairs of its batch and the real tokens of its batch (attention-mask sum for padded rows,
  non-padding positions of a packed batch);
* a forward pre-hook on the model records the input positions the model is given (``numel`` of
  its ``input_ids``, padding included) and the number of forwards, for the calls made inside
  ``compute_loss``.

The loop's clock starts at the end of the ``AXOLOTL_CLOCK_WARMUP`` first optimizer steps and stops
at the end of the last one; counts come from the same timed steps. The result (and a per-step
breakdown) goes to the JSON file named by ``AXOLOTL_CLOCK_JSON``.
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import time
from typing import Any

import torch
from axolotl.integrations.base import BasePlugin
from transformers import TrainerCallback


def batch_counts(inputs: dict[str, Any]) -> tuple[int, int]:
    """``(pairs, real tokens)`` of one training batch, in any layout the two runs use.

    Layouts: reward_plugin's packed/prefix-shared pairs (``packed_*`` keys; padding has pair id
    -1), reward_plugin's standard pairs (``input_ids_chosen``/``input_ids_rejected`` and their
    masks), and TRL's ``DataCollatorForPreference`` that Axolotl's own reward trainer uses
    (``input_ids``: the chosen rows, then the rejected rows).
    """
    if "packed_input_ids" in inputs:
        return len(inputs["chosen_index"]), int((inputs["packed_pair_ids"] >= 0).sum())
    if "input_ids_chosen" in inputs:
        real = inputs["attention_mask_chosen"].sum() + inputs["attention_mask_rejected"].sum()
        return inputs["input_ids_chosen"].shape[0], int(real)
    if "input_ids" in inputs:
        return inputs["input_ids"].shape[0] // 2, int(inputs["attention_mask"].sum())
    raise KeyError(f"the probe knows no batch with the keys {sorted(inputs)}")


class _Counter:
    """Per training ``compute_loss`` call: step, pairs, real tokens, input positions, forwards."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.calls: list[dict[str, int]] = []
        self._current: dict[str, int] | None = None
        original = trainer.compute_loss

        def compute_loss(model, inputs, *args, **kwargs):
            if not model.training:
                return original(model, inputs, *args, **kwargs)
            pairs, real = batch_counts(inputs)
            self._current = {
                "step": trainer.state.global_step,
                "pairs": pairs,
                "real_tokens": real,
                "positions": 0,
                "forwards": 0,
            }
            try:
                return original(model, inputs, *args, **kwargs)
            finally:
                self.calls.append(self._current)
                self._current = None

        trainer.compute_loss = compute_loss
        trainer.model.register_forward_pre_hook(self._forward, with_kwargs=True)

    def _forward(self, module, args, kwargs):
        if self._current is not None:
            ids = kwargs.get("input_ids", args[0] if args else None)
            if isinstance(ids, torch.Tensor):
                self._current["positions"] += ids.numel()
            self._current["forwards"] += 1


class _Clock(TrainerCallback):
    def __init__(self, counter: _Counter, warmup: int, path: str):
        self.counter, self.warmup, self.path = counter, warmup, path
        self.step_ends: list[float] = []
        self.begin = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.step_ends.append(time.perf_counter())

    def on_train_end(self, args, state, control, **kwargs):
        ends = [self.begin, *self.step_ends]
        if len(self.step_ends) <= self.warmup:
            raise RuntimeError(
                f"the probe saw {len(self.step_ends)} steps, not more than the {self.warmup} warm-up steps"
            )
        timed = [c for c in self.counter.calls if c["step"] >= self.warmup]
        result = {
            "loop_seconds": ends[-1] - ends[self.warmup],
            "warmup_seconds": ends[self.warmup] - ends[0],
            "step_seconds": [b - a for a, b in itertools.pairwise(ends)],
            "timed_steps": len(self.step_ends) - self.warmup,
            "batches": len(timed),
            "forwards": sum(c["forwards"] for c in timed),
            "pairs": sum(c["pairs"] for c in timed),
            "positions": sum(c["positions"] for c in timed),
            "real_tokens": sum(c["real_tokens"] for c in timed),
            "per_call": self.counter.calls,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "trainer": type(self.counter.trainer).__name__,
            "model_dtype": str(next(self.counter.trainer.model.parameters()).dtype),
        }
        if args.process_index == 0:
            with open(self.path, "w", encoding="utf-8") as fh:
                json.dump(result, fh)


class ClockPlugin(BasePlugin):
    """Adds the loop clock and the counters to whatever trainer Axolotl builds."""

    def add_callbacks_post_trainer(self, cfg, trainer):
        warmup = int(os.environ.get("AXOLOTL_CLOCK_WARMUP", "1"))
        return [_Clock(_Counter(trainer), warmup, os.environ["AXOLOTL_CLOCK_JSON"])]
