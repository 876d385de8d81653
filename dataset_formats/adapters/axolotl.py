"""The ``axolotl-bt`` adapter: Axolotl ``bradley_terry`` rows (``system?``, ``input``, ``chosen``, ``rejected``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..adapter import FormatAdapter
from ..hookspecs import hookimpl
from ..records import PreferencePair
from . import _fields


@dataclass
class AxolotlBTOptions:
    """Options of the ``axolotl-bt`` adapter.

    Attributes:
        allow_empty_response: keep pairs whose chosen or rejected response is empty.
        drop_system_message: leave the system turn out of every prompt, as Axolotl's dataset key
            ``drop_system_message: true`` does (the chat template may then add its default one).
    """

    allow_empty_response: bool = False
    drop_system_message: bool = False


class AxolotlBTAdapter(FormatAdapter):
    """Axolotl's ``bradley_terry.chat_template`` rows (e.g. argilla/distilabel-intel-orca-dpo-pairs).

    The prompt is ``[system?, user: input]`` as messages, so ``--chat-template`` renders it the
    way Axolotl 0.19 does with the same template. A ``system`` string is a system turn even when
    empty, as in Axolotl: its ``ChatTemplateStrategy`` adds ``{"role": "system", "content": ""}``
    for a row whose ``system`` column is ``""``, which keeps a template's default system prompt
    (SmolLM2's, Qwen2.5's) out. With ``drop_system_message`` the system turn is left out, so the
    template's default prompt comes back, again as in Axolotl. A missing or null ``system`` is
    left out too (the template decides); Axolotl 0.19 stops on such a row with ``KeyError:
    'system'``, so there is no Axolotl rendering to match.
    """

    name = "axolotl-bt"
    description = "Axolotl bradley_terry rows: system?, input, chosen, rejected (strings)"
    Options = AxolotlBTOptions
    required_fields = ("input", "chosen", "rejected")

    def to_pairs(self, row: Mapping[str, Any], options: AxolotlBTOptions) -> list[PreferencePair]:
        system = _fields.text(row, "system", optional=True)
        user = _fields.text(row, "input")
        chosen = _fields.text(row, "chosen")
        rejected = _fields.text(row, "rejected")
        _fields.check_responses(chosen, rejected, allow_empty=options.allow_empty_response)
        keep_system = system is not None and not options.drop_system_message
        prompt = ([{"role": "system", "content": system}] if keep_system else []) + [
            {"role": "user", "content": user}
        ]
        return [PreferencePair(prompt, chosen, rejected)]

    def detect(self, columns: list[str], sample: list[dict[str, Any]]) -> bool:
        return (
            super().detect(columns, sample)
            and "instruction" not in columns
            and all(isinstance(r.get("chosen"), str) for r in sample)
        )


@hookimpl(trylast=True)
def register_formats(register):
    register(AxolotlBTAdapter())
