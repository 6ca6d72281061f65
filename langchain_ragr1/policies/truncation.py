"""Whether a LangChain model's turn was cut by the provider's token limit, whoever the provider.

Each integration reports why a generation stopped under its own key and value in the
message's ``response_metadata`` (an LLM's ``generation_info``). :data:`TRUNCATION_FIELDS`
is the one table of those that mean "the output-token limit (or the context window) cut the
turn"; :func:`truncation` reads it. Where a model reports none of these keys, its
``usage_metadata`` helps: as many output tokens as the model's own cap means it was cut.
"""

from __future__ import annotations

from typing import Any, Mapping

#: ``(key in response_metadata, value meaning "cut by the token limit", who reports it)``.
#: Values compare case-insensitively; a dotted key reads a nested dict.
TRUNCATION_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("finish_reason", "length", "OpenAI chat and completions (langchain-openai), OpenAI-compatible "
                                "servers (vLLM, Groq, Together, Fireworks, DeepSeek), Mistral, "
                                "Hugging Face TGI, llama.cpp"),
    ("finish_reason", "model_length", "Mistral (the model's context window is full)"),
    ("finish_reason", "MAX_TOKENS", "Google Gemini (langchain-google-genai, Vertex AI), Cohere"),
    ("incomplete_details.reason", "max_output_tokens", "OpenAI Responses API"),
    ("stop_reason", "max_tokens", "Anthropic (langchain-anthropic), Bedrock InvokeModel "
                                  "(ChatBedrock, Anthropic models), IBM watsonx"),
    ("stop_reason", "model_context_window_exceeded", "Anthropic (the context window is full)"),
    ("stop_reason", "length", "Bedrock InvokeModel (Mistral models)"),
    ("stopReason", "max_tokens", "Bedrock Converse (ChatBedrockConverse)"),
    ("stopReason", "model_context_window_exceeded", "Bedrock Converse (the context window is full)"),
    ("completionReason", "LENGTH", "Bedrock InvokeModel (Amazon Titan models)"),
    ("done_reason", "length", "Ollama (langchain-ollama)"),
)

#: Attributes under which LangChain models keep their cap on new tokens.
TOKEN_CAP_ATTRIBUTES = ("max_tokens", "max_output_tokens", "max_completion_tokens", "max_new_tokens",
                        "num_predict", "max_tokens_to_sample")


def _field(metadata: Mapping[str, Any], key: str) -> Any:
    value: Any = metadata
    for part in key.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return getattr(value, "name", value)  # an enum (Gemini's FinishReason) by its name


def reported_fields(metadata: Mapping[str, Any]) -> dict[str, str]:
    """The stop-reason fields of the table that ``metadata`` reports, as strings."""
    found = {}
    for key in dict.fromkeys(key for key, _, _ in TRUNCATION_FIELDS):
        value = _field(metadata, key)
        if value is not None:
            found[key] = str(value)
    return found


def token_cap(llm: Any) -> int | None:
    """The model's own cap on the new tokens of one call, when it has one."""
    for name in TOKEN_CAP_ATTRIBUTES:
        value = getattr(llm, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def truncation(metadata: Mapping[str, Any], usage: Mapping[str, Any] | None = None,
               cap: int | None = None) -> str | None:
    """Why the turn was cut by the token limit (``"stop_reason='max_tokens'"``), or ``None``.

    ``metadata`` is the message's ``response_metadata`` (an LLM's ``generation_info``). Only
    when it names no stop reason of the table does ``usage`` (``usage_metadata``) decide:
    ``output_tokens`` at the model's ``cap`` means the cap cut the turn.
    """
    fields = reported_fields(metadata)
    for key, value, _ in TRUNCATION_FIELDS:
        if fields.get(key, "").casefold() == value.casefold():
            return f"{key}={fields[key]!r}"
    if not fields and usage and cap:
        output_tokens = usage.get("output_tokens")
        if isinstance(output_tokens, int) and output_tokens >= cap:
            return f"usage_metadata output_tokens={output_tokens} at the model's cap of {cap}"
    return None
