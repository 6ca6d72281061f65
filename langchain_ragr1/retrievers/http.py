"""Client of the Search-R1 / RAG-R1 retrieval server (``POST /retrieve``)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import httpx
from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, PrivateAttr
from tenacity import AsyncRetrying, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from langchain_ragr1.config import check_int
from langchain_ragr1.errors import ConfigError, RetrievalError


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500
    return isinstance(exc, httpx.TransportError)


def _to_document(item: Any) -> Document:
    """``{"document": {"id", "contents"}, "score"}`` (``return_scores``) or the bare document dict.

    ``contents`` is ``"Title\ntext"`` (the title maybe in double quotes); ``{"title", "text"}`` is accepted too.
    """
    doc, score = (item["document"], item.get("score")) if "document" in item else (item, None)
    if "contents" in doc:
        title, sep, text = str(doc["contents"]).partition("\n")
    else:
        title, sep, text = str(doc.get("title") or ""), "\n", str(doc["text"])
    title = title.strip().strip('"').strip() if sep else ""
    doc_id = str(doc["id"]) if doc.get("id") is not None else None
    metadata: dict[str, Any] = {"title": title, "id": doc_id}
    if score is not None:
        metadata["score"] = float(score)
    return Document(id=doc_id, page_content=(text if sep else title).strip(), metadata=metadata)


class SearchR1HTTPRetriever(BaseRetriever):
    """Retriever backed by a Search-R1 style server: ``{"queries", "topk", "return_scores"}`` ->
    ``{"result": [[hit, ...] per query]}``. Transient failures (connection errors, timeouts, 5xx) are retried
    with exponential backoff; the last one raises ``RetrievalError``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    url: str = "http://127.0.0.1:8000/retrieve"
    k: int = Field(default=3, ge=1)
    timeout: float = Field(default=10.0, gt=0)
    """Seconds per request."""
    max_retries: int = Field(default=3, ge=0)
    backoff: float = Field(default=0.5, ge=0)
    """First wait between tries in seconds; doubles each retry (capped at 8 s)."""
    return_scores: bool = True
    transport: Any = None
    """Optional ``httpx`` transport (sync and/or async, e.g. ``httpx.MockTransport``)."""

    _client: httpx.Client | None = PrivateAttr(default=None)
    _client_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def _payload(self, queries: Sequence[str], k: int | None) -> dict[str, Any]:
        if isinstance(queries, str) or not queries:
            raise ConfigError("give a non-empty list of query strings")
        k = check_int("k", self.k if k is None else k, 1)
        return {"queries": list(queries), "topk": k, "return_scores": self.return_scores}

    def _retry_kwargs(self) -> dict[str, Any]:
        return {
            "stop": stop_after_attempt(self.max_retries + 1),
            "wait": wait_exponential(multiplier=self.backoff, max=8),
            "retry": retry_if_exception(_transient),
            "reraise": True,
        }

    def _failure(self, exc: Exception, tries: int) -> RetrievalError:
        if isinstance(exc, httpx.HTTPStatusError):
            status = exc.response.status_code
            cause = f"HTTP {status}: {exc.response.text[:200]!r}"
            check = (
                "check the URL path (e.g. /retrieve) and that the server speaks the Search-R1 retrieval API"
                if status < 500
                else "check the server's log"
            )
        elif isinstance(exc, httpx.TimeoutException):
            cause = f"timed out after {self.timeout} s ({type(exc).__name__})"
            check = "check that the server is not overloaded, or raise timeout="
        else:
            cause = f"{type(exc).__name__}: {exc}"
            check = "check that the retrieval server is running and reachable at this address"
        return RetrievalError(f"Retrieval from {self.url} failed after {tries} tries ({cause}); {check}.")

    def _parse(self, response: httpx.Response, n_queries: int) -> list[list[Document]]:
        try:
            result = response.json()["result"]
            if len(result) != n_queries:
                raise ValueError(f"{len(result)} result lists for {n_queries} queries")
            return [[_to_document(item) for item in hits] for hits in result]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RetrievalError(
                f"Retrieval from {self.url} returned an unexpected answer ({type(exc).__name__}: {exc}; "
                f"body starts {response.text[:200]!r}); check that it is a Search-R1 style /retrieve endpoint."
            ) from exc

    def _sync_client(self) -> httpx.Client:
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self.timeout, transport=self.transport)
            return self._client

    def retrieve_many(self, queries: Sequence[str], k: int | None = None) -> list[list[Document]]:
        """Top ``k`` documents for each query, all queries in one request."""
        payload = self._payload(queries, k)

        def post() -> httpx.Response:
            return self._sync_client().post(self.url, json=payload).raise_for_status()

        retrying = Retrying(**self._retry_kwargs())
        try:
            response = retrying(post)
        except httpx.HTTPError as exc:
            raise self._failure(exc, retrying.statistics.get("attempt_number", 1)) from exc
        return self._parse(response, len(payload["queries"]))

    async def aretrieve_many(self, queries: Sequence[str], k: int | None = None) -> list[list[Document]]:
        """Async :meth:`retrieve_many`."""
        payload = self._payload(queries, k)
        retrying = AsyncRetrying(**self._retry_kwargs())
        try:
            async with httpx.AsyncClient(timeout=self.timeout, transport=self.transport) as client:
                async for attempt in retrying:
                    with attempt:
                        response = (await client.post(self.url, json=payload)).raise_for_status()
        except httpx.HTTPError as exc:
            raise self._failure(exc, retrying.statistics.get("attempt_number", 1)) from exc
        return self._parse(response, len(payload["queries"]))

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        return self.retrieve_many([query], k)[0]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        return (await self.aretrieve_many([query], k))[0]
