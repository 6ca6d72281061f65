"""The policy interface: continue a transcript until a stop string or the token budget.

A policy is what writes the model turns. Text-level policies (any LangChain LLM or chat
model) see the transcript as text or messages; token-level policies (transformers, vLLM)
see token ids and return token ids and log-probs, which the graph stores untouched.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

from langchain_core.runnables import RunnableConfig

from langchain_ragr1.policies.repetition import repetition_end, text_repetition_end
from langchain_ragr1.protocol import STOP_STRINGS, cut_at_stop
from langchain_ragr1.transcript import Segment, make_segment


@dataclass
class Generation:
    """One model turn as the policy produced it."""

    text: str
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    #: "stop" (a stop string), "eos", "length", "repetition" (the repetition stop: see
    #: :func:`cut_repetition`), "context_overflow", or what a text-level backend reported
    finish_reason: str | None = None
    metadata: dict = field(default_factory=dict)


class Policy(ABC):
    """Continues a transcript. Subclasses implement :meth:`generate`.

    Token-level policies override :meth:`encode` (returning ids) and :meth:`render_prompt`
    (returning the chat-templated prompt with its ids).
    """

    #: Longest turn in new tokens (the paper uses 500).
    max_new_tokens: int = 500
    #: Whether the policy reports its turns to the callbacks of the ``config`` it is given (a
    #: LangChain model does: ``stream_mode="messages"``, tracing); otherwise the graph reports
    #: each turn as an LLM run itself.
    reports_own_runs: ClassVar[bool] = False
    #: The shipped SFT adapter folder a default policy carries (``default_policy`` with the default
    #: model sets it); the graph warns when a run's mode has a different shipped adapter.
    default_adapter: Path | None = None

    def render_prompt(self, prompt: str) -> Segment:
        """The ``prompt`` segment for the user message ``prompt``."""
        return make_segment("prompt", prompt)

    def encode(self, text: str) -> list[int] | None:
        """Token ids of environment text, or ``None`` for text-level policies."""
        return None

    def decode(self, token_ids: Sequence[int]) -> str | None:
        """Text of ``token_ids``, or ``None`` for text-level policies."""
        return None

    def truncate(self, text: str, max_tokens: int) -> str | None:
        """Cut ``text`` to ``max_tokens`` of this policy's tokenizer; ``None``: no tokenizer."""
        return None

    @abstractmethod
    def generate(
        self, segments: Sequence[Segment], *, stop: Sequence[str] = STOP_STRINGS,
        config: RunnableConfig | None = None,
    ) -> Generation:
        """Continue the transcript ``segments`` with one model turn. ``config`` is the graph
        node's ``RunnableConfig`` (callbacks, tags), for policies that pass it on."""

    async def agenerate(
        self, segments: Sequence[Segment], *, stop: Sequence[str] = STOP_STRINGS,
        config: RunnableConfig | None = None,
    ) -> Generation:
        """Async :meth:`generate`; by default runs it in a worker thread."""
        return await asyncio.to_thread(self.generate, segments, stop=stop, config=config)

    def close(self) -> None:  # noqa: B027 - an optional hook: most policies hold nothing
        """Release what the policy holds (batching workers, engines); nothing by default."""


def cut_generation(
    generation: Generation, stop: Sequence[str], decode: Callable[[Sequence[int]], str | None]
) -> Generation:
    """Cut a turn right after its first stop string, token ids and log-probs included.

    Text-level generations are cut in the text. Token-level ones keep the shortest prefix
    of tokens whose decoded text contains the stop string (binary search), so ids, text
    and log-probs stay aligned.
    """
    text, stopped = cut_at_stop(generation.text, stop)
    if not stopped:
        return generation
    if text == generation.text:
        return replace(generation, finish_reason="stop")
    ids = generation.token_ids
    if ids is None:
        return replace(generation, text=text, finish_reason="stop")
    low, high = 1, len(ids)
    while low < high:
        middle = (low + high) // 2
        if cut_at_stop(decode(ids[:middle]) or "", stop)[1]:
            high = middle
        else:
            low = middle + 1
    return _keep_ids(generation, low, decode, finish_reason="stop")


