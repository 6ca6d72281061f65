"""The policy interface: continue a transcript until a stop string or the token budget.

A policy is what writes the model turns. Text-level policies (any LangChain LLM or chat
model) see the transcript as text or messages; token-level policies (transformers, vLLM)
see token ids and return token ids and log-probs, which the graph stores untouched.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Sequence

from langchain_ragr1.protocol import STOP_STRINGS
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

    def truncate(self, text: str, max_tokens: int) -> str | None:
        """Cut ``text`` to ``max_tokens`` of this policy's tokenizer; ``None``: no tokenizer."""
        return None

    @abstractmethod
    def generate(
        self, segments: Sequence[Segment], *, stop: Sequence[str] = STOP_STRINGS
    ) -> Generation:
        """Continue the transcript ``segments`` with one model turn."""

    async def agenerate(
        self, segments: Sequence[Segment], *, stop: Sequence[str] = STOP_STRINGS
    ) -> Generation:
        """Async :meth:`generate`; by default runs it in a worker thread."""
        return await asyncio.to_thread(self.generate, segments, stop=stop)
