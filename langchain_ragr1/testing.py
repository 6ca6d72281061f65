"""Fast stand-ins for tests and benchmarks: a scripted policy and an in-memory retriever."""

from __future__ import annotations

import threading
import time
from typing import Callable, Sequence

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever

from langchain_ragr1.policies.base import Generation, Policy
from langchain_ragr1.protocol import STOP_STRINGS
from langchain_ragr1.transcript import Segment, make_segment


class ScriptedPolicy(Policy):
    """Replays fixed turns; ``token_level`` fakes token ids (one id per character)."""

    def __init__(self, turns: Sequence[str] | Callable[[Sequence[Segment]], str], *,
                 token_level: bool = False, delay_s: float = 0.0) -> None:
        self.turns = turns
        self.token_level = token_level
        self.delay_s = delay_s
        self.calls: list[list[Segment]] = []
        self._lock = threading.Lock()

    def _ids(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def render_prompt(self, prompt: str) -> Segment:
        return make_segment("prompt", prompt, self._ids(prompt) if self.token_level else None)

    def decode(self, token_ids) -> str | None:
        return "".join(map(chr, token_ids)) if self.token_level else None

    def encode(self, text: str) -> list[int] | None:
        return self._ids(text) if self.token_level else None

    def generate(self, segments, *, stop=STOP_STRINGS, config=None) -> Generation:
        with self._lock:
            self.calls.append(list(segments))
            index = len([s for s in segments if s["role"] == "policy"])
        if self.delay_s:
            time.sleep(self.delay_s)
        if callable(self.turns):
            text = self.turns(segments)
        else:
            text = self.turns[min(index, len(self.turns) - 1)]
        if not self.token_level:
            return Generation(text=text, finish_reason="stop")
        ids = self._ids(text)
        return Generation(text=text, token_ids=ids, logprobs=[-0.5] * len(ids), finish_reason="stop")


class MemoryRetriever(BaseRetriever):
    """Keyword-overlap retriever over in-memory documents, with optional latency/failures."""

    documents: list[Document]
    k: int = 3
    delay_s: float | Callable[[str], float] = 0.0
    fail_times: int = 0
    calls: list[str] = []

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                k: int | None = None) -> list[Document]:
        self.calls.append(query)
        delay = self.delay_s(query) if callable(self.delay_s) else self.delay_s
        if delay:
            time.sleep(delay)
        if self.fail_times > 0:
            self.fail_times -= 1
            raise ConnectionError("retriever backend unavailable")
        words = set(query.lower().split())
        scored = sorted(self.documents, key=lambda d: -len(words & set(d.page_content.lower().split())))
        return scored[: k or self.k]
