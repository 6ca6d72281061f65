"""One retriever call with a timeout and tenacity retries, for any LangChain retriever.

Every :class:`RetrievalRunner` (one per agent) owns its capacity; nothing is shared between
runners, so no agent waits on another agent's (or another retriever's) hung calls:

- Sync calls, and async calls to a retriever without an async path of its own, run on the
  runner's own daemon threads, at most ``max_concurrency`` at once (more wait for a free
  place); a call's timeout counts from when it starts, never from when it was queued.
- A call still running at its timeout is abandoned: its place goes to the next call at once.
  A Python thread cannot be killed, so it keeps its thread until the retriever returns and
  counts as *hung* meanwhile. Once ``max_hung`` calls of a runner are hung, its new calls
  fail at once with :class:`RetrieverHungError` (naming the retriever) instead of piling up
  more threads; they work again as soon as the hung calls return.
- Async calls to a retriever with its own async path run as tasks of the caller's loop and
  are cancelled at their timeout (never on the loop's default executor).

So a retriever that always hangs fails after about ``timeout_s x (retries + 1)``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import threading
import time
from collections import deque
from typing import Any, Callable

from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig
from langchain_core.vectorstores import VectorStore, VectorStoreRetriever
from tenacity import (
    AsyncRetrying,
    Retrying,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from langchain_ragr1.errors import RetrievalError

#: Calls of one runner that run at once (more wait for a free place).
DEFAULT_MAX_CONCURRENCY = 32
#: Calls of one runner that may be hung past their timeout before new ones fail fast.
DEFAULT_MAX_HUNG = 32

# A vector store's async search that is only LangChain's thread hop onto the loop's default
# executor: such retrievers go through the runner's own threads instead.
_VECTORSTORE_ASYNC = (
    "asimilarity_search",
    "asimilarity_search_with_score",
    "asimilarity_search_with_relevance_scores",
    "amax_marginal_relevance_search",
)


class RetrieverHungError(RetrievalError):
    """Too many calls to a retriever are still running past their timeout: new calls fail fast."""


def accepts_k(retriever: BaseRetriever, *, use_async: bool = False) -> bool:
    """Whether ``retriever.invoke(query, k=...)`` (or ``ainvoke``) reaches its search (vector stores, ours)."""
    method = retriever._aget_relevant_documents if use_async else retriever._get_relevant_documents
    params = inspect.signature(method).parameters.values()
    return any(p.name == "k" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def own_k(retriever: BaseRetriever) -> int | None:
    """The ``k`` a user gave the retriever itself: ``search_kwargs={"k": ...}`` of a vector-store
    retriever, or a ``k`` field set when it was built (``BM25Retriever(..., k=1)``); None when none was."""
    search_kwargs = getattr(retriever, "search_kwargs", None)
    k = search_kwargs.get("k") if isinstance(search_kwargs, dict) else None
    if k is None and "k" in getattr(retriever, "model_fields_set", ()):
        k = getattr(retriever, "k", None)
    return k if isinstance(k, int) and not isinstance(k, bool) and k >= 1 else None


def has_own_async(retriever: BaseRetriever) -> bool:
    """Whether the retriever implements ``_aget_relevant_documents`` itself (else LangChain runs the sync one).

    A vector-store retriever whose store has no async search of its own counts as sync: its
    async path would only run the sync search on the event loop's default executor.
    """
    if type(retriever)._aget_relevant_documents is BaseRetriever._aget_relevant_documents:
        return False
    store = getattr(retriever, "vectorstore", None)
    if isinstance(retriever, VectorStoreRetriever) and isinstance(store, VectorStore):
        return any(getattr(type(store), name) is not getattr(VectorStore, name) for name in _VECTORSTORE_ASYNC)
    return True


def as_document(item: object) -> Document:
    """A retrieved item as a ``Document``: a plain string becomes its ``page_content``."""
    if isinstance(item, Document):
        return item
    if isinstance(item, str):
        return Document(page_content=item)
    raise TypeError(f"retriever returned a {type(item).__name__} in its list: return Documents (or strings)")


class _Call:
    """One retriever call on a lane: queued -> assigned -> running -> done, or abandoned/dropped."""

    __slots__ = ("fn", "state", "started_at", "value", "error", "started", "finished", "listeners")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn: Callable[[], Any] | None = fn  # dropped once it has run
        self.state = "queued"
        self.started_at = 0.0
        self.value: Any = None
        self.error: BaseException | None = None
        self.started = threading.Event()
        self.finished = threading.Event()
        self.listeners: list[Callable[[], None]] = []

    def notify(self) -> None:
        for listener in list(self.listeners):
            listener()


class _Idle:
    """An idle worker thread, waiting for a call to be handed to it."""

    __slots__ = ("event", "call")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.call: _Call | None = None


class _Lane:
    """The threads of one runner: at most ``max_concurrency`` running calls, ``max_hung`` hung ones.

    A worker that has finished a call takes the next queued one, or waits ``idle_s`` for a
    new one before its thread exits.
    """

    idle_s = 10.0

    def __init__(self, name: str, max_concurrency: int, max_hung: int) -> None:
        self.name = name
        self.max_concurrency = max_concurrency
        self.max_hung = max_hung
        self.active = 0  # assigned or running calls not abandoned: the places taken
        self.hung = 0  # abandoned at their timeout, not returned yet
        self._queue: deque[_Call] = deque()  # waiting for a place
        self._idle: list[_Idle] = []
        self._lock = threading.Lock()

    def _hung_error(self, timeout_s: float) -> RetrieverHungError:
        return RetrieverHungError(
            f"{self.hung} call(s) to {self.name} are still hung after their {timeout_s:g} s timeout; "
            f"new calls fail at once until they return. The retriever (or its server) is stuck: "
            f"fix or restart it, or raise retrieval_timeout_s if it is only slow"
        )

    def check(self, timeout_s: float) -> None:
        """Raise :class:`RetrieverHungError` when ``max_hung`` calls are hung."""
        with self._lock:
            if self.hung >= self.max_hung:
                raise self._hung_error(timeout_s)

    # --- threads ------------------------------------------------------------------------

    def submit(self, fn: Callable[[], Any], timeout_s: float) -> _Call:
        call = _Call(fn)
        with self._lock:
            if self.hung >= self.max_hung:
                raise self._hung_error(timeout_s)
            if self.active < self.max_concurrency:
                self.active += 1
                call.state = "assigned"
                spawn = not self._hand_over_locked(call)
            else:
                self._queue.append(call)
                spawn = False
        if spawn:
            self._spawn(call)
        return call

    def _hand_over_locked(self, call: _Call) -> bool:
        """Give an assigned call to an idle worker; False when none is idle (start a thread)."""
        if not self._idle:
            return False
        idle = self._idle.pop()
        idle.call = call
        idle.event.set()
        return True

    def _next_locked(self) -> _Call | None:
        """The next queued call, which takes over the caller's place; else the place is freed."""
        while self._queue:
            nxt = self._queue.popleft()
            if nxt.state == "queued":
                nxt.state = "assigned"
                return nxt
        self.active -= 1
        return None

    def _spawn(self, call: _Call) -> None:
        try:
            threading.Thread(
                target=self._work, args=(call,), name=f"ragr1-retrieve[{self.name}]", daemon=True
            ).start()
        except BaseException as exc:  # noqa: BLE001 - e.g. "can't start new thread": the call fails
            with self._lock:
                call.state, call.error = "done", exc
                nxt = self._next_locked()
                spawn = nxt is not None and not self._hand_over_locked(nxt)
            call.started.set()
            call.finished.set()
            call.notify()
            if spawn:
                assert nxt is not None  # spawn is set only for a next call
                self._spawn(nxt)

    def _work(self, call: _Call | None) -> None:
        while True:
            while call is not None:
                call = self._run(call)
            idle = _Idle()
            with self._lock:
                self._idle.append(idle)
            idle.event.wait(self.idle_s)
            with self._lock:
                call = idle.call
                if call is None:  # nothing came: the thread ends
                    self._idle.remove(idle)
                    return

    def _run(self, call: _Call) -> _Call | None:
        """Run one assigned call; the next one for this thread (a queued call taking its place)."""
        with self._lock:
            if call.state != "assigned":  # dropped before it started
                return self._next_locked()
            call.state, call.started_at = "running", time.monotonic()
        call.started.set()
        call.notify()
        try:
            assert call.fn is not None  # an assigned call runs once, and fn goes only after that
            call.value = call.fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            call.error = exc
        call.fn = None
        with self._lock:
            if call.state == "abandoned":  # its place went to another call at its timeout
                self.hung -= 1
                nxt = None
            else:
                call.state = "done"
                nxt = self._next_locked()
        call.finished.set()
        call.notify()
        return nxt

    def abandon(self, call: _Call) -> None:
        """Give up on ``call``: a waiting one is dropped, a running one counts as hung from now."""
        spawn = None
        with self._lock:
            state = call.state
            if state in ("queued", "assigned"):
                call.state = "dropped"  # skipped by _next_locked / _run
            elif state == "running":
                call.state = "abandoned"
                self.hung += 1
                nxt = self._next_locked()  # its place goes to the next queued call at once
                if nxt is not None and not self._hand_over_locked(nxt):
                    spawn = nxt
            else:
                return
        if state != "running":
            call.finished.set()
        if spawn is not None:
            self._spawn(spawn)

    def _timeout(self, timeout_s: float) -> TimeoutError:
        return TimeoutError(
            f"no answer within {timeout_s:g} s: the call hung and was abandoned "
            f"({self.hung} call(s) to {self.name} still hung)"
        )

    def _result(self, call: _Call) -> Any:
        if call.error is not None:
            raise call.error
        return call.value

    def wait(self, call: _Call, timeout_s: float) -> Any:
        """The call's result, waiting at most ``timeout_s`` from when it started."""
        try:
            call.started.wait()
            if not call.finished.wait(max(0.0, call.started_at + timeout_s - time.monotonic())):
                self.abandon(call)
                raise self._timeout(timeout_s)
        finally:
            if not call.finished.is_set():  # interrupted while waiting
                self.abandon(call)
        return self._result(call)

    async def await_call(self, call: _Call, timeout_s: float) -> Any:
        """:meth:`wait` without blocking the event loop (no executor thread waits either)."""
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def wake() -> None:
            try:
                loop.call_soon_threadsafe(changed.set)
            except RuntimeError:  # the loop has closed
                pass

        call.listeners.append(wake)
        try:
            while True:
                changed.clear()
                if call.started.is_set():
                    break
                await changed.wait()
            deadline = call.started_at + timeout_s
            while True:
                changed.clear()
                if call.finished.is_set():
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.abandon(call)
                    raise self._timeout(timeout_s)
                try:
                    await asyncio.wait_for(changed.wait(), remaining)
                except asyncio.TimeoutError:
                    pass
        finally:
            call.listeners.remove(wake)
            if not call.finished.is_set():  # cancelled while waiting
                self.abandon(call)
        return self._result(call)

    # --- tasks (retrievers with their own async path) -------------------------------------

    def abandon_task(self, task: asyncio.Task) -> None:
        """Cancel ``task``; it counts as hung until it has actually stopped."""
        task.cancel()
        with self._lock:
            self.hung += 1

        def stopped(done: asyncio.Task) -> None:
            with self._lock:
                self.hung -= 1
            if not done.cancelled():
                done.exception()  # retrieved: no "exception was never retrieved" warning

        task.add_done_callback(stopped)


