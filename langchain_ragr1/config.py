"""Settings of one RAG-R1 episode, validated before anything runs."""

from __future__ import annotations

import difflib
import math
import numbers
import warnings
from dataclasses import asdict, dataclass, fields, replace
from typing import Annotated, Any, Literal, Mapping

from pydantic import Field
from typing_extensions import TypedDict

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


class RagR1Context(TypedDict, total=False):
    """Per-run settings: LangGraph's ``context_schema`` of the graph (``graph.invoke(..., context={"k": 5})``,
    ``agent.invoke(q, context=...)``; LangGraph Studio shows it as a form). A key left out keeps the
    agent's own setting. The same keys work in ``config["configurable"]``; where both give one, the
    context's wins."""

    mode: Annotated[Mode, Field(description='"multi": several queries per search (RAG-R1); "single": one (Search-R1)')]
    k: Annotated[int, Field(ge=1, description="passages retrieved per query")]
    max_turns: Annotated[int, Field(ge=0, description="model turns that may search, before one final turn")]
    max_queries: Annotated[int, Field(ge=1, description="queries kept per search turn")]
    doc_max_tokens: Annotated[int, Field(ge=1, description="tokens of retrieved text shown per query")]
    on_retrieval_error: Annotated[
        OnRetrievalError, Field(description='"raise" a RetrievalError, or show the model "no results" ("empty")')]
    initial_search: Annotated[bool, Field(description="retrieve with the question before the first turn")]


#: Settings a call may override through ``context=`` or ``config["configurable"]``: the keys of
#: :class:`RagR1Context`.
CONFIGURABLE_FIELDS: tuple[str, ...] = tuple(RagR1Context.__annotations__)


#: The field names of :class:`RagR1Config`: the agent's settings.
CONFIG_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(RagR1Config))

#: A ``configurable`` key that is not ours but this close (``difflib`` ratio, after lower-casing and
#: ``-`` -> ``_``) to one of ours is taken for a misspelling and warned about; ``model`` (the usual
#: key of LangChain's ``configurable_alternatives``) never is.
MISSPELLING_CUTOFF = 0.8
_NOT_MISSPELLINGS = frozenset({"model"})


class SettingWarning(UserWarning):
    """A per-run key that looks like a misspelt RAG-R1 setting (it is ignored)."""


def check_configurable(configurable: Mapping[str, Any]) -> None:
    """Refuse agent-only settings in ``configurable`` and warn about keys that look like misspelt
    per-run settings. LangGraph's, LangSmith's and other runnables' keys pass untouched."""
    for key in configurable:
        if not isinstance(key, str) or key in CONFIGURABLE_FIELDS or key.startswith("__"):
            continue
        if key in CONFIG_FIELDS:
            raise ConfigError(
                f'config["configurable"]["{key}"]: {key} is fixed when the agent is built '
                f"(RagR1Agent(..., {key}=...)); per run, set one of {', '.join(CONFIGURABLE_FIELDS)}."
            )
        spelled = key.lower().replace("-", "_")
        close = difflib.get_close_matches(spelled, CONFIG_FIELDS, n=1, cutoff=MISSPELLING_CUTOFF)
        if close and key not in _NOT_MISSPELLINGS:
            warnings.warn(
                f'config["configurable"]["{key}"] is not a RAG-R1 setting and is ignored: did you mean '
                f"{close[0]!r}? The per-run settings are {', '.join(CONFIGURABLE_FIELDS)}.",
                SettingWarning, stacklevel=2,
            )


def unknown_settings(kind: str, given: Any, known: Any) -> ConfigError:
    """A :class:`ConfigError` naming each unknown setting, with the closest known one."""
    known = sorted(known)
    hints = []
    for name in sorted(given, key=str):
        close = difflib.get_close_matches(str(name), known, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ConfigError(f"{kind} got unknown setting(s) {', '.join(hints)}: use {', '.join(known)}.")


def _context_overrides(context: Any) -> dict[str, Any]:
    if context is None:
        return {}
    if not isinstance(context, Mapping):
        raise ConfigError(f"context must be a dict of RAG-R1 settings ({', '.join(CONFIGURABLE_FIELDS)}), "
                          f"got {type(context).__name__}.")
    unknown = set(context) - set(CONFIGURABLE_FIELDS)
    if unknown:
        raise unknown_settings("context", unknown, CONFIGURABLE_FIELDS)
    return dict(context)


def run_context(config: Mapping[str, Any] | None) -> Any:
    """The ``context`` of the LangGraph run that ``config`` belongs to (None outside a run, or without one)."""
    from langgraph.runtime import Runtime

    configurable = (config or {}).get("configurable") or {}
    runtime = next((value for value in configurable.values() if isinstance(value, Runtime)), None)
    return runtime.context if runtime is not None else None


def settings_for(defaults: RagR1Config, config: Mapping[str, Any] | None, context: Any = None) -> RagR1Config:
    """``defaults`` with the per-run overrides in ``config["configurable"]`` and then ``context``
    (a :class:`RagR1Context` dict) applied and checked."""
    configurable = (config or {}).get("configurable") or {}
    overrides = {key: configurable[key] for key in CONFIGURABLE_FIELDS if key in configurable}
    try:
        settings = replace(defaults, **overrides) if overrides else defaults
    except ConfigError as exc:
        raise ConfigError(f'config["configurable"]: {exc}') from exc
    from_context = _context_overrides(context)
    try:
        return replace(settings, **from_context) if from_context else settings
    except ConfigError as exc:
        raise ConfigError(f"context: {exc}") from exc


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
