"""Hung retriever calls: they free their capacity, never starve another agent, and fail clearly and soon."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from _threads import run_threads
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import VectorStore
from pydantic import ConfigDict

from langchain_ragr1 import RagR1Agent, RetrievalError
from langchain_ragr1.config import RagR1Config
from langchain_ragr1.retrieval import RetrievalRunner, RetrieverHungError, has_own_async
from langchain_ragr1.testing import MemoryRetriever, ScriptedPolicy

DOCS = [Document("Paris capital of France", metadata={"title": "Paris"})]
SEARCH = "<search> Paris </search>"
ANSWER = "<answer> Paris </answer>"


class HangingRetriever(BaseRetriever):
    """A stuck backend: no answer until ``release`` is set (then the documents)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    release: threading.Event

    def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
        self.release.wait()
        return list(DOCS)


class StubbornAsyncRetriever(BaseRetriever):
    """An async-native retriever that ignores cancellation until ``release`` is set."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    release: threading.Event

    def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
        raise AssertionError("the async path should be used")

    async def _aget_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
        while not self.release.is_set():
            try:
                await asyncio.sleep(0.02)
            except asyncio.CancelledError:
                pass
        return list(DOCS)


class HangingStore(VectorStore):
    """A vector store whose (sync-only) search hangs: LangChain's async search is a thread hop."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def add_texts(self, texts, metadatas=None, **kwargs):  # pragma: no cover - unused
        raise NotImplementedError

    @classmethod
    def from_texts(cls, texts, embedding, metadatas=None, **kwargs):  # pragma: no cover - unused
        raise NotImplementedError

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        self.release.wait()
        return list(DOCS)[:k]


@pytest.fixture
def release():
    """Set at the end of each test (and after 20 s at most), so the hung threads exit."""
    event = threading.Event()
    timer = threading.Timer(20, event.set)
    timer.daemon = True
    timer.start()
    yield event
    event.set()
    timer.cancel()


def hanging_agent(release: threading.Event, **kwargs: Any) -> RagR1Agent:
    kwargs = {"retrieval_timeout_s": 0.2, "retrieval_retries": 0, "on_retrieval_error": "empty", **kwargs}
    return RagR1Agent(ScriptedPolicy([SEARCH, ANSWER]), HangingRetriever(release=release), **kwargs)


def healthy_agent() -> RagR1Agent:
    # A 1 s budget per call: far more than an in-memory search needs.
    return RagR1Agent(ScriptedPolicy([SEARCH, ANSWER]), MemoryRetriever(documents=DOCS),
                      retrieval_timeout_s=1.0, retrieval_retries=0, on_retrieval_error="empty")


def found(result: dict) -> bool:
    return bool(result["documents"]) and "No results." not in result["trace"]


def test_hung_calls_of_one_agent_do_not_slow_a_healthy_agent(release):
    hang = hanging_agent(release)
    hung = hang.batch(["q"] * 40, {"max_concurrency": 40})
    assert not any(found(r) for r in hung)  # 40 calls hung (32 abandoned threads, 8 refused)

    healthy = healthy_agent()
    started = time.monotonic()
    results = [healthy.invoke("Where is Paris?") for _ in range(10)]
    elapsed = time.monotonic() - started
    assert all(found(r) for r in results), results[0]["retrievals"]
    assert elapsed < 3, f"10 healthy episodes took {elapsed:.1f} s"


def test_hung_calls_of_one_agent_do_not_slow_a_healthy_agent_async(release):
    async def main():
        hang = hanging_agent(release)
        await hang.abatch(["q"] * 40, {"max_concurrency": 40})  # 32 hung afterwards
        # More hung calls in flight while the healthy agent works, on the same event loop.
        in_flight = asyncio.gather(*(hanging_agent(release, retrieval_timeout_s=3).ainvoke("q")
                                     for _ in range(20)))
        await asyncio.sleep(0.1)
        healthy = healthy_agent()
        started = time.monotonic()
        results = [await healthy.ainvoke("Where is Paris?") for _ in range(10)]
        elapsed = time.monotonic() - started
        release.set()
        await in_flight
        return results, elapsed

    results, elapsed = asyncio.run(main())
    assert all(found(r) for r in results), results[0]["retrievals"]
    assert elapsed < 3, f"10 healthy episodes took {elapsed:.1f} s"


def test_the_error_names_the_retriever_that_hung(release):
    runner = RetrievalRunner(HangingRetriever(release=release), k=1, timeout_s=0.2, retries=0, max_hung=2)
    for _ in range(2):
        with pytest.raises(RetrievalError, match=r"HangingRetriever failed for query 'q'.*no answer "
                                                 r"within 0.2 s: the call hung"):
            runner("q")
    assert runner.hung_calls == 2
    started = time.monotonic()
    with pytest.raises(RetrievalError, match=r"2 call\(s\) to HangingRetriever are still hung after their "
                                             r"0.2 s timeout") as info:
        runner("q")
    assert time.monotonic() - started < 0.5  # fails fast: no third thread, no waiting
    assert isinstance(info.value.__cause__, RetrieverHungError)

    release.set()  # the backend recovers: the hung calls return and free their places
    deadline = time.monotonic() + 5
    while runner.hung_calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runner.hung_calls == 0 and runner("q") == DOCS[:1]


