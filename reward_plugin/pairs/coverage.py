"""Which model types run the fast pair layouts: proven per type on a tiny random instance, not listed by hand.

For every ``model_type`` with a ``ForSequenceClassification`` class in the installed transformers,
:func:`verify_model_type` builds a tiny random fp32 instance (2 layers, hidden size 32, a sliding
window shorter than the sequences, a few experts for mixture-of-experts models) and compares the
rewards of the prefix-shared and packed layouts (pairs, and groups of up to 6 responses; segment
attention and the dense mask) with the standard forward that runs every sequence on its own. A type
is on the fast path when every reward agrees within :data:`TOLERANCE`; otherwise it is refused with
the reason (an encoder, no per-token head, the largest difference found, ...).

The results live in ``coverage.json`` next to this module, written by ``python -m
reward_plugin.pairs.coverage --write`` (which also writes ``docs/models.md``) and re-verified by the
test suite; :func:`model_type_reason` reads them when a trainer chooses its layout.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from .coverage_table import COVERAGE_FILE

#: The committed results of :func:`sweep`.
#: Largest absolute reward difference (fp32) accepted as exact.
TOLERANCE = 1e-5
#: Vocabulary of the tiny instances; token ids 3.. are drawn, 0 pads, 1 and 2 are BOS and EOS.
VOCAB = 64
#: Sliding window of the tiny instances: shorter than most test sequences, so windows matter.
WINDOW = 6

# Size attributes of a config, by role; the first name a config has is set.
_SIZES: dict[str, Any] = {
    "hidden_size": 32, "n_embd": 32, "d_model": 32, "dim": 32,
    "intermediate_size": 64, "n_inner": 64, "ffn_dim": 64, "ffn_hidden_size": 64,
    "num_hidden_layers": 2, "n_layer": 2, "num_layers": 2, "n_layers": 2,
    "num_attention_heads": 4, "n_head": 4, "n_heads": 4, "num_heads": 4,
    "num_key_value_heads": 2, "n_kv_heads": 2, "num_kv_heads": 2,
    "head_dim": 8, "kv_channels": 8, "attention_head_size": 8,
    "max_position_embeddings": 128, "n_positions": 128, "n_ctx": 128, "max_seq_len": 128,
    # mixture of experts
    "num_experts": 4, "num_local_experts": 4, "n_routed_experts": 4, "moe_num_experts": 4,
    "num_experts_per_tok": 2, "moe_topk": 2, "top_k": 2, "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 32, "n_shared_experts": 1, "first_k_dense_replace": 1,
    "n_group": 1, "topk_group": 1, "decoder_sparse_step": 1, "mlp_only_layers": [],
    # multi-head latent attention (DeepSeek)
    "kv_lora_rank": 16, "q_lora_rank": 16, "qk_rope_head_dim": 4, "qk_nope_head_dim": 4, "v_head_dim": 8,
    "qk_head_dim": 8,
    # linear-attention / state-space layers
    "linear_num_key_heads": 2, "linear_num_value_heads": 2, "linear_key_head_dim": 8, "linear_value_head_dim": 8,
    "mamba_d_state": 8, "mamba_n_heads": 4, "mamba_d_head": 8, "mamba_expand": 2, "state_size": 8,
    "image_size": 32, "patch_size": 8, "num_channels": 3,
}  # fmt: skip
_TOKENS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "vocab_size": VOCAB}


def sequence_classification_types() -> list[str]:
    """Every ``model_type`` with a ``ForSequenceClassification`` class in the installed transformers."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    return sorted(MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES)


