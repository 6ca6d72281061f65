"""Logging for the package: library modules log to ``logging.getLogger(__name__)`` (children of
``langchain_ragr1``) and never print; the command-line programs call :func:`log_to_stderr` so
that their notices (one-time conversions, rebuilt caches, training steps) reach the terminal.

Without any logging setup, Python shows warnings (a rebuilt store, refused shipped vectors) on
stderr and drops info lines; configure ``logging`` (or call :func:`log_to_stderr`) to see them.
"""

from __future__ import annotations

import logging
import sys

PACKAGE_LOGGER = "langchain_ragr1"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (test captures, redirections)."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        logging.Handler.__init__(self, level)

    @property
    def stream(self):
        return sys.stderr


def log_to_stderr(level: int = logging.INFO) -> logging.Logger:
    """Send the package's records at ``level`` and above to stderr as bare messages; idempotent."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
    return logger
