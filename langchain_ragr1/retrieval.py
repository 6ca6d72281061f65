"""One retriever call with a timeout and tenacity retries, for any LangChain retriever.

Every :class:`RetrievalRunner` (one per agent) owns its capacity; nothing is shared between
runners, so no agent waits on another agent's (or another retriever's) hung calls:

- A runner has ``max_concurrency`` places (default 32). Every call holds one from when it
  starts until the retriever returns; more calls wait for a free place, and a call's timeout
  counts from when it starts, never from when it was queued.
- Sync calls, and async calls to a retriever without an async path of its own, run on the
  runner's own daemon threads, one per place: a runner never has more than
  ``max_concurrency`` threads. Async calls to a retriever with its own async path run as
  tasks of the caller's loop (never on the loop's default executor).
- A call still running at its timeout is abandoned (a task is cancelled). A Python thread
  cannot be killed, and a task may ignore its cancellation: the call keeps its place and
  counts as *hung* until the retriever returns, so a runner never has more than
  ``max_concurrency`` hung calls either. Once ``max_hung`` calls (default 32) are hung, new
  calls and those waiting for a place fail at once with :class:`RetrieverHungError` (naming
  the retriever); they work again as soon as the hung calls return.

So a retriever that always hangs fails after about ``timeout_s x (retries + 1)``.

Only failures (an ``Exception``) are retried. A cancelled run (``asyncio.CancelledError``:
``wait_for``, a closed ``astream``, a client that went away) or an interrupt ends the call at
once: nothing is sent again, and a thread still running the retriever counts as hung.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import threading
import time
from collections import deque
from typing import Any, Awaitable, Callable

from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig
from langchain_core.vectorstores import VectorStore, VectorStoreRetriever
from tenacity import (
    AsyncRetrying,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from langchain_ragr1.errors import RetrievalError

#: Places of one runner: calls that run or hang at once (more wait for a free place).
DEFAULT_MAX_CONCURRENCY = 32
#: Hung calls of one runner at which new ones fail fast (at most ``max_concurrency``).
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


def _worth_retrying(exc: BaseException) -> bool:
    """A failed try is retried; a cancellation or an interrupt (not an ``Exception``) never is.

    A :class:`RetrievalError` is not either: it means the retriever already retried on its own
    (our HTTP client), or that it is hung (:class:`RetrieverHungError`).
    """
    return isinstance(exc, Exception) and not isinstance(exc, RetrievalError)


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
    """One retriever call on a lane: queued -> assigned -> running -> done; a running call past its
    timeout is abandoned (hung: it keeps its place until it returns); a waiting one is dropped
    when its caller gives up, or refused once too many calls are hung.

    A thread call runs ``fn`` on one of the lane's threads; a task call (``fn`` None) is started
    by its caller as a task of its event loop once it has a place.
    """

    __slots__ = ("fn", "task", "state", "started_at", "value", "error", "started", "finished", "listeners")

    def __init__(self, fn: Callable[[], Any] | None) -> None:
        self.fn = fn  # dropped once it has run
        self.task = fn is None
        self.state = "queued"
        self.started_at = 0.0
        self.value: Any = None
        self.error: BaseException | None = None
        self.started = threading.Event()  # it has a place (or was refused)
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


#: What to do once the lane's lock is released: ("spawn" | "wake" | "fail", call).
_Actions = list[tuple[str, _Call]]


class _Lane:
    """The places of one runner: at most ``max_concurrency`` calls hold one, hung ones included.

    A call holds its place (a thread calls' thread) from when it gets it until the retriever
    returns, so a runner never has more than ``max_concurrency`` threads nor hung calls. A
    worker that has finished a call takes the next queued one, or waits ``idle_s`` for a new
    one before its thread exits. Once ``max_hung`` calls are hung, new and queued calls fail
    at once with :class:`RetrieverHungError`.
    """

    idle_s = 10.0

    def __init__(self, name: str, timeout_s: float, max_concurrency: int, max_hung: int) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self.max_concurrency = max_concurrency
        self.max_hung = min(max_hung, max_concurrency)  # more could never be hung at once
        self.active = 0  # places taken: assigned, running and hung calls
        self.hung = 0  # abandoned at their timeout, not returned yet
        self._queue: deque[_Call] = deque()  # waiting for a place
        self._idle: list[_Idle] = []
        self._lock = threading.Lock()

    def _hung_error(self) -> RetrieverHungError:
        return RetrieverHungError(
            f"{self.hung} call(s) to {self.name} are still hung after their {self.timeout_s:g} s timeout; "
            f"new calls fail at once until they return. The retriever (or its server) is stuck: "
            f"fix or restart it, or raise retrieval_timeout_s if it is only slow"
        )

    def _timeout(self) -> TimeoutError:
        return TimeoutError(
            f"no answer within {self.timeout_s:g} s: the call hung and was abandoned "
            f"({self.hung} call(s) to {self.name} still hung)"
        )

    # --- places -------------------------------------------------------------------------

    def submit(self, fn: Callable[[], Any] | None) -> _Call:
        """Queue a call (``fn`` None: a task call); it starts as soon as it has a place."""
        call = _Call(fn)
        with self._lock:
            if self.hung >= self.max_hung:
                raise self._hung_error()
            actions: _Actions = []
            if self.active < self.max_concurrency:
                self.active += 1
                actions = self._assign_locked(call)
            else:
                self._queue.append(call)
        self._act(actions)
        return call

    def _assign_locked(self, call: _Call) -> _Actions:
        """Give ``call`` the place it now holds: to its caller (a task), an idle worker or a new thread."""
        call.state = "assigned"
        if call.task:
            return [("wake", call)]
        if self._idle:
            idle = self._idle.pop()
            idle.call = call
            idle.event.set()
            return []
        return [("spawn", call)]

    def _release_locked(self, worker: bool) -> tuple[_Actions, _Call | None]:
        """A place is free: it goes to the next queued call, else it is given back. With
        ``worker`` (a thread whose call is done), a next thread call is returned for it to run."""
        while self._queue:
            nxt = self._queue.popleft()
            if nxt.state != "queued":  # dropped while it waited
                continue
            if worker and not nxt.task:
                nxt.state = "assigned"
                return [], nxt
            return self._assign_locked(nxt), None
        self.active -= 1
        return [], None

    def _refuse_queued_locked(self) -> _Actions:
        """``max_hung`` calls are hung: the waiting calls fail now instead of waiting for a place."""
        refused: _Actions = []
        while self._queue:
            call = self._queue.popleft()
            if call.state == "queued":
                call.state, call.error = "refused", self._hung_error()
                refused.append(("fail", call))
        return refused

    def _act(self, actions: _Actions) -> None:
        for action, call in actions:
            if action == "spawn":
                self._spawn(call)
                continue
            call.started.set()
            if action == "fail":
                call.finished.set()
            call.notify()

    def abandon(self, call: _Call) -> None:
        """Give up on ``call``: a waiting one is dropped, a running one counts as hung from now
        (keeping its place until the retriever returns)."""
        actions: _Actions = []
        with self._lock:
            state = call.state
            if state in ("queued", "assigned"):
                call.state = "dropped"  # skipped by _release_locked / _run
                if state == "assigned" and call.task:  # no worker will see it: its place moves on
                    actions, _ = self._release_locked(worker=False)
            elif state == "running":
                call.state = "abandoned"
                self.hung += 1
                if self.hung >= self.max_hung:
                    actions = self._refuse_queued_locked()
            else:
                return
        if state != "running":
            call.finished.set()
        self._act(actions)

    def _finish_locked(self, call: _Call, worker: bool) -> tuple[_Actions, _Call | None]:
        """The retriever returned for ``call``: a hung call is hung no more, and its place moves on."""
        if call.state == "abandoned":
            self.hung -= 1
        call.state = "done"
        return self._release_locked(worker)

    # --- threads ------------------------------------------------------------------------

    def _spawn(self, call: _Call) -> None:
        try:
            threading.Thread(
                target=self._work, args=(call,), name=f"ragr1-retrieve[{self.name}]", daemon=True
            ).start()
        except BaseException as exc:  # noqa: BLE001 - e.g. "can't start new thread": the call fails
            with self._lock:
                call.error = exc
                actions, _ = self._finish_locked(call, worker=False)
            self._act([("fail", call), *actions])

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
            dropped = call.state != "assigned"
            if dropped:  # given up before it started: its place moves on
                actions, nxt = self._release_locked(worker=True)
            else:
                call.state, call.started_at = "running", time.monotonic()
        if dropped:
            self._act(actions)
            return nxt
        call.started.set()
        call.notify()
        try:
            assert call.fn is not None  # an assigned call runs once, and fn goes only after that
            call.value = call.fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            call.error = exc
        call.fn = None
        with self._lock:
            actions, nxt = self._finish_locked(call, worker=True)
        call.finished.set()
        call.notify()
        self._act(actions)
        return nxt

    def _result(self, call: _Call) -> Any:
        if call.error is not None:
            raise call.error
        return call.value

    def wait(self, call: _Call) -> Any:
        """The call's result, waiting at most ``timeout_s`` from when it started."""
        try:
            call.started.wait()
            if not call.finished.wait(max(0.0, call.started_at + self.timeout_s - time.monotonic())):
                self.abandon(call)
                raise self._timeout()
        finally:
            if not call.finished.is_set():  # interrupted while waiting
                self.abandon(call)
        return self._result(call)

    # --- awaiting (threads and tasks) -----------------------------------------------------

    async def _until(self, call: _Call, event: threading.Event, deadline: float | None = None) -> bool:
        """Await ``event`` of ``call`` (set by any thread) until ``deadline``; whether it is set.
        The caller abandons the call if it is cancelled meanwhile."""
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def wake() -> None:
            try:
                loop.call_soon_threadsafe(changed.set)
            except RuntimeError:  # the loop has closed
                pass

        call.listeners.append(wake)
        try:
            while not event.is_set():
                changed.clear()
                if event.is_set():
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                try:
                    await asyncio.wait_for(changed.wait(), remaining)
                except asyncio.TimeoutError:
                    pass
            return True
        finally:
            call.listeners.remove(wake)

    async def await_call(self, call: _Call) -> Any:
        """:meth:`wait` without blocking the event loop (no executor thread waits either)."""
        try:
            await self._until(call, call.started)
            if not await self._until(call, call.finished, call.started_at + self.timeout_s):
                self.abandon(call)
                raise self._timeout()
        finally:
            if not call.finished.is_set():  # cancelled while waiting
                self.abandon(call)
        return self._result(call)

    async def run_task(self, call: _Call, start: Callable[[], Awaitable[Any]]) -> Any:
        """Run task call ``call`` (``start()`` is its coroutine) once it has a place, cancelled at
        its timeout; one that ignores the cancellation counts as hung until it stops."""
        try:
            await self._until(call, call.started)
        except BaseException:  # cancelled while it waited for a place (or just as it got one)
            self.abandon(call)
            raise
        if call.error is not None:  # refused: too many calls are hung
            raise call.error
        with self._lock:
            call.state, call.started_at = "running", time.monotonic()
        task = asyncio.ensure_future(start())
        task.add_done_callback(functools.partial(self._task_done, call))
        try:
            await asyncio.wait({task}, timeout=self.timeout_s)
        finally:
            if not task.done():  # timed out, or the caller was cancelled
                task.cancel()
                self.abandon(call)
        if not task.done():
            raise self._timeout()
        return task.result()

    def _task_done(self, call: _Call, task: asyncio.Future) -> None:
        with self._lock:
            actions, _ = self._finish_locked(call, worker=False)
        call.finished.set()
        self._act(actions)
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" warning


class RetrievalRunner:
    """Calls ``retriever`` for one query: top-``k``, ``timeout_s`` per attempt, ``retries`` more.

    At most ``max_concurrency`` calls run or hang at once (threads included); once ``max_hung``
    calls are still hung past their timeout, new calls fail at once (see the module docs). After the last failed
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
        self._lane = _Lane(type(retriever).__name__, timeout_s, max(1, max_concurrency), max(1, max_hung))

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
        call = self._lane.submit(self._job(query, config, k))
        return self._check(self._lane.wait(call), k)

    async def _athread_attempt(self, query: str, config: RunnableConfig | None, k: int) -> list[Document]:
        call = self._lane.submit(self._job(query, config, k))
        return self._check(await self._lane.await_call(call), k)

    async def _aattempt(self, query: str, config: RunnableConfig | None, k: int) -> list[Document]:
        kwargs = {"k": k} if self._apass_k else {}
        call = self._lane.submit(None)
        docs = await self._lane.run_task(call, functools.partial(self.retriever.ainvoke, query, config, **kwargs))
        return self._check(docs, k)

    def _retry_args(self) -> dict:
        return {
            "stop": stop_after_attempt(self.retries + 1),
            "wait": wait_exponential(multiplier=0.2, max=5),
            "retry": retry_if_exception(_worth_retrying),
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
