"""Settings of one RAG-R1 episode, validated before anything runs."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, Mapping

from langchain_ragr1.errors import ConfigError
from langchain_ragr1.protocol import DEFAULT_DOC_MAX_TOKENS, DEFAULT_MAX_QUERIES, MODES, Mode

OnRetrievalError = Literal["raise", "empty"]
ON_RETRIEVAL_ERROR: tuple[str, ...] = ("raise", "empty")

#: Defaults of the retrieval budget: a retriever that always hangs fails after about
#: ``retrieval_timeout_s x (retrieval_retries + 1)`` = 20 s.
DEFAULT_RETRIEVAL_TIMEOUT_S = 10.0
DEFAULT_RETRIEVAL_RETRIES = 1


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an ``int`` >= ``minimum``, or a :class:`ConfigError` naming ``name`` (bools are refused)."""
    wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be {wanted}, got {value!r} ({type(value).__name__}).")
    if value < minimum:
        raise ConfigError(f"{name} must be {wanted}, got {value!r}.")
    return int(value)


def check_seconds(name: str, value: Any) -> float:
    """``value`` as a finite ``float`` > 0, or a :class:`ConfigError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(
            f"{name} must be a number of seconds > 0 (e.g. {DEFAULT_RETRIEVAL_TIMEOUT_S:g}), "
            f"got {value!r} ({type(value).__name__})."
        )
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(
            f"{name} must be a finite number of seconds > 0 (e.g. {DEFAULT_RETRIEVAL_TIMEOUT_S:g}), "
            f"got {value!r}."
        )
    return float(value)


@dataclass(frozen=True)
class RagR1Config:
    """How the graph runs an episode.

    Attributes:
        mode: ``"multi"`` (RAG-R1, several queries per search) or ``"single"`` (Search-R1).
        k: passages retrieved per query (the paper uses 3).
        max_turns: model turns in which searching is allowed; then one final turn without
            search (the paper: 4 in training, 5 at evaluation).
        max_queries: queries kept per multi-query search turn (the prompt says three).
        doc_max_tokens: per-query truncation of the information block.
        retrieval_timeout_s: seconds one retriever call may take, from when it starts, before
            it is abandoned as hung and counts as failed (default 10).
        retrieval_retries: extra attempts (exponential backoff) after a failed call (default
            1): a retriever that always hangs fails after about ``retrieval_timeout_s x
            (retrieval_retries + 1)`` = 20 s.
        on_retrieval_error: ``"raise"`` a :class:`RetrievalError`, or show the model an
            information block saying there are no results (``"empty"``).
        initial_search: retrieve with the question itself before the first model turn (with
            ``max_turns=0`` this is naive RAG).
    """

    mode: Mode = "multi"
    k: int = 3
    max_turns: int = 4
    max_queries: int = DEFAULT_MAX_QUERIES
    doc_max_tokens: int = DEFAULT_DOC_MAX_TOKENS
    retrieval_timeout_s: float = DEFAULT_RETRIEVAL_TIMEOUT_S
    retrieval_retries: int = DEFAULT_RETRIEVAL_RETRIES
    on_retrieval_error: OnRetrievalError = "raise"
    initial_search: bool = False

    def __post_init__(self) -> None:
        for name, choices in (("mode", MODES), ("on_retrieval_error", ON_RETRIEVAL_ERROR)):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in choices:
                raise ConfigError(f"{name}={value!r} is unknown: use one of {', '.join(map(repr, choices))}.")
        for name, minimum in (("k", 1), ("max_queries", 1), ("doc_max_tokens", 1),
                              ("max_turns", 0), ("retrieval_retries", 0)):
            object.__setattr__(self, name, check_int(name, getattr(self, name), minimum))
        object.__setattr__(
            self, "retrieval_timeout_s", check_seconds("retrieval_timeout_s", self.retrieval_timeout_s)
        )
        if not isinstance(self.initial_search, bool):
            raise ConfigError(
                f"initial_search must be True or False, got {self.initial_search!r} "
                f"({type(self.initial_search).__name__})."
            )

    def to_dict(self) -> dict:
        """The settings as a plain dict."""
        return asdict(self)


#: Settings a call may override through ``config["configurable"]`` (as LangChain users pass them).
CONFIGURABLE_FIELDS: tuple[str, ...] = (
    "mode", "k", "max_turns", "max_queries", "doc_max_tokens", "on_retrieval_error", "initial_search",
)


#: The field names of :class:`RagR1Config`: the agent's settings.
CONFIG_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(RagR1Config))


def settings_for(defaults: RagR1Config, config: Mapping[str, Any] | None) -> RagR1Config:
    """``defaults`` with the per-call overrides in ``config["configurable"]`` applied and checked."""
    configurable = (config or {}).get("configurable") or {}
    overrides = {key: configurable[key] for key in CONFIGURABLE_FIELDS if key in configurable}
    if not overrides:
        return defaults
    try:
        return replace(defaults, **overrides)
    except ConfigError as exc:
        raise ConfigError(f'config["configurable"]: {exc}') from exc


#: Named configurations of the one graph: RAG-R1, Search-R1's single query, and the baselines.
STRATEGIES: dict[str, dict] = {
    "multi": {"mode": "multi"},
    "single": {"mode": "single"},
    "naive-rag": {"mode": "multi", "initial_search": True, "max_turns": 0},
    "direct": {"mode": "multi", "max_turns": 0},
}


def config_for(strategy: str, **overrides) -> RagR1Config:
    """The :class:`RagR1Config` of a named strategy (see :data:`STRATEGIES`), with overrides.

    The strategy's own settings win over ``overrides`` (``direct`` always has ``max_turns=0``).
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"Unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}.")
    return RagR1Config(**{**overrides, **STRATEGIES[strategy]})