def test_an_agent_with_a_hung_retriever_fails_fast_and_says_so(release):
    agent = hanging_agent(release, on_retrieval_error="raise")
    agent.batch(["q"] * 32, {"max_concurrency": 32}, return_exceptions=True)
    started = time.monotonic()
    with pytest.raises(RetrievalError, match=r"32 call\(s\) to HangingRetriever are still hung"):
        agent.invoke("q")
    assert time.monotonic() - started < 0.5


def test_always_hanging_retriever_fails_after_timeout_times_attempts(release):
    agent = hanging_agent(release, retrieval_timeout_s=0.3, retrieval_retries=2, on_retrieval_error="raise")
    started = time.monotonic()
    with pytest.raises(RetrievalError, match=r"after 3 attempt\(s\): TimeoutError: no answer within 0.3 s"):
        agent.invoke("q")
    elapsed = time.monotonic() - started
    # 3 x 0.3 s plus the backoff between attempts (0.2 s, 0.4 s).
    assert 0.9 <= elapsed < 2.5, elapsed


def test_default_budget_of_an_always_hanging_retriever_is_seconds():
    config = RagR1Config()
    assert config.retrieval_timeout_s * (config.retrieval_retries + 1) <= 30
    agent = RagR1Agent(ScriptedPolicy(["<answer> x </answer>"]), MemoryRetriever(documents=DOCS))
    assert agent.config.retrieval_timeout_s == config.retrieval_timeout_s  # the agent's default is the config's
    assert agent.config.retrieval_retries == config.retrieval_retries


def test_timeout_counts_from_when_a_call_starts_not_from_when_it_queued():
    slow = MemoryRetriever(documents=DOCS, delay_s=0.3)
    runner = RetrievalRunner(slow, k=1, timeout_s=0.5, retries=0, max_concurrency=2)
    results: list = []

    def call():
        results.append(runner("Paris"))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    # Two calls waited ~0.3 s for a place, then ran 0.3 s: within their 0.5 s each.
    assert results == [DOCS[:1]] * 4


def test_async_retriever_that_ignores_cancellation_still_times_out(release):
    agent = RagR1Agent(ScriptedPolicy([SEARCH, ANSWER]), StubbornAsyncRetriever(release=release),
                       retrieval_timeout_s=0.2, retrieval_retries=0)

    async def main():
        started = time.monotonic()
        try:
            with pytest.raises(RetrievalError, match="StubbornAsyncRetriever.*no answer within 0.2 s"):
                await agent.ainvoke("q")
            return time.monotonic() - started
        finally:
            release.set()
            await asyncio.sleep(0.1)

    assert asyncio.run(main()) < 2


def test_vector_store_without_async_search_does_not_hang_the_default_executor(release):
    retriever = HangingStore(release).as_retriever(search_kwargs={"k": 1})
    assert not has_own_async(retriever)  # its async search would be a default-executor thread
    hang = RagR1Agent(ScriptedPolicy([SEARCH, ANSWER]), retriever, retrieval_timeout_s=0.2,
                      retrieval_retries=0, on_retrieval_error="empty")

    async def main():
        await hang.abatch(["q"] * 12, {"max_concurrency": 12})
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        await asyncio.wait_for(loop.run_in_executor(None, lambda: None), 5)  # the loop's executor is free
        results = [await healthy_agent().ainvoke("Where is Paris?") for _ in range(5)]
        elapsed = time.monotonic() - started
        release.set()
        return results, elapsed

    results, elapsed = asyncio.run(main())
    assert all(found(r) for r in results) and elapsed < 3, elapsed


class SlowRetriever(BaseRetriever):
    """Answers after ``delay_s`` and notes when each call started (a sync path only)."""

    delay_s: float = 1.0
    starts: list[float] = []

    def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
        self.starts.append(time.monotonic())
        time.sleep(self.delay_s)
        return list(DOCS)


class SlowAsyncRetriever(SlowRetriever):
    """The same with its own (cancellable) async path."""

    async def _aget_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
        self.starts.append(time.monotonic())
        await asyncio.sleep(self.delay_s)
        return list(DOCS)


