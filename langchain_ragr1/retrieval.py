"""One retriever call with a timeout and tenacity retries, for any LangChain retriever."""

from __future__ import annotations

import inspect
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig
from tenacity import Retrying, retry_if_not_exception_type, stop_after_attempt, wait_exponential

from langchain_ragr1.errors import RetrievalError

# Retriever calls run here so that a hung call can be abandoned after its timeout.
_EXECUTOR = ThreadPoolExecutor(max_workers=32, thread_name_prefix="ragr1-retrieve")


def accepts_k(retriever: BaseRetriever) -> bool:
    """Whether ``retriever.invoke(query, k=...)`` reaches its search (vector stores, ours)."""
    params = inspect.signature(retriever._get_relevant_documents).parameters.values()
    return any(p.name == "k" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


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

    def _attempt(self, query: str, config: RunnableConfig | None) -> list[Document]:
        kwargs = {"k": self.k} if self._pass_k else {}
        future = _EXECUTOR.submit(self.retriever.invoke, query, config, **kwargs)
        try:
            docs = future.result(timeout=self.timeout_s)
        except FutureTimeout:
            future.cancel()
            raise TimeoutError(f"no answer within {self.timeout_s:g} s") from None
        if not isinstance(docs, list):
            raise TypeError(f"retriever returned {type(docs).__name__}, not a list of Documents")
        return docs[: self.k]

    def __call__(self, query: str, config: RunnableConfig | None = None) -> list[Document]:
        retrying = Retrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_exponential(multiplier=0.2, max=5),
            # A RetrievalError means the retriever already retried on its own (our HTTP client).
            retry=retry_if_not_exception_type(RetrievalError),
            reraise=True,
        )
        try:
            return retrying(self._attempt, query, config)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one clear error
            name = type(self.retriever).__name__
            raise RetrievalError(
                f"{name} failed for query {query!r} after {self.retries + 1} attempt(s): "
                f"{type(exc).__name__}: {exc}. Check that the retriever (or its server) is up, "
                f"or pass on_retrieval_error='empty' to let the model see 'No results.' instead."
            ) from exc
