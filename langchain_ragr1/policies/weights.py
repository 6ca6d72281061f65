"""What ``weights`` of the ``"fast"`` backend may be: the format its weights are stored and multiplied in."""

from __future__ import annotations

from typing import Any

from langchain_ragr1.errors import ConfigError

WEIGHT_KINDS: tuple[str, ...] = ("bfloat16", "float32", "int8", "int4")


def check_weights(weights: Any) -> None:
    """``weights`` is one of :data:`WEIGHT_KINDS`, or a :class:`ConfigError` says which are."""
    if weights not in WEIGHT_KINDS:
        raise ConfigError(f"weights={weights!r} is unknown: use one of {', '.join(WEIGHT_KINDS)}.")
