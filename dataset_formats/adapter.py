"""The base class every format adapter (built-in or third-party) derives from."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, ClassVar

from .errors import OptionError
from .records import PreferencePair


@dataclasses.dataclass
class NoOptions:
    """Options of an adapter that takes none."""


class FormatAdapter:
    """Turns one raw source row into zero or more :class:`PreferencePair` records.

    Subclasses set ``name`` and ``description``, optionally an ``Options`` dataclass (its fields
    become ``--option KEY=VALUE`` flags of ``reward-plugin convert``), and implement
    :meth:`to_pairs`. A bad row raises :class:`~dataset_formats.errors.RecordError` naming the
    field and a short ``reason``; the pipeline adds the file and row number and either raises or
    counts the row as rejected.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    #: Columns whose presence identifies this format (used by the built-in ``detect`` default).
    required_fields: ClassVar[tuple[str, ...]] = ()
    #: True when the output always carries a ``margin`` column.
    produces_margin: ClassVar[bool] = False

    def to_pairs(self, row: Mapping[str, Any], options: Any) -> list[PreferencePair]:
        """Return the pairs of one source row (raise ``RecordError`` for a bad row)."""
        raise NotImplementedError(f"{type(self).__name__}.to_pairs")

    def detect(self, columns: list[str], sample: list[dict[str, Any]]) -> bool:
        """Whether rows with ``columns`` look like this format (default: all required fields)."""
        return bool(self.required_fields) and all(c in columns for c in self.required_fields)

    def make_options(self, values: Mapping[str, Any] | None = None) -> Any:
        """Build this adapter's ``Options`` from a mapping, coercing CLI strings to field types."""
        values = dict(values or {})
        fields = {f.name: f for f in dataclasses.fields(self.Options)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            choices = ", ".join(fields) or "none"
            raise OptionError(f"format {self.name!r} has no option {unknown[0]!r}; its options: {choices}")
        hints = typing.get_type_hints(self.Options)
        kwargs = {k: _coerce(self.name, k, v, hints.get(k)) for k, v in values.items()}
        try:
            return self.Options(**kwargs)
        except (TypeError, ValueError) as exc:
            raise OptionError(f"format {self.name!r}: {exc}") from exc


def _coerce(fmt: str, key: str, value: Any, hint: Any) -> Any:
    if not isinstance(value, str) or hint is None:
        return value
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    target = hint if not args else (args[0] if len(args) == 1 else None)
    if typing.get_origin(hint) is typing.Literal or typing.get_origin(target) is typing.Literal:
        lit = typing.get_args(target if typing.get_origin(target) is typing.Literal else hint)
        if value not in lit:
            raise OptionError(
                f"format {fmt!r}: option {key!r} must be one of {', '.join(map(str, lit))}, got {value!r}"
            )
        return value
    try:
        if target is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if target in (int, float):
            return target(value)
        if value.lower() in ("none", "null") and type(None) in typing.get_args(hint):
            return None
    except ValueError as exc:
        raise OptionError(
            f"format {fmt!r}: option {key!r} expects {getattr(target, '__name__', target)}, got {value!r}"
        ) from exc
    return value
