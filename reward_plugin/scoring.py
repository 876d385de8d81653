"""Read a sequence-classification model's reward at the last real token of each sequence.

Decoder classification models (``LlamaForSequenceClassification`` and kin) score every position
with their ``score`` head and then keep the rightmost token whose id differs from
``config.pad_token_id``. That goes wrong when the pad token is also the EOS token that ends each
sequence (the real EOS is skipped). :class:`ScoreReader` therefore captures the head's per-token
output with a forward hook, inside the model's own forward (so DDP/FSDP wrappers, PEFT and
gradient checkpointing work unchanged), and picks the position from the attention mask instead.
Encoder models pool before their head (BERT's ``[CLS]`` pooler), their head output has no token
axis, and their logits are used as they are.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: Attribute names of sequence-classification heads, in lookup order.
HEAD_NAMES = ("score", "classifier")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The underlying ``PreTrainedModel`` of a DDP/compiled/PEFT-wrapped model."""
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        if hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP / DataParallel
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif hasattr(model, "get_base_model"):  # PEFT
            model = model.get_base_model()
    return model


def find_head(model: nn.Module) -> tuple[str, nn.Module] | None:
    """``(name, module)`` of the classification head of ``model`` (PEFT wrappers included), or None."""
    base = unwrap_model(model)
    for name in HEAD_NAMES:
        head = getattr(base, name, None)
        if isinstance(head, nn.Module):
            return name, head
    return None


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the rightmost attended position of each row (right or left padding)."""
    length = attention_mask.shape[-1]
    return length - 1 - attention_mask.flip(-1).to(torch.int64).argmax(-1)


class ScoreReader:
    """Runs a reward model and returns one reward per sequence.

    Args:
        model: the model (possibly PEFT-wrapped) whose head gets the capturing hook.
    """

    def __init__(self, model: nn.Module):
        self._captured: torch.Tensor | None = None
        self._handle = None
        found = find_head(model)
        self.head_name = found[0] if found else None
        if found is not None:
            self._handle = found[1].register_forward_hook(self._capture)
        config = getattr(unwrap_model(model), "config", None)
        # Only decoder configs know `use_cache`; passing it to an encoder's forward is an error on some versions.
        self._forward_kwargs = {"use_cache": False} if hasattr(config, "use_cache") else {}

    def _capture(self, module: nn.Module, args: Any, output: Any) -> None:
        self._captured = output if isinstance(output, torch.Tensor) else None

    def remove(self) -> None:
        """Detach the hook from the model."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def token_scores(self, model: nn.Module, **inputs: Any) -> tuple[torch.Tensor | None, Any]:
        """Run ``model(**inputs)`` and return ``(per-token scores (N, T) or None, model outputs)``.

        Per-token scores exist for heads applied at every position (decoder models); fast pair
        batching modes gather their rewards from them at positions of their choice.
        """
        self._captured = None
        outputs = model(**inputs, **self._forward_kwargs)
        captured, self._captured = self._captured, None
        length = inputs["input_ids"].shape[-1] if inputs.get("input_ids") is not None else None
        if captured is not None and captured.dim() == 3 and captured.shape[1] == length:
            return captured[..., 0], outputs
        return None, outputs

    def rewards(
        self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, **inputs: Any
    ) -> torch.Tensor:
        """One reward per row: the head's score at the row's last attended token, shape ``(N,)``."""
        scores, outputs = self.token_scores(
            model, input_ids=input_ids, attention_mask=attention_mask, **inputs
        )
        if scores is None:
            logits = outputs.logits if hasattr(outputs, "logits") else outputs[0]
            return logits.reshape(logits.shape[0], -1)[:, 0]
        index = last_token_index(attention_mask).to(scores.device)
        return scores.gather(1, index.unsqueeze(1)).squeeze(1)
