"""``reward-plugin``: one CLI for the dataset toolkit and the trainer."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from dataset_formats.cli import add_commands as add_dataset_commands
from dataset_formats.cli import run_cli
from dataset_formats.errors import DatasetFormatError

from .errors import RewardPluginError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reward-plugin",
        description=(
            "Prepare preference data and train pairwise (Bradley-Terry) reward models. "
            "Remote code is never run: trust_remote_code is off unless you turn it on."
        ),
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    add_dataset_commands(sub)
    from . import commands, plugins

    commands.add_commands(sub)
    plugins.load_plugins().hook.register_commands(cli=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
    except (DatasetFormatError, RewardPluginError) as exc:
        import sys

        print(f"error: {exc}", file=sys.stderr)
        return 1
    return run_cli(parser, argv, (DatasetFormatError, RewardPluginError))
