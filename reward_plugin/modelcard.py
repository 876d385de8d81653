"""The model card (``README.md``) written next to a trained reward model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

MODEL_CARD_FILE = "README.md"

#: Training arguments worth showing on the card, in this order.
_CARD_ARGS = (
    "learning_rate",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "max_steps",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "seed",
    "max_length",
    "truncation",
    "center_rewards_coefficient",
    "pair_batching",
    "group_by_length",
    "bf16",
    "gradient_checkpointing",
)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def render_model_card(
    *,
    model_name: str,
    base_model: str | None = None,
    args: Any = None,
    metrics: dict[str, float] | None = None,
    reward_stats: dict[str, Any] | None = None,
    peft: bool = False,
    uses_margin: bool = False,
    tie_strength: float | None = None,
    versions: dict[str, str] | None = None,
) -> str:
    """The text of a reward model's card: YAML front matter, usage, training setup and results.

    Args:
        model_name: the folder or Hub name of the trained model.
        base_model: the model it was trained from (a Hub id or path), when known.
        args: the ``RewardConfig`` used.
        metrics: last evaluation (or training) metrics to report.
        reward_stats: the saved reward statistics (``mean``, ``std``, ...).
        peft: whether the folder holds a PEFT adapter rather than full weights.
        uses_margin: whether the training data carried a per-pair margin.
        tie_strength: Davidson's ``nu`` when the training data had ties trained as ties (a ``tie``
            column), else None.
        versions: library versions to list.

    Returns:
        Markdown text.
    """
    sections = [
        _front_matter(base_model, peft),
        _introduction(model_name, base_model, args, uses_margin, tie_strength),
        _usage(peft),
        _reward_statistics(reward_stats) if reward_stats else [],
        _table("Results", "metric", sorted(metrics.items())) if metrics else [],
        _table("Training setup", "parameter", _card_args(args)) if args is not None else [],
        _framework_versions(versions) if versions else [],
    ]
    return "\n".join(line for section in sections for line in section)


def _front_matter(base_model: str | None, peft: bool) -> list[str]:
    """The YAML block the Hub reads: library, base model, tags."""
    front = ["---", "library_name: " + ("peft" if peft else "transformers")]
    if base_model:
        front.append(f"base_model: {json.dumps(base_model)}")
    return front + ["tags:", "- reward-model", "- reward-plugin", "- text-classification", "---", ""]


def _introduction(
    model_name: str, base_model: str | None, args: Any, uses_margin: bool, tie_strength: float | None
) -> list[str]:
    """The title and what the model is: base model and the exact loss it was trained with."""
    centred = args is not None and getattr(args, "center_rewards_coefficient", None)
    d = "r_chosen - r_rejected" + (" - margin" if uses_margin else "")
    if tie_strength is None:
        loss = f"loss `-logsigmoid({d})`"
    else:
        learned = "learned" if args is not None and getattr(args, "learn_tie_strength", False) else "set"
        loss = (
            "Davidson's tie-aware extension of Bradley-Terry as the loss: `-log P(chosen wins)` = "
            f"`log(1 + exp(-d) + nu * exp(-d / 2))` with `d = {d}` on untied pairs and `-log P(tie)` = "
            "`log(exp(d / 2) + exp(-d / 2) + nu) - log(nu)` with `d = r_chosen - r_rejected` on ties, "
            f"nu = {tie_strength:.4g} ({learned}; `tie_strength` in config.json)"
        )
    text = (
        "A pairwise (Bradley-Terry) reward model: it gives one scalar score per text, higher for the "
        "response people preferred."
        + (f" Trained from `{base_model}`" if base_model else "")
        + f" with reward-plugin's `RewardTrainer`, {loss}"
        + (" plus the reward-centring term" if centred else "")
        + "."
    )
    return [f"# {model_name}", "", text, ""]


def _usage(peft: bool) -> list[str]:
    """A code block that loads the folder and scores one text."""
    if peft:
        load = [
            "from peft import AutoPeftModelForSequenceClassification",
            "from transformers import AutoTokenizer",
            "",
            'model = AutoPeftModelForSequenceClassification.from_pretrained("PATH/TO/THIS/FOLDER", num_labels=1)',
        ]
    else:
        load = [
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
            "",
            'model = AutoModelForSequenceClassification.from_pretrained("PATH/TO/THIS/FOLDER")',
        ]
    return [
        "## Usage",
        "",
        "Score a text exactly as training saw it: the same formatting (the chat template for conversations, if",
        "the training data was converted with one), one sequence per forward without padding, and the score at",
        "its last token. Setting `pad_token_id` to None makes transformers read that last token; otherwise it",
        "reads the last token that is not the padding token, which skips a final EOS where pad == EOS.",
        "",
        "```python",
        *load,
        'tokenizer = AutoTokenizer.from_pretrained("PATH/TO/THIS/FOLDER")',
        "model.config.pad_token_id = None  # one unpadded sequence: the score at its last token, as in training",
        'conversation = [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello, how can I help?"}]',
        "text = (",
        "    tokenizer.apply_chat_template(conversation, tokenize=False)",
        "    if tokenizer.chat_template",
        '    else "\\n\\nHuman: Hi!\\n\\nAssistant: Hello, how can I help?"  # hh-rlhf text, without a template',
        ")",
        'reward = model(**tokenizer(text, return_tensors="pt")).logits[0, 0].item()',
        "```",
        "",
    ]


def _reward_statistics(reward_stats: dict[str, Any]) -> list[str]:
    """The saved reward mean and spread, with their pair count, and how to normalise with them."""
    where = f"the {reward_stats.get('split', '?')} set ({reward_stats.get('num_pairs', '?')} pairs)"
    if reward_stats.get("source") == "training_forwards":
        where = (
            f"the last {reward_stats.get('num_pairs', '?')} train pairs the training forwards scored "
            f"(optimizer steps {'-'.join(str(s) for s in reward_stats.get('steps', []))})"
        )
    return [
        "## Reward statistics",
        "",
        (
            f"Over {where}, the rewards "
            f"have mean {_fmt(reward_stats.get('mean'))} and standard deviation {_fmt(reward_stats.get('std'))}. "
            "They are saved in `reward_stats.json` and as `reward_mean`/`reward_std` in `config.json`; "
            "normalise rewards for RLHF with `(reward - reward_mean) / reward_std`."
        ),
        "",
    ]


def _card_args(args: Any) -> list[tuple[str, Any]]:
    return [(name, getattr(args, name)) for name in _CARD_ARGS if hasattr(args, name)]


def _table(title: str, key: str, items: list[tuple[str, Any]]) -> list[str]:
    """A two-column section: ``| key | value |`` per item."""
    rows = [f"| {name} | {_fmt(value)} |" for name, value in items]
    return [f"## {title}", "", f"| {key} | value |", "| --- | --- |", *rows, ""]


def _framework_versions(versions: dict[str, str]) -> list[str]:
    return [
        "## Framework versions",
        "",
        *(f"- {name} {version}" for name, version in sorted(versions.items())),
        "",
    ]


def write_model_card(output_dir: str | Path, **kwargs: Any) -> Path:
    """Render the card (see :func:`render_model_card`) into ``output_dir/README.md``; return its path."""
    path = Path(output_dir) / MODEL_CARD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_model_card(**kwargs), encoding="utf-8")
    return path


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shaped a training run."""
    import importlib.metadata as md

    versions = {}
    for name in ("reward-plugin", "transformers", "torch", "datasets", "peft", "accelerate"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return versions
