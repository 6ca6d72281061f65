"""What ``weights`` of the ``"fast"`` backend may be: the format its weights are stored and multiplied in; and its
``prompt_lookup_num_tokens`` and ``prefix_cache_sequences`` (checked here, without torch, before a model loads)."""

from __future__ import annotations

from typing import Any

from langchain_ragr1.errors import ConfigError

WEIGHT_KINDS: tuple[str, ...] = ("bfloat16", "float32", "int8", "int4")


def check_weights(weights: Any) -> None:
    """``weights`` is one of :data:`WEIGHT_KINDS`, or a :class:`ConfigError` says which are."""
    if weights not in WEIGHT_KINDS:
        raise ConfigError(f"weights={weights!r} is unknown: use one of {', '.join(WEIGHT_KINDS)}.")


#: ``FastPolicy``'s ``prompt_lookup_num_tokens`` (the longest draft of prompt-lookup speculative decoding) when
#: none is given, with bfloat16 weights: measured 1.2-1.9x the engine's batch-1 decode rate on RAG-R1 turns
#: (reports/benchmarks/bench_generate_lookup.txt).
DEFAULT_PROMPT_LOOKUP = 8


def default_prompt_lookup(weights: str) -> int:
    """The ``prompt_lookup_num_tokens`` of ``weights`` when none is given: :data:`DEFAULT_PROMPT_LOOKUP` for
    ``"bfloat16"``; 0 (off) otherwise: with float32 weights a forward pass over 2-13 positions took 1.8-2.3x a
    one-position pass here (bf16: 1.07-1.3x up to 9), so drafts rarely pay, and int8/int4 are not measured."""
    return DEFAULT_PROMPT_LOOKUP if weights == "bfloat16" else 0


def check_count(name: str, value: Any) -> None:
    """``value`` of the setting ``name`` is ``None`` (its default) or an integer >= 0 (0: off), or a
    :class:`ConfigError` names it."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name}={value!r} must be an integer >= 0 (0: off) or None.")


def check_prompt_lookup(value: Any) -> None:
    """``prompt_lookup_num_tokens`` is ``None`` (the weights' default) or an integer >= 0."""
    check_count("prompt_lookup_num_tokens", value)