@pytest.mark.parametrize("kind", [SlowRetriever, SlowAsyncRetriever])
def test_a_cancelled_run_ends_at_once_and_does_not_retry(kind):
    retriever = kind(starts=[])
    agent = RagR1Agent(ScriptedPolicy([SEARCH, ANSWER]), retriever, retrieval_retries=3)

    async def main():
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(agent.ainvoke("q"), 0.3)
        elapsed = time.monotonic() - started
        await asyncio.sleep(1.5)  # a retry would have started by now (backoff 0.2 s)
        return elapsed

    elapsed = asyncio.run(main())
    assert elapsed < 0.8, f"the cancelled run returned after {elapsed:.2f} s"
    assert len(retriever.starts) == 1, f"{len(retriever.starts)} retriever calls for one cancelled query"


@pytest.mark.parametrize("kind", [SlowRetriever, SlowAsyncRetriever])
def test_closing_an_astream_during_retrieval_sends_no_query_again(kind):
    retriever = kind(delay_s=0.5, starts=[])
    agent = RagR1Agent(ScriptedPolicy([SEARCH, ANSWER]), retriever, retrieval_retries=3, retrieval_timeout_s=0.3)

    async def main():
        stream = agent.astream("q", stream_mode="custom")
        async for event in stream:
            if event.get("event") == "search":
                break
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await stream.aclose()
        closed = time.monotonic()
        await asyncio.sleep(1.5)
        return closed - started, [t for t in retriever.starts if t > closed]

    took, late = asyncio.run(main())
    assert took < 0.5, f"aclose() took {took:.2f} s"
    assert late == [], f"{len(late)} retriever call(s) started after aclose() returned"


class CountingHang(BaseRetriever):
    """A stuck backend that counts the calls inside it (hung or not) and the most at once."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    release: threading.Event
    inside: int = 0
    most: int = 0
    calls: int = 0
    lock: Any = None

    def enter(self) -> None:
        with self.lock:
            self.calls += 1
            self.inside += 1
            self.most = max(self.most, self.inside)

    def leave(self) -> None:
        with self.lock:
            self.inside -= 1

    def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
        self.enter()
        try:
            self.release.wait()
        finally:
            self.leave()
        return list(DOCS)


class CountingStubbornHang(CountingHang):
    """The same on its own async path, ignoring cancellation (a task that does not stop)."""

    async def _aget_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
        self.enter()
        try:
            while not self.release.is_set():
                try:
                    await asyncio.sleep(0.02)
                except asyncio.CancelledError:
                    pass
        finally:
            self.leave()
        return list(DOCS)


@pytest.mark.parametrize("kind", [CountingHang, CountingStubbornHang])
def test_fifty_concurrent_runs_on_a_hung_retriever_stay_within_the_cap_of_32(release, kind):
    retriever = kind(release=release, lock=threading.Lock())
    agent = RagR1Agent(ScriptedPolicy([SEARCH, ANSWER]), retriever, retrieval_timeout_s=0.2,
                       on_retrieval_error="empty")  # the default retry: 2 tries per query
    threads = f"ragr1-retrieve[{kind.__name__}]"
    most_threads = 0

    async def main():
        nonlocal most_threads
        runs = asyncio.gather(*(agent.ainvoke("q") for _ in range(50)))
        started = time.monotonic()
        while not runs.done():
            most_threads = max(most_threads, sum(t.name == threads for t in threading.enumerate()))
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - started
        release.set()  # the abandoned tasks that ignore cancellation end before the loop closes
        return await runs, elapsed

    results, elapsed = asyncio.run(main())
    assert not any(found(r) for r in results)
    assert retriever.most <= 32, f"{retriever.most} calls hung at once (cap 32), {retriever.calls} in all"
    assert most_threads <= 32, f"{most_threads} retrieval threads at once (cap 32)"
    assert elapsed < 3, f"50 runs took {elapsed:.1f} s"
    # 32 calls ran and hung; their retries and the 18 that waited for a place were refused at once
    assert retriever.calls == 32
    errors = [r["retrievals"][0][0]["error"] for r in results]
    assert all("32 call(s) to " in e and "are still hung after" in e for e in errors), errors[0]


def test_a_hung_call_keeps_its_place_until_it_returns(release):
    runner = RetrievalRunner(CountingHang(release=release, lock=threading.Lock()), k=1, timeout_s=0.2,
                             retries=0, max_concurrency=4, max_hung=4)
    results = run_threads(lambda i: runner("q"), 6)
    # 4 places: 4 calls ran and hung; the 2 that waited were refused at once, never started
    assert sum(isinstance(r, RetrievalError) and "no answer within 0.2 s" in str(r) for r in results) == 4
    assert sum(isinstance(r, RetrievalError) and "4 call(s) to CountingHang are still hung after" in str(r)
               for r in results) == 2
    assert runner.hung_calls == 4
    release.set()
    deadline = time.monotonic() + 5
    while runner.hung_calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runner.hung_calls == 0 and runner("q") == DOCS[:1]  # the places came back
