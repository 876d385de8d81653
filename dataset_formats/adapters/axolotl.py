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
    """

    allow_empty_response: bool = False


class AxolotlBTAdapter(FormatAdapter):
    """Axolotl's ``bradley_terry.chat_template`` rows (e.g. argilla/distilabel-intel-orca-dpo-pairs).

    The prompt is ``[system?, user: input]`` as messages, so ``--chat-template`` renders it the
    way Axolotl does with the same template; an empty or null ``system`` is left out, as Axolotl
    does.
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
        prompt = ([{"role": "system", "content": system}] if system else []) + [
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
