"""An Axolotl plugin for benchmarks only: times the training loop and counts what reaches the model.

Listed in the ``plugins:`` of every configuration that ``benchmarks/axolotl_speed.py`` runs (with
and without reward_plugin), so both sides carry the same probe. The loop's clock starts at the end
of the ``AXOLOTL_CLOCK_WARMUP`` first steps and stops when training ends; pairs and input positions
(padding included) are counted per batch from the data collator, warm-up batches left out. The
result goes to the JSON file named by ``AXOLOTL_CLOCK_JSON``.
"""

from __future__ import annotations

import json
import os
import resource
import time

from axolotl.integrations.base import BasePlugin
from transformers import TrainerCallback


class _Counter:
    """Wraps the trainer's collator; records ``(pairs, input positions)`` of each training batch."""

    def __init__(self, collator):
        self.collator = collator
        self.batches: list[tuple[int, int]] = []
        self.active = True

    def __call__(self, examples):
        batch = self.collator(examples)
        if self.active:
            if "packed_input_ids" in batch:  # reward_plugin's packed pairs: one row, no padding
                pairs, positions = len(batch["chosen_index"]), batch["packed_input_ids"].numel()
            elif "input_ids_chosen" in batch:  # reward_plugin's standard layout
                pairs = batch["input_ids_chosen"].shape[0]
                positions = batch["input_ids_chosen"].numel() + batch["input_ids_rejected"].numel()
            else:  # TRL's DataCollatorForPreference: chosen rows, then rejected rows
                pairs, positions = batch["input_ids"].shape[0] // 2, batch["input_ids"].numel()
            self.batches.append((pairs, positions))
        return batch


class _Clock(TrainerCallback):
    def __init__(self, counter: _Counter, warmup: int, path: str):
        self.counter, self.warmup, self.path = counter, warmup, path
        self.start = self.begin = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.begin = self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        end = time.perf_counter()
        self.counter.active = False
        timed = self.counter.batches[self.warmup : state.global_step]
        result = {
            "loop_seconds": end - self.start,
            "timed_steps": state.global_step - self.warmup,
            "pairs": sum(b[0] for b in timed),
            "positions": sum(b[1] for b in timed),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        if args.process_index == 0:
            with open(self.path, "w", encoding="utf-8") as fh:
                json.dump(result, fh)


class ClockPlugin(BasePlugin):
    """Adds the loop clock and the batch counter to whatever trainer Axolotl builds."""

    def __init__(self):
        super().__init__()
        self._counter: _Counter | None = None

    def post_trainer_create(self, cfg, trainer):
        self._counter = _Counter(trainer.data_collator)
        trainer.data_collator = self._counter

    def add_callbacks_post_trainer(self, cfg, trainer):
        if self._counter is None:
            self._counter = _Counter(trainer.data_collator)
            trainer.data_collator = self._counter
        warmup = int(os.environ.get("AXOLOTL_CLOCK_WARMUP", "1"))
        return [_Clock(self._counter, warmup, os.environ["AXOLOTL_CLOCK_JSON"])]
