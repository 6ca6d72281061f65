"""One retriever call with a timeout and tenacity retries, for any LangChain retriever."""

from __future__ import annotations

import asyncio
import inspect
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig
from tenacity import (
    AsyncRetrying,
    Retrying,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from langchain_ragr1.errors import RetrievalError

# Retriever calls run here so that a hung call can be abandoned after its timeout.
_EXECUTOR = ThreadPoolExecutor(max_workers=32, thread_name_prefix="ragr1-retrieve")


def accepts_k(retriever: BaseRetriever, *, use_async: bool = False) -> bool:
    """Whether ``retriever.invoke(query, k=...)`` (or ``ainvoke``) reaches its search (vector stores, ours)."""
    method = retriever._aget_relevant_documents if use_async else retriever._get_relevant_documents
    params = inspect.signature(method).parameters.values()
    return any(p.name == "k" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def has_own_async(retriever: BaseRetriever) -> bool:
    """Whether the retriever implements ``_aget_relevant_documents`` itself (else LangChain runs the sync one)."""
    return type(retriever)._aget_relevant_documents is not BaseRetriever._aget_relevant_documents


class RetrievalRunner:
    """Calls ``retriever`` for one query: top-``k``, ``timeout_s`` per attempt, ``retries`` more.

    After the last failed attempt it raises :class:`RetrievalError` naming the query and
    the cause.
    """

    def __init__(
        self, retriever: BaseRetriever, *, k: int, timeout_s: float, retries: int
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

    def _check(self, docs: object, k: int) -> list[Document]:
        if not isinstance(docs, list):
            raise TypeError(f"retriever returned {type(docs).__name__}, not a list of Documents")
        return docs[:k]

    def _attempt(self, query: str, config: RunnableConfig | None, k: int) -> list[Document]:
        kwargs = {"k": k} if self._pass_k else {}
        future = _EXECUTOR.submit(self.retriever.invoke, query, config, **kwargs)
        try:
            docs = future.result(timeout=self.timeout_s)
        except FutureTimeout:
            future.cancel()
            raise TimeoutError(f"no answer within {self.timeout_s:g} s") from None
        return self._check(docs, k)

    async def _aattempt(self, query: str, config: RunnableConfig | None, k: int) -> list[Document]:
        kwargs = {"k": k} if self._apass_k else {}
        try:
            docs = await asyncio.wait_for(self.retriever.ainvoke(query, config, **kwargs), self.timeout_s)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no answer within {self.timeout_s:g} s") from None
        return self._check(docs, k)

    def _retry_args(self) -> dict:
        return {
            "stop": stop_after_attempt(self.retries + 1),
            "wait": wait_exponential(multiplier=0.2, max=5),
            # A RetrievalError means the retriever already retried on its own (our HTTP client).
            "retry": retry_if_not_exception_type(RetrievalError),
            "reraise": True,
        }

    def _error(self, query: str, exc: Exception) -> RetrievalError:
        name = type(self.retriever).__name__
        return RetrievalError(
            f"{name} failed for query {query!r} after {self.retries + 1} attempt(s): "
            f"{type(exc).__name__}: {exc}. Check that the retriever (or its server) is up, "
            f"or pass on_retrieval_error='empty' to let the model see 'No results.' instead."
        )

    def __call__(self, query: str, config: RunnableConfig | None = None, *, k: int | None = None) -> list[Document]:
        """Top-``k`` (default: the runner's) documents for ``query``, on a worker thread with a timeout."""
        try:
            return Retrying(**self._retry_args())(self._attempt, query, config, k or self.k)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one clear error
            raise self._error(query, exc) from exc

    async def acall(self, query: str, config: RunnableConfig | None = None, *, k: int | None = None) -> list[Document]:
        """Async :meth:`__call__` through ``retriever.ainvoke`` (async-only retrievers work).

        A retriever without its own async path goes through :meth:`__call__` in a thread.
        """
        if not self._own_async:
            return await asyncio.to_thread(self.__call__, query, config, k=k)
        try:
            return await AsyncRetrying(**self._retry_args())(self._aattempt, query, config, k or self.k)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one clear error
            raise self._error(query, exc) from exc