def _shrink(values: dict[str, Any], top: bool) -> dict[str, Any]:
    """Tiny values for the size, token and window attributes present in ``values`` (a config dict)."""
    out = {k: v for k, v in _SIZES.items() if k in values}
    if top or "vocab_size" in values:
        out.update({k: v for k, v in _TOKENS.items() if k in values or k == "vocab_size"})
    if values.get("sliding_window") is not None or "use_sliding_window" in values:
        out["sliding_window"] = WINDOW
    if "use_sliding_window" in values:
        out["use_sliding_window"] = True
    if "max_window_layers" in values:
        out["max_window_layers"] = 0
    if values.get("attn_logit_softcapping") is not None:  # tiny random logits are far below the usual cap
        out["attn_logit_softcapping"] = 0.5
    if "initializer_range" in values:  # larger weights make every difference in the attention visible
        out["initializer_range"] = 0.2
    if "attention_dropout" in values:
        out["attention_dropout"] = 0.0
    types = values.get("layer_types")
    if isinstance(types, list) and types:
        kinds = list(dict.fromkeys(types))
        out["layer_types"] = kinds if len(kinds) > 1 else kinds * 2
        for key in ("num_hidden_layers", "n_layer", "num_layers"):
            if key in out:
                out[key] = len(out["layer_types"])
    if "kv_lora_rank" in values:  # latent attention: the rotary part is the head dim, keys are not grouped
        if "head_dim" in out:
            out["head_dim"] = out.get("qk_rope_head_dim", 4)
        if "num_key_value_heads" in out:
            out["num_key_value_heads"] = out["num_attention_heads"]
    if "rotary_dim" in values and values["rotary_dim"] is not None:
        out["rotary_dim"] = 4
    if "attention_types" in values:  # GPT-Neo: one global and one local (windowed) layer
        out["attention_types"] = [[["global", "local"], 1]]
    if "attention_layers" in values:
        out["attention_layers"] = ["global", "local"]
    if "window_size" in values:
        out["window_size"] = WINDOW
    return out


def tiny_config(model_type: str) -> Any:
    """A 2-layer, hidden-size-32 fp32 config of ``model_type`` with one label (sub-configs shrunk too)."""
    from transformers import AutoConfig

    default = AutoConfig.for_model(model_type)
    values = default.to_dict()
    overrides = _shrink(values, top=True)
    for name in getattr(default, "sub_configs", {}) or {}:
        sub = values.get(name)
        if isinstance(sub, dict):
            overrides[name] = {**sub, **_shrink(sub, top=False)}
    overrides["num_labels"] = 1
    config = type(default)(**{k: v for k, v in values.items() if k not in ("model_type", "transformers_version")}
                           | overrides)  # fmt: skip
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key, value in _TOKENS.items():  # the classification head reads pad_token_id from the top config
        if key != "vocab_size" and getattr(config, key, None) is None and hasattr(text, key):
            setattr(config, key, value)
    config.pad_token_id = 0
    return config


def _random_pairs(seed: int = 1) -> list[dict[str, list[int]]]:
    """Pairs with a shared prompt of 0-12 tokens and tails of 1-8 tokens, plus the edge cases."""
    import torch

    g = torch.Generator().manual_seed(seed)

    def ids(k: int) -> list[int]:
        return torch.randint(3, VOCAB, (k,), generator=g).tolist()

    rows = []
    for _ in range(6):
        prompt = ids(int(torch.randint(0, 13, (1,), generator=g)))
        tails = [ids(int(torch.randint(1, 9, (1,), generator=g))) for _ in range(2)]
        rows.append({"chosen_ids": prompt + tails[0], "rejected_ids": prompt + tails[1]})
    rows += [
        {"chosen_ids": [5, 6, 7], "rejected_ids": [5, 6, 7, 8, 9]},  # chosen is a prefix of rejected
        {"chosen_ids": [10, 11, 12], "rejected_ids": [13, 11, 12]},  # no shared prefix
        {"chosen_ids": [20], "rejected_ids": [21]},  # one token each
        {"chosen_ids": [7, 8, 9], "rejected_ids": [7, 8, 9]},  # identical
    ]
    return rows


def _random_groups(seed: int = 2) -> list[dict[str, Any]]:
    """Groups of 2-6 responses over a 0-12 token prompt, every pair among them."""
    import torch

    g = torch.Generator().manual_seed(seed)

    def ids(k: int) -> list[int]:
        return torch.randint(3, VOCAB, (k,), generator=g).tolist()

    groups = []
    for k in (2, 3, 6):
        responses = [ids(int(torch.randint(1, 8, (1,), generator=g))) for _ in range(k)]
        groups.append(
            {
                "prompt_ids": ids(int(torch.randint(0, 13, (1,), generator=g))),
                "response_ids": responses,
                "pairs": [
                    {"better": a, "worse": b, "margin": None} for a in range(k) for b in range(a + 1, k)
                ],
                "scores": None,
            }
        )
    return groups


