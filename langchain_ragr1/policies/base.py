"""The policy interface: continue a transcript until a stop string or the token budget.

A policy is what writes the model turns. Text-level policies (any LangChain LLM or chat
model) see the transcript as text or messages; token-level policies (transformers, vLLM)
see token ids and return token ids and log-probs, which the graph stores untouched.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from langchain_ragr1.protocol import STOP_STRINGS, cut_at_stop
from langchain_ragr1.transcript import Segment, make_segment


@dataclass
class Generation:
    """One model turn as the policy produced it."""

    text: str
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    finish_reason: str | None = None  # "stop", "length" or backend-specific
    metadata: dict = field(default_factory=dict)


class Policy(ABC):
    """Continues a transcript. Subclasses implement :meth:`generate`.

    Token-level policies override :meth:`encode` (returning ids) and :meth:`render_prompt`
    (returning the chat-templated prompt with its ids).
    """

    #: Longest turn in new tokens (the paper uses 500).
    max_new_tokens: int = 500

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
        self, segments: Sequence[Segment], *, stop: Sequence[str] = STOP_STRINGS
    ) -> Generation:
        """Continue the transcript ``segments`` with one model turn."""

    async def agenerate(
        self, segments: Sequence[Segment], *, stop: Sequence[str] = STOP_STRINGS, **kwargs: Any
    ) -> Generation:
        """Async :meth:`generate`; by default runs it in a worker thread (``kwargs`` pass through)."""
        return await asyncio.to_thread(self.generate, segments, stop=stop, **kwargs)


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
    logprobs = generation.logprobs[:low] if generation.logprobs is not None else None
    return replace(
        generation,
        text=decode(ids[:low]) or "",
        token_ids=list(ids[:low]),
        logprobs=logprobs,
        finish_reason="stop",
    )
