"""Any LangChain LLM or chat model as a text-level policy."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

from langchain_core.language_models import BaseChatModel, BaseLanguageModel, BaseLLM
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import Generation as LCGeneration
from langchain_core.prompt_values import StringPromptValue
from langchain_core.runnables import Runnable, RunnableConfig, RunnableWithFallbacks, ensure_config
from langchain_core.runnables.base import RunnableBindingBase
from langchain_core.runnables.configurable import DynamicRunnable, RunnableConfigurableAlternatives

from langchain_ragr1.errors import ConfigError
from langchain_ragr1.policies.base import REPETITION, Generation, Policy, cut_repetition
from langchain_ragr1.policies.sampling import DEFAULT_REPEAT_STOP_COUNT, DEFAULT_REPEAT_STOP_TOKENS, check_setting
from langchain_ragr1.policies.truncation import token_cap, truncation
from langchain_ragr1.protocol import STOP_STRINGS, cut_at_stop
from langchain_ragr1.transcript import Segment, transcript_text


def _close_stripped_stop(text: str, stop: Sequence[str]) -> str:
    """Re-append the stop tag that an API stripped (an open tag left unclosed at the end)."""
    for closing in stop:
        opening = closing.replace("</", "<", 1)
        last_open = text.rfind(opening)
        if last_open >= 0 and closing not in text[last_open:]:
            return text.rstrip() + " " + closing
    return text


def _llm_run_kwargs(config: RunnableConfig | None) -> dict:
    """What ``BaseLLM.invoke`` passes on from ``config`` to ``generate_prompt`` (callbacks, tags, ...)."""
    config = ensure_config(config)
    return {"callbacks": config.get("callbacks"), "tags": config.get("tags"), "metadata": config.get("metadata"),
            "run_name": config.get("run_name"), "run_id": config.pop("run_id", None)}


def wrapped_models(runnable: Any) -> list[BaseLanguageModel]:
    """The LangChain LLMs and chat models that ``runnable`` is, or wraps: through ``.bind``,
    ``.with_config``, ``.with_retry``, ``.with_listeners`` (bindings), ``.with_fallbacks`` (the
    model and every fallback) and ``.configurable_fields``/``.configurable_alternatives``."""
    if isinstance(runnable, BaseLanguageModel):
        return [runnable]
    if isinstance(runnable, RunnableBindingBase):
        return wrapped_models(runnable.bound)
    inner: list[Any] = []
    if isinstance(runnable, RunnableWithFallbacks):
        inner = [runnable.runnable, *runnable.fallbacks]
    elif isinstance(runnable, DynamicRunnable):
        inner = [runnable.default]
        if isinstance(runnable, RunnableConfigurableAlternatives):
            inner += [alt for alt in runnable.alternatives.values() if isinstance(alt, Runnable)]
    return [model for part in inner for model in wrapped_models(part)]


def chat_input(llm: Any) -> bool:
    """Whether ``llm`` (a model or a Runnable around models) takes chat messages (else a prompt
    string); a :class:`ConfigError` when it wraps no model, or chat models and LLMs together."""
    models = wrapped_models(llm)
    if not models:
        raise ConfigError(
            f"llm must be a LangChain LLM or chat model, a Runnable that wraps one (.bind(...), "
            f".with_retry(), .with_fallbacks([...]), .with_config(...), configurable fields or "
            f"alternatives), or a langchain_ragr1 Policy; got {type(llm).__name__}. A chain such as "
            f"prompt | model builds its own input: pass the model itself."
        )
    kinds = {isinstance(model, BaseChatModel) for model in models}
    if len(kinds) > 1:
        raise ConfigError(
            f"llm ({type(llm).__name__}) wraps both chat models and text LLMs "
            f"({', '.join(type(m).__name__ for m in models)}): the agent sends chat messages to a chat "
            f"model and one prompt string to an LLM, so wrap models of one kind only."
        )
    return kinds == {True}


class LangChainPolicy(Policy):
    """Wraps a LangChain ``BaseLLM`` or ``BaseChatModel``, or any Runnable around them
    (``model.with_retry()``, ``.with_fallbacks([...])``, ``.bind(...)``, ``.with_config(...)``).

    An LLM continues the plain transcript text. A chat model gets the prompt as one user
    message, each model turn as an assistant message and each ``<information>`` block as a
    user message. Stop strings are passed to the model when ``use_stop`` is true; APIs that
    strip the stop string get it back, and the agent cuts the turn itself either way.
    The graph passes its node ``config``, so callbacks (LangGraph's ``stream_mode="messages"``
    token streaming, tracing) and tags reach the model.

    The repetition stop (``repeat_stop_tokens``, ``repeat_stop_count``: :class:`Sampling`'s, with its
    defaults; ``repeat_stop_tokens=0`` is off) cannot stop a LangChain model mid-turn: it is applied to the
    finished turn, which is cut where its last ``repeat_stop_tokens`` units (words and punctuation marks:
    no token ids reach this policy) have occurred ``repeat_stop_count`` times, with
    ``finish_reason="repetition"``; the graph counts that turn as invalid.
    """

    reports_own_runs = True  # the model's own callbacks see each turn

    def __init__(self, llm: BaseLanguageModel | Runnable, *, use_stop: bool = True,
                 repeat_stop_tokens: int = DEFAULT_REPEAT_STOP_TOKENS,
                 repeat_stop_count: int = DEFAULT_REPEAT_STOP_COUNT) -> None:
        check_setting("repeat_stop_tokens", repeat_stop_tokens, "LangChainPolicy")
        check_setting("repeat_stop_count", repeat_stop_count, "LangChainPolicy")
        self.chat = chat_input(llm)
        self.llm = llm
        self.use_stop = use_stop
        self.repeat_stop_tokens = repeat_stop_tokens
        self.repeat_stop_count = repeat_stop_count

    def _messages(self, segments: Sequence[Segment]) -> list[BaseMessage]:
        messages: list[BaseMessage] = []
        for segment in segments:
            if segment["role"] == "policy":
                messages.append(AIMessage(segment["text"]))
            else:
                messages.append(HumanMessage(segment["text"].strip()))
        return messages

    def _input(self, segments: Sequence[Segment]) -> list[BaseMessage] | str:
        if self.chat:
            return self._messages(segments)
        return transcript_text(segments)

    def generate(
        self,
        segments: Sequence[Segment],
        *,
        stop: Sequence[str] = STOP_STRINGS,
        config: RunnableConfig | None = None,
    ) -> Generation:
        stop_arg = list(stop) if self.use_stop else None
        if isinstance(self.llm, BaseLLM):  # generate_prompt, as invoke does, but keeping generation_info
            result = self.llm.generate_prompt([StringPromptValue(text=transcript_text(segments))], stop=stop_arg,
                                              **_llm_run_kwargs(config))
            return self._generation(result.generations[0][0], stop)
        return self._generation(self.llm.invoke(self._input(segments), config, stop=stop_arg), stop)

    async def agenerate(
        self,
        segments: Sequence[Segment],
        *,
        stop: Sequence[str] = STOP_STRINGS,
        config: RunnableConfig | None = None,
    ) -> Generation:
        """The model's own async path (``ainvoke``), not a worker thread."""
        stop_arg = list(stop) if self.use_stop else None
        if isinstance(self.llm, BaseLLM):
            result = await self.llm.agenerate_prompt([StringPromptValue(text=transcript_text(segments))],
                                                     stop=stop_arg, **_llm_run_kwargs(config))
            return self._generation(result.generations[0][0], stop)
        return self._generation(await self.llm.ainvoke(self._input(segments), config, stop=stop_arg), stop)

    def _generation(self, output: BaseMessage | LCGeneration | str, stop: Sequence[str]) -> Generation:
        """The turn, with ``finish_reason="length"`` when the provider's token limit cut it
        (whatever field the provider reports that in: :mod:`~langchain_ragr1.policies.truncation`).

        A cut turn keeps its open tag open, so the graph never takes half an answer or half a
        query as final; any other turn gets back the stop tag an API stripped.
        """
        text: str
        if isinstance(output, BaseMessage):
            text = output.text
            metadata = dict(getattr(output, "response_metadata", {}) or {})
            usage = getattr(output, "usage_metadata", None)
        elif isinstance(output, str):  # a Runnable around a text LLM (.with_retry(), ...) returns its text only
            text, metadata, usage = output, {}, None
        else:  # an LLM's generation: its generation_info plays the part of response_metadata
            text, metadata, usage = output.text, dict(output.generation_info or {}), None
        cut_by = truncation(metadata, usage, token_cap(self.llm))
        if cut_by is not None:
            metadata["truncated_by"] = cut_by
            return self._cut_repetition(Generation(text=text, finish_reason="length", metadata=metadata), stop)
        finish_reason = metadata.get("finish_reason") or metadata.get("stop_reason")
        generation = Generation(text=_close_stripped_stop(text, stop), finish_reason=finish_reason, metadata=metadata)
        return self._cut_repetition(generation, stop)

    def _cut_repetition(self, generation: Generation, stop: Sequence[str]) -> Generation:
        """The finished turn cut where it repeated itself (:func:`cut_repetition`, on text units) before its
        first stop string ends; otherwise as it is (the graph cuts it after that stop string)."""
        text, stopped = cut_at_stop(generation.text, stop)
        head = replace(generation, text=text, finish_reason="stop") if stopped else generation
        cut = cut_repetition(head, self.repeat_stop_tokens, self.repeat_stop_count, self.decode)
        return cut if cut.finish_reason == REPETITION else generation
