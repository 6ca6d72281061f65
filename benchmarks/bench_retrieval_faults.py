"""Faults of the retrieval step: cancelled runs and a retriever that hangs under load.

Measures, with the package's fakes (no model, no store):

- ``cancel-*``: ``asyncio.wait_for(agent.ainvoke(q), 0.3)`` with ``retrieval_retries=3``
  against a retriever that takes 1 s (sync and async ones): how long until the caller gets
  control back, and how many retriever calls were made (counted 2 s later, so late re-sends
  show up).
- ``aclose-*``: ``agent.astream(q)`` closed while the retriever works: retriever calls that
  started after ``aclose()`` returned.
- ``hang-*``: 50 concurrent ``ainvoke`` calls whose retriever hangs (timeout 0.2 s, the
  default 1 retry): the most calls hung at once, the most ``ragr1-retrieve`` threads alive
  at once, and the wall time of the 50 calls (``hang-stubborn``: an async retriever that
  ignores cancellation; ``slow-*``: one that answers after 1 s, past its 0.2 s timeout).

    python benchmarks/bench_retrieval_faults.py
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from pydantic import ConfigDict  # noqa: E402

from langchain_ragr1 import RagR1Agent  # noqa: E402
from langchain_ragr1.testing import ScriptedPolicy  # noqa: E402

DOCS = [Document("Paris capital of France", metadata={"title": "Paris"})]
TURNS = ["<search> Paris </search>", "<answer> Paris </answer>"]


class SlowRetriever(BaseRetriever):
    """Answers after ``delay_s`` (forever while ``release`` is unset, when ``hang``); counts its calls."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    delay_s: float = 1.0
    hang: bool = False
    stubborn: bool = False  # an async hang that ignores cancellation
    release: threading.Event = threading.Event()
    starts: list[float] = []

    def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
        self.starts.append(time.monotonic())
        if self.hang:
            self.release.wait()
        else:
            time.sleep(self.delay_s)
        return list(DOCS)


class SlowAsyncRetriever(SlowRetriever):
    """The same with its own async path (cancellable ``asyncio.sleep``)."""

    async def _aget_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
        self.starts.append(time.monotonic())
        if self.hang:
            while not self.release.is_set():
                try:
                    await asyncio.sleep(0.02)
                except asyncio.CancelledError:
                    if not self.stubborn:
                        raise
        else:
            await asyncio.sleep(self.delay_s)
        return list(DOCS)


def agent(retriever: SlowRetriever, **kwargs: Any) -> RagR1Agent:
    return RagR1Agent(ScriptedPolicy(TURNS), retriever, **kwargs)


async def cancel(kind: type[SlowRetriever]) -> str:
    retriever = kind(starts=[])
    started = time.monotonic()
    try:
        await asyncio.wait_for(agent(retriever, retrieval_retries=3).ainvoke("q"), 0.3)
    except asyncio.TimeoutError:
        pass
    elapsed = time.monotonic() - started
    await asyncio.sleep(2)
    return f"back after {elapsed:.2f} s, {len(retriever.starts)} retriever call(s)"


async def aclose(kind: type[SlowRetriever]) -> str:
    retriever = kind(delay_s=0.5, starts=[])
    stream = agent(retriever, retrieval_retries=3, retrieval_timeout_s=0.3).astream("q", stream_mode="custom")
    async for event in stream:
        if event.get("event") == "search":
            break
    await asyncio.sleep(0.1)
    await stream.aclose()
    closed = time.monotonic()
    await asyncio.sleep(2)
    late = [t for t in retriever.starts if t > closed]
    return f"{len(late)} retriever call(s) after aclose() ({len(retriever.starts)} in all)"


def retrieve_threads(kind: type[SlowRetriever]) -> int:
    """Retrieval threads of the runners of ``kind`` (a runner names its threads after its retriever)."""
    return sum(t.name == f"ragr1-retrieve[{kind.__name__}]" for t in threading.enumerate())


async def hang(kind: type[SlowRetriever], delay_s: float | None = None, stubborn: bool = False) -> str:
    """50 concurrent runs; the retriever hangs (until the end), or answers after ``delay_s``."""
    release = threading.Event()
    # A class of its own, so the threads counted are this scenario's (a runner names its
    # threads after its retriever's class; an earlier scenario's may still be alive).
    kind = type(f"{kind.__name__}{'Hanging' if delay_s is None else 'Late'}", (kind,), {})
    retriever = kind(hang=delay_s is None, delay_s=delay_s or 0.0, stubborn=stubborn, release=release, starts=[])
    hung_agent = agent(retriever, retrieval_timeout_s=0.2, on_retrieval_error="empty")
    runner = hung_agent.graph.nodes["retrieve"].bound.func.__self__.retrieve_one  # type: ignore[attr-defined]
    peak = {"hung": 0, "threads": 0}
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            peak["hung"] = max(peak["hung"], runner.hung_calls)
            peak["threads"] = max(peak["threads"], retrieve_threads(kind))
            await asyncio.sleep(0.01)

    watcher = asyncio.ensure_future(watch())
    started = time.monotonic()
    await asyncio.gather(*(hung_agent.ainvoke("q") for _ in range(50)))
    elapsed = time.monotonic() - started
    await asyncio.sleep(0.3)  # calls abandoned at the end show up too
    threads_after = retrieve_threads(kind)
    done.set()
    await watcher
    release.set()
    return (f"50 calls in {elapsed:.2f} s, {len(retriever.starts)} retriever calls, "
            f"at most {peak['hung']} hung and {peak['threads']} retrieval threads at once, "
            f"{threads_after} threads 0.3 s after")


def main() -> None:
    for name, run in (("cancel-sync", cancel(SlowRetriever)), ("cancel-async", cancel(SlowAsyncRetriever)),
                      ("aclose-sync", aclose(SlowRetriever)), ("aclose-async", aclose(SlowAsyncRetriever)),
                      ("hang-sync", hang(SlowRetriever)), ("hang-async", hang(SlowAsyncRetriever)),
                      ("hang-stubborn", hang(SlowAsyncRetriever, stubborn=True)),
                      ("slow-sync", hang(SlowRetriever, 1.0)), ("slow-async", hang(SlowAsyncRetriever, 1.0))):
        print(f"{name:14s} {asyncio.run(run)}", flush=True)


if __name__ == "__main__":
    main()