class RetrievalRunner:
    """Calls ``retriever`` for one query: top-``k``, ``timeout_s`` per attempt, ``retries`` more.

    At most ``max_concurrency`` calls run at once; once ``max_hung`` calls are still hung
    past their timeout, new calls fail at once (see the module docs). After the last failed
    attempt it raises :class:`RetrievalError` naming the retriever, the query and the cause.
    """

    def __init__(
        self,
        retriever: BaseRetriever,
        *,
        k: int,
        timeout_s: float,
        retries: int,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        max_hung: int = DEFAULT_MAX_HUNG,
    ) -> None:
        if not isinstance(retriever, BaseRetriever):
            raise TypeError(
                f"retriever must be a LangChain BaseRetriever (e.g. vectorstore.as_retriever()), "
                f"got {type(retriever).__name__}."
            )
        self.retriever = retriever
        self.k = k
        self.timeout_s = timeout_s
        self.retries = retries
        self._pass_k = accepts_k(retriever)
        self._own_async = has_own_async(retriever)
        self._apass_k = self._own_async and accepts_k(retriever, use_async=True)
        self._lane = _Lane(type(retriever).__name__, max(1, max_concurrency), max(1, max_hung))

    @property
    def hung_calls(self) -> int:
        """Calls abandoned at their timeout that have not returned yet."""
        return self._lane.hung

    def _check(self, docs: object, k: int) -> list[Document]:
        if not isinstance(docs, list):
            raise TypeError(f"retriever returned {type(docs).__name__}, not a list of Documents")
        return [as_document(doc) for doc in docs[:k]]

    def _job(self, query: str, config: RunnableConfig | None, k: int) -> Callable[[], Any]:
        kwargs = {"k": k} if self._pass_k else {}
        # The caller's context (LangGraph's config, tracing) travels into the worker thread.
        return functools.partial(contextvars.copy_context().run, self.retriever.invoke, query, config, **kwargs)

    def _attempt(self, query: str, config: RunnableConfig | None, k: int) -> list[Document]:
        call = self._lane.submit(self._job(query, config, k), self.timeout_s)
        return self._check(self._lane.wait(call, self.timeout_s), k)

    async def _athread_attempt(self, query: str, config: RunnableConfig | None, k: int) -> list[Document]:
        call = self._lane.submit(self._job(query, config, k), self.timeout_s)
        return self._check(await self._lane.await_call(call, self.timeout_s), k)

    async def _aattempt(self, query: str, config: RunnableConfig | None, k: int) -> list[Document]:
        self._lane.check(self.timeout_s)
        kwargs = {"k": k} if self._apass_k else {}
        task = asyncio.ensure_future(self.retriever.ainvoke(query, config, **kwargs))
        try:
            await asyncio.wait({task}, timeout=self.timeout_s)
        finally:
            if not task.done():  # timed out, or the caller was cancelled
                self._lane.abandon_task(task)
        if not task.done():
            raise self._lane._timeout(self.timeout_s)
        return self._check(task.result(), k)

    def _retry_args(self) -> dict:
        return {
            "stop": stop_after_attempt(self.retries + 1),
            "wait": wait_exponential(multiplier=0.2, max=5),
            # A RetrievalError means the retriever already retried on its own (our HTTP client),
            # or that it is hung (RetrieverHungError): trying again would not help.
            "retry": retry_if_not_exception_type(RetrievalError),
            "reraise": True,
        }

    def _error(self, query: str, exc: Exception, attempts: int) -> RetrievalError:
        name = type(self.retriever).__name__
        return RetrievalError(
            f"{name} failed for query {query!r} after {attempts} attempt(s): "
            f"{type(exc).__name__}: {exc}. Check that the retriever (or its server) is up, "
            f"or pass on_retrieval_error='empty' to let the model see 'No results.' instead."
        )

    def __call__(self, query: str, config: RunnableConfig | None = None, *, k: int | None = None) -> list[Document]:
        """Top-``k`` (default: the runner's) documents for ``query``, on a worker thread with a timeout."""
        retrying = Retrying(**self._retry_args())
        try:
            return retrying(self._attempt, query, config, k or self.k)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one clear error
            raise self._error(query, exc, retrying.statistics.get("attempt_number", 1)) from exc

    async def acall(self, query: str, config: RunnableConfig | None = None, *, k: int | None = None) -> list[Document]:
        """Async :meth:`__call__` through ``retriever.ainvoke`` (async-only retrievers work).

        A retriever without its own async path runs on the runner's threads (awaited, so
        the event loop and its default executor stay free).
        """
        attempt = self._aattempt if self._own_async else self._athread_attempt
        retrying = AsyncRetrying(**self._retry_args())
        try:
            return await retrying(attempt, query, config, k or self.k)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one clear error
            raise self._error(query, exc, retrying.statistics.get("attempt_number", 1)) from exc