#: The ``finish_reason`` of a turn that the repetition stop ended; the graph counts it as an invalid action.
REPETITION = "repetition"


def cut_repetition(
    generation: Generation, span: int, count: int, decode: Callable[[Sequence[int]], str | None]
) -> Generation:
    """``generation`` cut where it has repeated itself: through the token that completes the ``count``-th
    non-overlapping copy of its last ``span`` tokens (see :class:`~langchain_ragr1.policies.repetition.RepeatTracker`),
    with ``finish_reason="repetition"`` and ``metadata["repeat_stop"] = {"tokens": span, "count": count}``.

    Token-level turns keep exactly their first ids (the text decoded from those, the matching log-probs);
    text-level turns count words and punctuation marks as units and keep their text through that unit.
    A turn whose stop string ends on that very token keeps ``"stop"``: it closed its tag. Unchanged when
    ``span`` is 0 or the turn never repeats; a turn the policy stopped there already is only labelled.
    """
    if span <= 0:
        return generation
    ids = generation.token_ids
    if ids is not None:
        kept, length = repetition_end(ids, span, count), len(ids)
    else:
        kept, length = text_repetition_end(generation.text, span, count), len(generation.text.rstrip())
    if kept is None or (kept >= length and generation.finish_reason == "stop"):
        return generation
    metadata = {**(generation.metadata or {}), "repeat_stop": {"tokens": span, "count": count}}
    if ids is None:
        return replace(generation, text=generation.text[:kept], finish_reason=REPETITION, metadata=metadata)
    return _keep_ids(generation, kept, decode, finish_reason=REPETITION, metadata=metadata)


def _keep_ids(
    generation: Generation, n: int, decode: Callable[[Sequence[int]], str | None], **changes: Any
) -> Generation:
    """``generation`` cut to its first ``n`` token ids, the text decoded from exactly those and
    the matching log-probs, so ids, text and log-probs stay aligned."""
    ids = generation.token_ids or []
    logprobs = generation.logprobs[:n] if generation.logprobs is not None else None
    return replace(generation, text=decode(ids[:n]) or "", token_ids=list(ids[:n]), logprobs=logprobs, **changes)


def cap_generation(
    generation: Generation, limit: int, decode: Callable[[Sequence[int]], str | None]
) -> Generation:
    """``generation`` cut to at most ``limit`` characters, token ids and log-probs included.

    Text-level turns (and ids the policy cannot decode) keep their first ``limit`` characters.
    Token-level turns keep the longest prefix of token ids whose decoded text fits (galloping
    then binary search, so decoding costs about the kept length), with the text decoded from
    exactly those ids and the matching log-probs: ids, text and log-probs stay aligned, as
    after a stop-string cut.
    A cut turn gets ``finish_reason="length"`` and ``metadata["turn_cut_at_chars"]``.
    """
    text = generation.text if isinstance(generation.text, str) else ""
    if len(text) <= limit:
        return generation
    metadata = {**(generation.metadata or {}), "turn_cut_at_chars": limit, "turn_chars": len(text)}
    ids = generation.token_ids
    if ids is None or (ids and decode(ids[:1]) is None):  # text-level (or ids it cannot decode)
        return replace(generation, text=text[:limit], finish_reason="length", metadata=metadata)

    def fits(n: int) -> bool:
        return len(decode(ids[:n]) or "") <= limit

    low, high = 0, len(ids)  # fits(low) holds; the answer is in [low, high]
    step = 1024
    while low + step < high and fits(low + step):
        low, step = low + step, step * 2
    high = min(high, low + step)
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return _keep_ids(generation, low, decode, finish_reason="length", metadata=metadata)
