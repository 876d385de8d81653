"""The dataset commands (``formats``, ``convert``, ``inspect``) and the one place CLI errors are printed."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .errors import DatasetFormatError


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``formats``, ``convert`` and ``inspect`` to a ``reward-plugin``-style sub-command parser."""
    from . import commands

    commands.add_commands(subparsers)


def run_cli(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, errors: tuple[type[BaseException], ...]
) -> int:
    """Parse ``argv`` and run the chosen command; ``errors`` become one ``error: ...`` line and exit 1."""
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int | None] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except errors as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (a wrapped third-party message may hold line breaks)."""
    return " ".join(part.strip() for part in str(exc).splitlines() if part.strip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dataset_formats", description="Convert preference datasets."
    )
    add_commands(parser.add_subparsers(title="commands", metavar="COMMAND"))
    return run_cli(parser, argv, (DatasetFormatError,))
