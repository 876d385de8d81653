"""LLaMA-Factory ``template`` names and the chat template reward-plugin renders for each.

LLaMA-Factory formats conversations with its own named templates (``template: qwen3_nothink``).
Every name it defines resolves here: to a template shipped with the dataset toolkit when the text
format is the same (markup, default system message, where a system message goes, the empty
``<think>`` block of reasoning templates), and otherwise to the model tokenizer's own chat
template (``chat_template: tokenizer``). Either way one notice line says which was used.

The names were read from ``src/llamafactory/data/template.py`` of the public
``hiyouga/LLaMA-Factory`` repository (commit ff6d4d1, August 2026); the shipped templates are
written for this project (``templates/README.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

from dataset_formats.rendering import TOKENIZER_SPEC

#: LLaMA-Factory template name -> shipped template with the same text format.
SHIPPED_EQUIVALENTS: dict[str, str] = {
    # ChatML, no default system message
    "chatml": "chatml",
    "yi": "chatml",
    "smollm": "chatml",
    "llava_next_yi": "chatml",
    "llava_next_video_yi": "chatml",
    "qwen3_nothink": "chatml",
    "qwen3_vl_nothink": "chatml",
    "qwen3_omni_nothink": "chatml",
    "qwen3_5_nothink": "chatml",
    # ChatML with Qwen2.5's default system message
    "qwen": "qwen2.5",
    # ChatML with Qwen2's default system message ("You are a helpful assistant.")
    "qwen2_audio": "qwen2",
    "qwen2_omni": "qwen2",
    "qwen2_vl": "qwen2",
    "llava_next_qwen": "qwen2",
    "minicpm_v": "qwen2",
    "minicpm_v_4_6": "qwen2",
    # ChatML reasoning templates: an empty <think> block opens the final answer
    "qwen3": "qwen3",
    "qwen3_vl": "qwen3",
    "qwen3_omni": "qwen3",
    "qwen3_5": "qwen3",
    "qwen3_6": "qwen3",
    "keye_vl": "qwen3",
    # Llama 3 headers
    "llama3": "llama3",
    "mllama": "llama3",
    "llava_next_llama3": "llama3",
    # Mistral v0.3 [INST] ... [/INST] with the system message in the first user turn
    "mistral": "mistral-v3",
    "llava_next_mistral": "mistral-v3",
    "llava_next_video_mistral": "mistral-v3",
    # Gemma turns with the system message in the first user turn
    "gemma": "gemma",
    "gemma2": "gemma",
    "gemma3": "gemma",
    "gemma3n": "gemma",
    # DeepSeek-V3 <｜User｜>/<｜Assistant｜>
    "deepseek3": "deepseek3",
}

#: Every other template LLaMA-Factory defines: the model tokenizer's own chat template is used.
TOKENIZER_TEMPLATES: frozenset[str] = frozenset(
    [
        "custom",
        "alpaca",
        "bailing",
        "bailing_v2",
        "breeze",
        "chatglm3",
        "chatml_de",
        "cohere",
        "cpm4",
        "dbrx",
        "deepseek",
        "deepseekr1",
        "hy3",
        "deepseekcoder",
        "default",
        "dots_ocr",
        "empty",
        "ernie",
        "ernie_nothink",
        "ernie_vl",
        "exaone",
        "falcon",
        "falcon_h1",
        "fewshot",
        "gemma4",
        "gemma4n",
        "glm4",
        "glm4_moe",
        "glm4v",
        "glm4_5v",
        "glm_ocr",
        "glm4_7",
        "glmz1",
        "gpt_oss",
        "granite3",
        "granite3_vision",
        "granite4",
        "index",
        "hunyuan",
        "hunyuan_small",
        "hy_dense_1_8b",
        "hy_dense_7b",
        "intern2",
        "intern_vl",
        "intern_s1",
        "kimi_vl",
        "lfm2",
        "lfm2_vl",
        "llama2",
        "llama2_zh",
        "llama4",
        "moonlight",
        "moss_vl",
        "llava",
        "llava_next",
        "llava_next_video",
        "mimo",
        "mimo_v2",
        "mimo_vl",
        "minicpm_o",
        "minimax1",
        "minimax2",
        "ministral",
        "mistral_small",
        "ministral3",
        "olmo",
        "openchat",
        "openchat-3.6",
        "opencoder",
        "paligemma",
        "paligemma_chat",
        "phi",
        "phi_small",
        "phi4",
        "phi4_mini",
        "pixtral",
        "sailor",
        "seed_coder",
        "seed_oss",
        "smollm2",
        "solar",
        "starchat",
        "telechat2",
        "vicuna",
        "video_llava",
        "xuanyuan",
        "yi_vl",
        "youtu",
        "youtu_vl",
        "yuan",
        "zephyr",
        "aeva",
    ]
)

#: Every template name LLaMA-Factory defines.
LLAMAFACTORY_TEMPLATES: frozenset[str] = frozenset(SHIPPED_EQUIVALENTS) | TOKENIZER_TEMPLATES


@dataclass(frozen=True)
class ResolvedTemplate:
    """The chat template a LLaMA-Factory ``template`` name resolves to.

    Attributes:
        spec: a shipped template name, or ``"tokenizer"`` for the model tokenizer's own template.
        notice: the one line that tells the user which was used.
    """

    spec: str
    notice: str


def resolve_template(name: str) -> ResolvedTemplate:
    """The chat template reward-plugin uses for LLaMA-Factory's ``template: name``.

    A name LLaMA-Factory does not define (a typo, or a template added after the list above was
    read) also falls back to the model tokenizer's template; its notice says so.

    Args:
        name: the value of ``template`` in the LLaMA-Factory YAML.

    Returns:
        The template spec for ``chat_template`` and the notice line.
    """
    if name in SHIPPED_EQUIVALENTS:
        shipped = SHIPPED_EQUIVALENTS[name]
        return ResolvedTemplate(
            shipped, f"LLaMA-Factory template {name!r}: using the shipped {shipped!r} template (same format)"
        )
    why = (
        "it has no shipped equivalent"
        if name in TOKENIZER_TEMPLATES
        else "LLaMA-Factory defines no such template as far as reward-plugin knows"
    )
    return ResolvedTemplate(
        TOKENIZER_SPEC,
        f"LLaMA-Factory template {name!r}: {why}; using the model tokenizer's own chat template "
        "(set `chat_template` to a shipped name or a .jinja file to choose another)",
    )