def _alone(model: Any, sequences: list[list[int]]) -> Any:
    """The reference: every sequence in its own right-padded row, scored at its last token."""
    from ..scoring import ScoreReader
    from .collators import RewardDataCollatorWithPadding

    batch = RewardDataCollatorWithPadding(pad_token_id=0)(
        [{"chosen_ids": s, "rejected_ids": s} for s in sequences]
    )
    reader = ScoreReader(model)
    try:
        return reader.rewards(model, batch["input_ids_chosen"], batch["attention_mask_chosen"])
    finally:
        reader.remove()


def _build(model_type: str, attn: str) -> Any:
    """A tiny random instance of ``model_type`` in eval mode with attention implementation ``attn``."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(tiny_config(model_type), attn_implementation=attn)
    return model.float().eval()


def _causal(model: Any) -> bool:
    """Whether a token's score is blind to the tokens after it (changing the last token changes no earlier score)."""
    import torch

    from ..scoring import ScoreReader

    reader = ScoreReader(model)
    try:
        ids = torch.tensor([[5, 6, 7, 8, 9, 10], [5, 6, 7, 8, 9, 33]])
        with torch.no_grad():
            scores, _ = reader.token_scores(model, input_ids=ids, attention_mask=torch.ones_like(ids))
    finally:
        reader.remove()
    if scores is None or scores.dim() < 2 or scores.shape[1] != ids.shape[1]:
        return False
    return bool(torch.allclose(scores[0, :-1], scores[1, :-1], rtol=0, atol=TOLERANCE))


#: The checked combinations: attention implementation / how the fast layouts attend.
PATHS = ("sdpa/segments", "sdpa/mask", "eager/segments", "eager/mask")


def _layout_errors(model: Any) -> dict[str, float]:
    """Largest reward difference from the standard forward, per attention path, over pairs and groups."""
    import torch

    from ..scoring import ScoreReader
    from .collators import PrefixSharedPairCollator
    from .forward import packed_rewards
    from .groups import GroupCollator, group_rewards

    def run(function, batch, segments):
        reader = ScoreReader(model)
        try:
            return function(reader, model, batch, segments=segments)
        finally:
            reader.remove()

    errors = {"segments": 0.0, "mask": 0.0}
    with torch.no_grad():
        pairs = _random_pairs()
        want = _alone(model, [r["chosen_ids"] for r in pairs] + [r["rejected_ids"] for r in pairs])
        groups = _random_groups()
        want_groups = _alone(model, [g["prompt_ids"] + r for g in groups for r in g["response_ids"]])
        for path, segments in (("segments", True), ("mask", False)):
            for pack in (False, True):
                batch = PrefixSharedPairCollator(pad_token_id=0, pack=pack)(pairs)
                got = torch.cat(run(packed_rewards, batch, segments))
                errors[path] = max(errors[path], float((got - want).abs().max()))
            batch = GroupCollator(pad_token_id=0, layout="packed")(groups)
            got = run(group_rewards, batch, segments)
            errors[path] = max(errors[path], float((got - want_groups).abs().max()))
    return {k: (v if not math.isnan(v) else math.inf) for k, v in errors.items()}


