"""Logging for the package: library modules log to ``logging.getLogger(__name__)`` (children of
``langchain_ragr1``) and never print; the command-line programs call :func:`log_to_stderr` so
that their notices (one-time conversions, rebuilt caches, training steps) reach the terminal.

Without any logging setup, Python shows warnings (a rebuilt store, refused shipped vectors) on
stderr and drops info lines; configure ``logging`` (or call :func:`log_to_stderr`) to see them.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

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


def quiet_libraries() -> None:
    """Keep stderr to the package's own notices: no progress bars (transformers' "Loading weights",
    huggingface_hub's), no transformers info/advisory lines and no ``FutureWarning`` from the
    libraries underneath. The command-line programs call it unless ``--verbose``; errors still show."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when transformers/hub import
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    if "transformers" in sys.modules:  # imported already: its switches, not the environment
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
