"""`RewardConfig`: the training arguments of pairwise reward-model training."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, ClassVar

from transformers import TrainingArguments

from dataset_formats.on_error import DEFAULT_ON_ERROR, ON_ERROR_CHOICES

from .errors import ConfigError
from .loss import GROUP_LOSSES

#: Values of ``RewardConfig.pair_batching``.
PAIR_BATCHING_MODES = ("standard", "prefix_shared", "packed", "auto")
#: Values of ``RewardConfig.pair_attention``.
PAIR_ATTENTION_MODES = ("auto", "segments", "mask", "varlen", "flex")
#: Values of ``RewardConfig.truncation``.
TRUNCATION_SIDES = ("left", "right")

_HAS_ACTIVATION_CHECKPOINTING = "activation_checkpointing" in {
    f.name for f in dataclasses.fields(TrainingArguments)
}


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX), read from ``cpuinfo``.

    Emulated bf16 (plain AVX512 or AVX2) is slower than fp32, so only native support counts.

    Args:
        cpuinfo: the file to read the CPU flags from (Linux's ``/proc/cpuinfo``; missing: False).
    """
    try:
        with open(cpuinfo, encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        return False
    return False


def _resolve_bf16_default() -> tuple[bool, bool]:
    """``(bf16, use_cpu)`` for ``bf16=None``: bf16 where the hardware runs it natively, else fp32."""
    import torch
    from transformers.utils import is_torch_bf16_gpu_available

    accelerator = getattr(torch, "accelerator", None)
    has_accelerator = accelerator.is_available() if accelerator is not None else torch.cuda.is_available()
    if has_accelerator:
        return bool(is_torch_bf16_gpu_available()), False
    # A CPU-only machine: transformers only accepts bf16 there together with ``use_cpu=True``.
    native = cpu_has_native_bf16()
    return native, native


@dataclass
class RewardConfig(TrainingArguments):
    r"""Configuration of :class:`~reward_plugin.RewardTrainer`.

    Only the reward-specific parameters are listed here; every other field is a
    :class:`transformers.TrainingArguments` field. ``HfArgumentParser(RewardConfig)`` turns all of
    them into command-line flags and YAML keys.

    Parameters that control the model:
        model_init_kwargs: keyword arguments for ``AutoModelForSequenceClassification.from_pretrained``
            when the trainer gets a model name or path (``num_labels=1`` is always set).
        trust_remote_code: allow models and tokenizers that ship their own Python code.
        disable_dropout: set every dropout probability to 0 (reward training is more stable without it,
            and training runs become reproducible).

    Parameters that control the data:
        max_length: cut sequences longer than this many tokens (``None``: never cut).
        truncation: the side cut when a sequence is too long: ``"left"`` keeps the end of the
            conversation, where chosen and rejected differ, ``"right"`` keeps the beginning.
        dataset_format: the dataset-toolkit format of text-level data, or ``"auto"`` to detect it.
        dataset_format_options: options of that format (``reward-plugin formats`` lists them).
        dataset_on_error: ``"raise"`` (default, as everywhere in the project) stops at the first
            text row the toolkit rejects; ``"skip"`` drops such rows (counted in a warning).
        chat_template: chat template for conversational text data: a bundled template name
            (``chatml``, ``llama3``, ...), a path to a ``.jinja`` file, or ``None`` for the tokenizer's own.
        dataset_num_proc: worker processes for converting raw data files (runner ``train_data``) and for
            ``Dataset.map`` over TRL id columns; in-memory text rows convert in the main process.
        pad_to_multiple_of: pad batch lengths up to a multiple of this value.
        group_by_length: batch pairs of similar length (seeded) to cut padding.
        pair_batching: how a pair is laid out for the forward pass: ``"standard"`` (chosen and rejected
            as separate rows of one batch), ``"prefix_shared"`` (one row ``[shared prompt | chosen tail |
            rejected tail]`` per pair), ``"packed"`` (several such pairs per row) or ``"auto"`` (default:
            ``packed`` where the model supports it exactly, else ``standard``); see
            :mod:`reward_plugin.pairs`.
        pair_attention: how the prefix-shared/packed layouts attend: ``"auto"`` (default: the fastest
            exact backend for the machine, see :mod:`reward_plugin.pairs.backends`), ``"segments"``
            (each pair block's attention as its own small calls, so cost grows with the pairs, not the
            square of the row, and a packed batch is one padding-free row; sdpa/eager models) or
            ``"mask"`` (one dense 4D mask per row; a flex-attention ``BlockMask`` under
            ``flex_attention``, which segments also fall back to), ``"varlen"`` (one variable-length
            kernel call per layer for the whole batch) or ``"flex"`` (flex attention over the same
            sequences). All give the same rewards.

    Parameters that control the training:
        center_rewards_coefficient: weight of the ``mean((r_chosen + r_rejected)^2)`` term that keeps
            rewards centred on zero (Eisenstein et al. 2023 recommend 0.01); ``None`` disables it.
        group_loss: the loss over a grouped table's groups (K responses per prompt, see
            ``docs/groups.md``): ``"bradley_terry"`` (default: the pairwise loss over each group's
            pairs, equal to training on the expanded pairs), ``"plackett_luce"`` (the listwise
            likelihood of each group's ranking by its scores) or ``"best_vs_rest"`` (the top-scored
            responses against the rest, a softmax cross-entropy). Pair tables always use the pairwise loss.
        tie_strength: Davidson's tie parameter ``nu`` of the tie-aware loss, used when the data has a
            ``tie`` column (``convert --ties tie``); None (default) takes it from the train data's tie
            fraction (:mod:`reward_plugin.ties`).
        learn_tie_strength: learn ``nu`` with the model: from ``tie_strength`` (or the data's value), after
            each training batch it becomes the maximum-likelihood ``nu`` of the last 2,048 pairs the
            training forwards scored; logged as ``tie_strength`` and saved in the model config. Needs a
            train table with a ``tie`` column.
        save_reward_stats: after ``train()``, save the mean/std of the model's rewards to
            ``reward_stats.json`` and the model config: from the final evaluation of the eval set, else
            from the last 512 pairs the training forwards scored (no extra pass).
        reward_stats_pass: compute those statistics without an eval set from a separate pass over up to
            512 train pairs with the final weights, instead of from the training forwards.
        save_final_model: after ``train()``, save the final model with its tokenizer, reward statistics
            and model card into ``output_dir``.

    Defaults that differ from ``TrainingArguments``: ``gradient_checkpointing=True``,
    ``logging_steps=10``, ``remove_unused_columns=False`` and ``bf16=None`` ("auto").

    Precision: ``bf16=None`` picks bfloat16 mixed precision where the hardware computes it natively
    (a bf16-capable GPU, or a CPU with AVX512-BF16/AMX, where it also sets ``use_cpu=True`` because
    transformers only accepts bf16 on CPU that way) and fp32 everywhere else. On this project's
    AVX512-BF16 CPU a MiniLM-L6 training step (16 x 192 tokens) takes 0.6-0.8 s in bf16 against
    1.4 s in fp32; on CPUs that only emulate bf16 it would be slower than fp32, hence the check.
    Set ``bf16=False`` explicitly for bit-for-bit comparisons (the TRL parity test does).
    """

    _VALID_DICT_FIELDS: ClassVar[list[str]] = [
        *TrainingArguments._VALID_DICT_FIELDS,
        "model_init_kwargs",
        "dataset_format_options",
    ]

    # --- TrainingArguments fields with different defaults ---
    logging_steps: float = field(
        default=10,
        metadata={
            "help": "Log every X update steps (an integer, or a float in [0,1) as a ratio of total steps)."
        },
    )
    gradient_checkpointing: bool | None = field(
        default=True,
        metadata={
            "help": "Recompute activations in the backward pass to save memory (slower per step).",
        },
    )
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "bfloat16 mixed precision. None (default) = on where the hardware computes bf16 natively "
            "(bf16 GPU, or AVX512-BF16/AMX CPU), fp32 elsewhere."
        },
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={
            "help": "Drop dataset columns the trainer does not read (the pair columns are always kept)."
        },
    )

    # --- the model ---
    model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments (a dict or JSON string) for AutoModelForSequenceClassification.from_pretrained "
            "when the model is given as a name or path; num_labels=1 is always set."
        },
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Allow loading models and tokenizers that ship custom Python code."},
    )
    disable_dropout: bool = field(
        default=True,
        metadata={"help": "Set every dropout probability of the model to 0."},
    )

    # --- the data ---
    max_length: int | None = field(
        default=None,
        metadata={"help": "Cut sequences longer than this many tokens (None: never cut)."},
    )
    truncation: str = field(
        default="left",
        metadata={
            "help": "Side cut from a too-long sequence: 'left' keeps the end of the conversation (where chosen "
            "and rejected differ), 'right' keeps its beginning.",
            "choices": list(TRUNCATION_SIDES),
        },
    )
    dataset_format: str = field(
        default="auto",
        metadata={
            "help": "Dataset-toolkit format of text-level data (see `reward-plugin formats`), or 'auto' to detect "
            "it. Ignored for tokenized data."
        },
    )
    dataset_format_options: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Options of the dataset-toolkit format (a dict or JSON string), e.g. "
            '{"allow_empty_response": true}; see `reward-plugin formats`.'
        },
    )
    dataset_on_error: str = field(
        default=DEFAULT_ON_ERROR,
        metadata={
            "help": "What a text row the toolkit cannot read does: 'raise' (default) stops with the row's "
            "error, 'skip' drops it (a warning counts the rows dropped, by reason).",
            "choices": list(ON_ERROR_CHOICES),
        },
    )
    chat_template: str | None = field(
        default=None,
        metadata={
            "help": "Chat template for conversational text data: a bundled template name (chatml, llama3, ...), "
            "a path to a .jinja file, or None for the tokenizer's own template."
        },
    )
    dataset_num_proc: int | None = field(
        default=None,
        metadata={"help": "Number of processes used to prepare the datasets."},
    )
    pad_to_multiple_of: int | None = field(
        default=None,
        metadata={"help": "Pad each batch's sequence length up to a multiple of this value."},
    )
    group_by_length: bool = field(
        default=False,
        metadata={
            "help": "Batch pairs of similar length together (seeded by `seed`/`data_seed`) to reduce padding."
        },
    )
    pair_batching: str = field(
        default="auto",
        metadata={
            "help": "How pairs are laid out for the forward pass: 'standard' (chosen and rejected as separate "
            "rows), 'prefix_shared' (one row per pair, the shared prompt computed once), 'packed' (several "
            "prefix-shared pairs per row) or 'auto' (packed for Llama/Qwen2/Mistral/Gemma/GPT-2 decoders with "
            "sdpa/eager/flex attention, standard otherwise). All give the same rewards.",
            "choices": list(PAIR_BATCHING_MODES),
        },
    )
    pair_attention: str = field(
        default="auto",
        metadata={
            "help": "Attention of the prefix_shared/packed layouts: 'auto' (default: segments on CPU, varlen on "
            "CUDA and for flash-attention models), 'segments' (each pair block attends on its "
            "own, no dense mask; packed batches become one padding-free row; used with sdpa/eager attention) or "
            "'mask' (a dense 4D mask per row, or a flex-attention BlockMask), 'varlen' (one variable-length kernel call per layer) or 'flex' (flex attention "
            "over the same sequences). All give the same rewards.",
            "choices": list(PAIR_ATTENTION_MODES),
        },
    )

    # --- the training ---
    center_rewards_coefficient: float | None = field(
        default=None,
        metadata={
            "help": "Weight of the term mean((r_chosen + r_rejected)^2) that keeps rewards centred on zero "
            "(0.01 is recommended); None disables it."
        },
    )
    group_loss: str = field(
        default="bradley_terry",
        metadata={
            "help": "Loss over the groups of a grouped table: 'bradley_terry' (all pairs of a group, with "
            "margins; equal to the expanded pairs), 'plackett_luce' (listwise, the ranking by the scores) or "
            "'best_vs_rest' (the best responses against the rest, softmax cross-entropy).",
            "choices": list(GROUP_LOSSES),
        },
    )
    tie_strength: float | None = field(
        default=None,
        metadata={
            "help": "Davidson tie parameter nu (> 0) of the tie-aware loss for data with a `tie` column; None "
            "matches the train data's tie fraction."
        },
    )
    learn_tie_strength: bool = field(
        default=False,
        metadata={
            "help": "Learn the Davidson tie parameter nu with the model: starting from tie_strength (or the data's "
            "value), after each training batch it is the maximum-likelihood nu of the last 2,048 training pairs. "
            "Logged as tie_strength and saved in the model config. Needs a train table with a `tie` column."
        },
    )
    save_final_model: bool = field(
        default=True,
        metadata={
            "help": "At the end of train(), save the final model, tokenizer, reward_stats.json and the model card "
            "README.md into output_dir, so it loads with AutoModelForSequenceClassification.from_pretrained."
        },
    )
    save_reward_stats: bool = field(
        default=True,
        metadata={
            "help": "After training, save the mean/std of the rewards to reward_stats.json and to the model "
            "config (reward_mean, reward_std): from the final evaluation of the eval set, else from the last 512 "
            "pairs the training forwards scored (no extra pass)."
        },
    )
    reward_stats_pass: bool = field(
        default=False,
        metadata={
            "help": "Without an eval set, compute the reward statistics from a separate scoring pass over up to "
            "512 train pairs with the final weights, instead of from the rewards the training forwards "
            "already computed."
        },
    )

    def __post_init__(self):
        self._validate_reward_fields()
        if self.bf16 is None:
            if self.fp16:
                self.bf16 = False
            else:
                self.bf16, wants_cpu = _resolve_bf16_default()
                self.use_cpu = self.use_cpu or wants_cpu
        if _HAS_ACTIVATION_CHECKPOINTING:
            # transformers 5 renamed gradient_checkpointing to activation_checkpointing; our documented name
            # is the old one, so hand its value over ourselves instead of triggering the deprecation warning.
            if self.activation_checkpointing is None and self.gradient_checkpointing is not None:
                self.activation_checkpointing = self.gradient_checkpointing
            if (
                self.activation_checkpointing_kwargs is None
                and self.gradient_checkpointing_kwargs is not None
            ):
                self.activation_checkpointing_kwargs = self.gradient_checkpointing_kwargs
        super().__post_init__()

    def _validate_reward_fields(self) -> None:
        if self.truncation not in TRUNCATION_SIDES:
            raise ConfigError(
                f"`truncation` must be one of {', '.join(TRUNCATION_SIDES)}, got {self.truncation!r}"
            )
        if self.dataset_on_error not in ON_ERROR_CHOICES:
            raise ConfigError(
                f"`dataset_on_error` must be one of {', '.join(ON_ERROR_CHOICES)}, got {self.dataset_on_error!r}"
            )
        if self.pair_batching not in PAIR_BATCHING_MODES:
            raise ConfigError(
                f"`pair_batching` must be one of {', '.join(PAIR_BATCHING_MODES)}, got {self.pair_batching!r}"
            )
        if self.group_loss not in GROUP_LOSSES:
            raise ConfigError(
                f"`group_loss` must be one of {', '.join(GROUP_LOSSES)}, got {self.group_loss!r}"
            )
        if self.pair_attention not in PAIR_ATTENTION_MODES:
            raise ConfigError(
                f"`pair_attention` must be one of {', '.join(PAIR_ATTENTION_MODES)}, got {self.pair_attention!r}"
            )
        for name in ("max_length", "pad_to_multiple_of", "dataset_num_proc"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"`{name}` must be a positive integer or None, got {value!r}")
        coef = self.center_rewards_coefficient
        if coef is not None and (not isinstance(coef, (int, float)) or coef < 0):
            raise ConfigError(f"`center_rewards_coefficient` must be a number >= 0 or None, got {coef!r}")
        if not isinstance(self.dataset_format, str) or not self.dataset_format:
            raise ConfigError(
                f"`dataset_format` must be a format name or 'auto', got {self.dataset_format!r}; "
                "list the formats with `reward-plugin formats`"
            )