def verify_model_type(model_type: str) -> dict[str, Any]:
    """Build tiny ``model_type`` instances (sdpa and eager) and check the fast layouts against the standard forward.

    Returns:
        ``{"model_type", "class", "reason", "errors", "fast"}``: ``errors`` maps each checked
        :data:`PATHS` entry to the largest reward difference, or to a string saying why it could not
        run; ``fast`` lists the paths within :data:`TOLERANCE`; ``reason`` says why the type is refused
        (None when some path is exact).
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    from ..scoring import find_head

    result: dict[str, Any] = {
        "model_type": model_type,
        "class": MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.get(model_type),
        "fast": [],
        "reason": None,
        "errors": {},
    }
    try:
        config = tiny_config(model_type)
    except Exception as exc:  # noqa: BLE001 - any failure is the reason, recorded
        result["reason"] = f"no tiny config could be built ({type(exc).__name__}: {_first_line(exc)})"
        return result
    if getattr(config, "is_encoder_decoder", False):
        result["reason"] = "an encoder-decoder model: the encoder attends in both directions"
        return result
    built = False
    for attn in ("sdpa", "eager"):
        try:
            model = _build(model_type, attn)
        except Exception as exc:  # noqa: BLE001
            for path in ("segments", "mask"):
                result["errors"][f"{attn}/{path}"] = f"not built ({type(exc).__name__}: {_first_line(exc)})"
            continue
        if not built:  # the head and causality do not depend on the attention implementation
            built = True
            found = find_head(model)
            if found is None or found[0] != "score":
                result["reason"] = (
                    f"its head (`{found[0] if found else None}`) is not the per-token `score` layer the packed "
                    "layouts read rewards from (encoders pool or read the first token)"
                )
                return result
            try:
                causal = _causal(model)
            except Exception as exc:  # noqa: BLE001
                result["reason"] = f"a plain forward fails ({type(exc).__name__}: {_first_line(exc)})"
                return result
            if not causal:
                result["reason"] = "not a causal decoder: a token's output depends on the tokens after it"
                return result
        try:
            errors = _layout_errors(model)
        except Exception as exc:  # noqa: BLE001
            for path in ("segments", "mask"):
                result["errors"][f"{attn}/{path}"] = f"fails ({type(exc).__name__}: {_first_line(exc)})"
            continue
        for path, error in errors.items():
            result["errors"][f"{attn}/{path}"] = error
    if not built:
        result["reason"] = "no tiny instance could be built: " + str(result["errors"].get("eager/segments"))
        return result
    result["fast"] = [
        p for p in PATHS if isinstance(result["errors"].get(p), float) and result["errors"][p] <= TOLERANCE
    ]
    if not result["fast"]:
        numbers = {p: e for p, e in result["errors"].items() if isinstance(e, float)}
        if numbers:
            path, error = min(numbers.items(), key=lambda item: item[1])
            result["reason"] = (
                f"packed rewards differ from the standard forward by {error:.1e} or more ({path})"
            )
        else:
            failures = list(result["errors"].values())
            ran = [f for f in failures if not f.startswith("not built")]
            result["reason"] = "the packed forward fails: " + (ran or failures)[0]
        hint = _feature_hint(config)
        if hint:
            result["reason"] += f"; {hint}"
    return result


def _feature_hint(config: Any) -> str | None:
    """What in ``config`` most likely makes a packed row differ from separate sequences."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    values = text.to_dict()
    kinds = set(values.get("layer_types") or []) - {"full_attention", "sliding_attention", "attention"}
    if kinds:
        return f"it has {', '.join(sorted(kinds))} layers, whose state runs across the whole row"
    if any("mamba" in key for key in values):
        return "it has Mamba (state-space) layers, whose state runs across the whole row"
    if values.get("attn_logit_softcapping"):
        return "attention logit soft-capping is not applied by segment attention"
    if values.get("alibi") or values.get("model_type") in ("bloom", "mpt"):
        return "ALiBi position biases are built from the 2D mask, not from position ids"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else "")[:160]


def sweep(model_types: list[str] | None = None) -> dict[str, Any]:
    """:func:`verify_model_type` for ``model_types`` (default: every sequence-classification type)."""
    import transformers

    results = [verify_model_type(t) for t in (model_types or sequence_classification_types())]
    return {"transformers": transformers.__version__, "tolerance": TOLERANCE, "models": results}


def _short(error: Any) -> str:
    """One path's result in a few words."""
    if isinstance(error, float):
        return f"differs by {error:.1e}"
    text = str(error)
    if "does not support an attention implementation" in text:
        return "the model has no such attention implementation in transformers"
    return text


