"""What ``weights`` of the ``"fast"`` backend may be: the format its weights are stored and multiplied in; and its
``prompt_lookup_num_tokens`` (checked here, without torch, before a model loads)."""

from __future__ import annotations

from typing import Any

from langchain_ragr1.errors import ConfigError

WEIGHT_KINDS: tuple[str, ...] = ("bfloat16", "float32", "int8", "int4")


def check_weights(weights: Any) -> None:
    """``weights`` is one of :data:`WEIGHT_KINDS`, or a :class:`ConfigError` says which are."""
    if weights not in WEIGHT_KINDS:
        raise ConfigError(f"weights={weights!r} is unknown: use one of {', '.join(WEIGHT_KINDS)}.")


#: ``FastPolicy``'s ``prompt_lookup_num_tokens`` when none is given: the longest draft of prompt-lookup speculative
#: decoding (0: off).
DEFAULT_PROMPT_LOOKUP = 0


def check_prompt_lookup(value: Any) -> None:
    """``prompt_lookup_num_tokens`` is an integer >= 0, or a :class:`ConfigError` names it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"prompt_lookup_num_tokens={value!r} must be an integer >= 0 (0: off).")
