"""The command line's logging: our own loggers at INFO on stderr, libraries at their own levels."""

from __future__ import annotations

import logging
import sys


class _StderrHandler(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when a record is emitted."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging() -> None:
    """Our loggers at INFO on stderr (conversion stats, data sizes); libraries keep their own levels."""
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("reward_plugin", "dataset_formats"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False
