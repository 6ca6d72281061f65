"""Where converted models and built indexes are cached."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "RAGR1_HOME"


def cache_dir() -> Path:
    """``$RAGR1_HOME`` or ``~/.cache/langchain-ragr1``; created on first use."""
    path = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "langchain-ragr1")
    path.mkdir(parents=True, exist_ok=True)
    return path
