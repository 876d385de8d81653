"""Errors raised by the dataset toolkit.

Every error subclasses :class:`DatasetFormatError` and the matching built-in, keeps its context as
attributes and builds its one-line message from them. The CLI turns the base class into one clean
line and a non-zero exit; the library never prints or exits.
"""

from __future__ import annotations

from typing import Any


class DatasetFormatError(Exception):
    """Base class of every error raised by :mod:`dataset_formats`."""


class UnknownFormatError(DatasetFormatError, LookupError):
    """A format name that no registered adapter has."""

    def __init__(self, name: str, available: list[str]):
        self.name = name
        self.available = sorted(available)
        super().__init__(f"unknown dataset format {name!r}; available formats: {', '.join(self.available)}")


class PluginError(DatasetFormatError, RuntimeError):
    """A plugin failed to load or registered something invalid."""

    def __init__(self, plugin: str, problem: str):
        self.plugin = plugin
        self.problem = problem
        super().__init__(f"plugin {plugin!r}: {problem}")


class DuplicateFormatError(PluginError):
    """Two plugins registered an adapter under the same name."""

    def __init__(self, name: str, plugin: str, first_plugin: str):
        self.name = name
        self.first_plugin = first_plugin
        super().__init__(plugin, f"format {name!r} is already registered by {first_plugin!r}")


class RecordError(DatasetFormatError, ValueError):
    """One input row is invalid. ``field`` names the offending field; ``reason`` is a short slug.

    Where it is: ``path``, ``row`` (the 0-based row number, as in the ``source_row`` column) and,
    for line-oriented files (JSON Lines, CSV), ``line``: the 1-based line an editor shows. The
    message says ``line N`` when the line is known and ``row N (0-based)`` otherwise.
    """

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        reason: str = "invalid",
        value: Any = None,
        path: str | None = None,
        row: int | None = None,
        line: int | None = None,
    ):
        self.detail = message
        self.field = field
        self.reason = reason
        self.value = value
        self.path = path
        self.row = row
        self.line = line
        super().__init__(self._build())

    def _build(self) -> str:
        where = []
        if self.path is not None:
            where.append(str(self.path))
        if self.line is not None:
            where.append(f"line {self.line}")
        elif self.row is not None:
            where.append(f"row {self.row} (0-based)")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        prefix = ", ".join(where)
        return f"{prefix}: {self.detail}" if prefix else self.detail

    def locate(self, path: str | None = None, row: int | None = None, line: int | None = None) -> RecordError:
        """Fill in the file, row and line (once known by the pipeline) and rebuild the message."""
        if path is not None and self.path is None:
            self.path = path
        if row is not None and self.row is None:
            self.row = row
        if line is not None and self.line is None:
            self.line = line
        self.args = (self._build(),)
        return self

    def __str__(self) -> str:
        return self._build()


class InputFileError(DatasetFormatError, OSError):
    """An input file that cannot be read (missing, a directory, unreadable, corrupt)."""

    def __init__(self, path: str, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


class OutputExistsError(DatasetFormatError, FileExistsError):
    """The output path exists and ``overwrite`` was not given."""

    def __init__(self, path: str):
        self.path = str(path)
        super().__init__(f"{self.path}: output already exists; pass --overwrite to replace it")

    def __str__(self) -> str:
        return f"{self.path}: output already exists; pass --overwrite to replace it"


class TemplateError(DatasetFormatError, ValueError):
    """A chat template that cannot be found, is unsafe, or fails to render."""


class UnsafeTemplateError(TemplateError):
    """A chat template reached for Python internals (the sandbox refused it).

    Unlike other render failures it is never a problem of one row: a conversion stops under
    either ``on_error`` mode.
    """


class OptionError(DatasetFormatError, ValueError):
    """An adapter or conversion option with an invalid name or value."""
