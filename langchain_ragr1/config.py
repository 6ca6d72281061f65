"""Settings of one RAG-R1 episode, validated before anything runs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, Mapping

from langchain_ragr1.errors import ConfigError
from langchain_ragr1.protocol import DEFAULT_DOC_MAX_TOKENS, DEFAULT_MAX_QUERIES, MODES, Mode

OnRetrievalError = Literal["raise", "empty"]


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
        retrieval_timeout_s: seconds one retriever call may take before it counts as failed.
        retrieval_retries: extra attempts (exponential backoff) after a failed call.
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
    retrieval_timeout_s: float = 30.0
    retrieval_retries: int = 2
    on_retrieval_error: OnRetrievalError = "raise"
    initial_search: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode={self.mode!r} is unknown: use one of {', '.join(MODES)}.")
        for name in ("k", "max_queries", "doc_max_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        if not isinstance(self.max_turns, int) or self.max_turns < 0:
            raise ConfigError(f"max_turns must be an integer >= 0, got {self.max_turns!r}.")
        if not isinstance(self.retrieval_retries, int) or self.retrieval_retries < 0:
            raise ConfigError(f"retrieval_retries must be >= 0, got {self.retrieval_retries!r}.")
        if not self.retrieval_timeout_s or self.retrieval_timeout_s <= 0:
            raise ConfigError(
                f"retrieval_timeout_s must be > 0 seconds, got {self.retrieval_timeout_s!r}."
            )
        if self.on_retrieval_error not in ("raise", "empty"):
            raise ConfigError(
                f"on_retrieval_error={self.on_retrieval_error!r}: use 'raise' or 'empty'."
            )

    def to_dict(self) -> dict:
        """The settings as a plain dict."""
        return asdict(self)


#: Settings a call may override through ``config["configurable"]`` (as LangChain users pass them).
CONFIGURABLE_FIELDS: tuple[str, ...] = (
    "mode", "k", "max_turns", "max_queries", "doc_max_tokens", "on_retrieval_error", "initial_search",
)


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
