"""Any OpenAI-compatible server (``vllm.entrypoints.openai.api_server``, llama.cpp, ...) as a policy.

The server is reached through LangChain's own models, wrapped in :class:`LangChainPolicy`:
``VLLMOpenAI`` (``/v1/completions``: the model continues the plain transcript text) or
``ChatOpenAI`` (``/v1/chat/completions``: the prompt is one user message, turns are
assistant messages). Both are text-level: no token ids or log-probs reach the transcript.
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.language_models import BaseLanguageModel
from pydantic import SecretStr

from langchain_ragr1.errors import ConfigError, MissingResourceError
from langchain_ragr1.policies.langchain import LangChainPolicy
from langchain_ragr1.policies.sampling import DEFAULT_REPEAT_STOP_COUNT, DEFAULT_REPEAT_STOP_TOKENS

Flavour = Literal["completions", "chat"]
FLAVOURS: tuple[str, ...] = ("completions", "chat")


def openai_server_llm(
    base_url: str,
    model: str,
    *,
    flavour: Flavour = "completions",
    api_key: str = "EMPTY",
    temperature: float = 0.7,
    top_p: float = 0.95,
    max_tokens: int = 500,
    timeout: float = 120.0,
    max_retries: int = 2,
    include_stop_str: bool = True,
    **kwargs: Any,
) -> BaseLanguageModel:
    """The LangChain model for an OpenAI-compatible server at ``base_url`` (e.g. ``http://127.0.0.1:8000/v1``).

    ``include_stop_str`` sends vLLM's ``include_stop_str_in_output`` (otherwise the
    ``</search>``/``</answer>`` tag is stripped); set it ``False`` for servers that reject
    unknown request fields. ``kwargs`` go to ``VLLMOpenAI``/``ChatOpenAI``.
    """
    if flavour not in FLAVOURS:
        raise ConfigError(f"flavour={flavour!r} is unknown: use one of {', '.join(FLAVOURS)}.")
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}.")
    extra_body = {"include_stop_str_in_output": True} if include_stop_str else None
    common: dict[str, Any] = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens, "max_retries": max_retries}
    if flavour == "chat":
        try:
            from langchain_openai import ChatOpenAI
        except ImportError as exc:
            raise MissingResourceError(
                f'flavour="chat" needs langchain-openai ({exc}): pip install "langchain-ragr1[openai]".'
            ) from exc
        return ChatOpenAI(
            base_url=base_url.rstrip("/"), api_key=SecretStr(api_key), model=model, timeout=timeout,
            extra_body=extra_body, **common, **kwargs,
        )
    try:
        from langchain_community.llms import VLLMOpenAI
    except ImportError as exc:
        raise MissingResourceError(
            f'flavour="completions" needs langchain-community and openai ({exc}): '
            'pip install "langchain-ragr1[openai]".'
        ) from exc
    model_kwargs = dict(kwargs.pop("model_kwargs", None) or {})
    if extra_body:
        model_kwargs["extra_body"] = {**model_kwargs.get("extra_body", {}), **extra_body}
    return VLLMOpenAI(
        openai_api_base=base_url.rstrip("/"), openai_api_key=api_key, model_name=model,
        request_timeout=timeout, model_kwargs=model_kwargs, **common, **kwargs,
    )


def openai_server_policy(base_url: str, model: str, *, repeat_stop_tokens: int = DEFAULT_REPEAT_STOP_TOKENS,
                         repeat_stop_count: int = DEFAULT_REPEAT_STOP_COUNT, **kwargs: Any) -> LangChainPolicy:
    """A :class:`LangChainPolicy` over :func:`openai_server_llm` (``kwargs``: its arguments). The server cannot
    be stopped mid-turn by the repetition stop (``repeat_stop_tokens``, ``repeat_stop_count``; 0 tokens: off):
    the policy cuts each finished turn where it repeated itself, counting words and punctuation marks."""
    return LangChainPolicy(openai_server_llm(base_url, model, **kwargs), repeat_stop_tokens=repeat_stop_tokens,
                           repeat_stop_count=repeat_stop_count)