def _describe(entry: dict[str, Any]) -> tuple[str, str]:
    """(fast path, detail) cells of one model type."""
    if entry["reason"] is not None:
        return "no", entry["reason"].replace("|", "\\|")
    fast, errors = entry["fast"], entry["errors"]
    if len(fast) == len(PATHS):
        return "yes", f"exact (largest difference {max(errors[p] for p in fast):.1e})"
    others: dict[str, list[str]] = {}
    for path in PATHS:
        if path not in fast:
            others.setdefault(_short(errors.get(path)), []).append(path)
    detail = "; ".join(f"{', '.join(paths)}: {text}" for text, paths in others.items())
    return "yes: " + ", ".join(fast), detail.replace("|", "\\|")


def models_markdown(data: dict[str, Any]) -> str:
    """docs/models.md from the results of :func:`sweep`."""
    models = data["models"]
    fast = [m for m in models if m["fast"]]
    lines = [
        "# Supported models",
        "",
        "<!-- Generated by `python -m reward_plugin.pairs.coverage --write`; do not edit by hand. -->",
        "",
        "Every model with a `ForSequenceClassification` class in transformers trains with reward-plugin. The",
        "fast layouts (`pair_batching: auto`, `packed`, `prefix_shared`: the shared prompt encoded once, pairs",
        "and groups packed without padding) are used for a model type only where a test has proven them exact:",
        f"a tiny random fp32 instance of the type (2 layers, hidden size 32, a sliding window of {WINDOW} tokens where",
        "the model has one, 4 experts for mixture-of-experts models, soft-capping at 0.5 where the model caps",
        "its attention logits) scores pairs and groups of up to 6 responses in the packed layouts, and every",
        f"reward must equal the standard forward, each sequence on its own, within {data['tolerance']:g}.",
        "Each type is checked with `sdpa` and `eager` attention, and with segment attention",
        "(`pair_attention: segments`, the default) and the dense mask (`pair_attention: mask`;",
        "`flex_attention` models use the dense mask and follow the `sdpa/mask` result). A type exact only",
        "on `.../mask` paths takes the fast layouts with `pair_attention: mask`; one exact only with `eager` takes",
        'them when loaded with `attn_implementation="eager"` (the only implementation some models have).',
        "",
        "Other types, and checked types on a path that is not exact, train on the `standard` layout:",
        "`pair_batching: auto` falls back to it with one log line; an explicit fast mode is an error that",
        "gives the reason below. Models loaded with `flash_attention_2` use the standard layout too.",
        "",
        f"Checked with transformers {data['transformers']}: {len(fast)} of {len(models)} types have an exact fast path.",
        "`tests/test_model_coverage.py` repeats the check in CI; `python -m reward_plugin.pairs.coverage TYPE`",
        "checks a type with the transformers you have installed.",
        "",
        "| model type | class | fast path | detail |",
        "| --- | --- | --- | --- |",
    ]
    for m in models:
        cell, detail = _describe(m)
        lines.append(f"| `{m['model_type']}` | `{m['class']}` | {cell} | {detail} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m reward_plugin.pairs.coverage [TYPE ...] [--write]``: print (or write) the coverage table."""
    parser = argparse.ArgumentParser(prog="python -m reward_plugin.pairs.coverage", description=main.__doc__)
    parser.add_argument("model_types", nargs="*", help="model types to check (default: all)")
    parser.add_argument("--write", action="store_true", help="write coverage.json and docs/models.md")
    parser.add_argument("--docs", default="docs/models.md", help="where --write puts the markdown table")
    parser.add_argument(
        "--docs-only", action="store_true", help="write --docs from the committed coverage.json"
    )
    args = parser.parse_args(argv)
    if args.docs_only:
        Path(args.docs).write_text(
            models_markdown(json.loads(COVERAGE_FILE.read_text("utf-8"))), encoding="utf-8"
        )
        return 0
    data = sweep(args.model_types or None)
    if args.write:
        COVERAGE_FILE.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        Path(args.docs).write_text(models_markdown(data), encoding="utf-8")
    for m in data["models"]:
        cell, detail = _describe(m)
        print(f"{m['model_type']:24} {cell:40} {detail}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
