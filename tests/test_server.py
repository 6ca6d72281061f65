"""The /retrieve server, exercised by our SearchR1HTTPRetriever over real loopback HTTP."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import httpx
import pytest
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever

from langchain_ragr1.errors import RetrievalError
from langchain_ragr1.retrievers.bm25 import BM25Retriever
from langchain_ragr1.retrievers.http import SearchR1HTTPRetriever
from langchain_ragr1.server import create_retrieval_app, main

from _serving import Served, free_port

DOCS = [
    Document(id="curie", page_content="A physicist and chemist, born in Warsaw in 1867.",
             metadata={"title": "Marie Curie"}),
    Document(id="einstein", page_content="A theoretical physicist, born in Ulm in 1879.",
             metadata={"title": "Albert Einstein"}),
    Document(id="paris", page_content="The capital and largest city of France.",
             metadata={"title": "Paris"}),
    Document(id="warsaw", page_content="The capital of Poland, on the Vistula river.",
             metadata={"title": "Warsaw"}),
]


def serve_retriever(retriever: BaseRetriever) -> Served:
    """Our /retrieve app over ``retriever`` on a loopback port; ``.url`` ends in /retrieve."""
    return Served(create_retrieval_app(retriever), "/retrieve")


class SlowRetriever(BaseRetriever):
    delay: float = 1.0

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        time.sleep(self.delay)
        return DOCS[:1]


class BrokenRetriever(BaseRetriever):
    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        raise OSError("index file vanished")


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with serve_retriever(BM25Retriever.from_documents(DOCS, k=3)) as s:
        yield s


def test_batched_queries_topk_and_scores(served: Served) -> None:
    client = SearchR1HTTPRetriever(url=served.url, k=2)
    hits = client.retrieve_many(["Marie Curie physicist Warsaw", "capital of France", "Einstein Ulm"])
    assert [h[0].id for h in hits] == ["curie", "paris", "einstein"]
    assert all(len(h) <= 2 for h in hits) and len(hits[0]) == 2
    top = hits[0][0]
    assert top.metadata["title"] == "Marie Curie"
    assert top.page_content == DOCS[0].page_content
    assert top.metadata["score"] > hits[0][1].metadata["score"] > 0
    assert [d.id for d in client.invoke("capital", k=1)] in (["paris"], ["warsaw"])


def test_wire_format_with_and_without_scores(served: Served) -> None:
    body = {"queries": ["capital of France"], "topk": 1, "return_scores": True}
    scored = httpx.post(served.url, json=body).json()["result"]
    assert scored[0][0]["document"] == {"id": "paris", "contents": "Paris\n" + DOCS[2].page_content}
    assert isinstance(scored[0][0]["score"], float)
    plain = httpx.post(served.url, json={**body, "return_scores": False}).json()["result"]
    assert plain == [[scored[0][0]["document"]]]
    unscored = SearchR1HTTPRetriever(url=served.url, return_scores=False).invoke("capital of France", k=1)
    assert unscored[0].id == "paris" and "score" not in unscored[0].metadata


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"queries": [], "topk": 3}, "queries"),
        ({"queries": "capital", "topk": 3}, "queries"),
        ({"queries": ["  "], "topk": 3}, "queries"),
        ({"queries": ["capital"], "topk": 0}, "topk"),
        ({"queries": ["capital"], "topk": 101}, "topk"),
        ({"topk": 3}, "queries"),
    ],
)
def test_malformed_requests_get_422_and_server_stays_up(served: Served, body: dict, field: str) -> None:
    response = httpx.post(served.url, json=body)
    assert response.status_code == 422
    assert field in response.json()["detail"] and "expected" in response.json()["detail"]
    assert httpx.get(served.url.replace("/retrieve", "/health")).json()["status"] == "ok"


def test_invalid_json_and_wrong_path(served: Served) -> None:
    response = httpx.post(served.url, content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and "JSON" in response.json()["detail"]
    bad_path = SearchR1HTTPRetriever(url=served.url.replace("/retrieve", "/search"), max_retries=2, backoff=0)
    with pytest.raises(RetrievalError, match=r"after 1 tries \(HTTP 404.*check the URL path"):
        bad_path.invoke("capital")


def test_concurrent_clients(served: Served) -> None:
    client = SearchR1HTTPRetriever(url=served.url, k=1)
    questions = [("Marie Curie physicist", "curie"), ("capital of France", "paris"), ("Einstein Ulm", "einstein")]

    def worker(n: int) -> list[str | None]:  # 5 requests: one batch of 3 queries, 4 single ones
        batched = [hits[0].id for hits in client.retrieve_many([q for q, _ in questions])]
        return batched + [client.invoke(questions[(n + j) % 3][0])[0].id for j in range(4)]

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(worker, range(16)))
    assert len(results) == 16
    for n, ids in enumerate(results):
        assert ids[:3] == ["curie", "paris", "einstein"]
        assert ids[3:] == [questions[(n + j) % 3][1] for j in range(4)]


def test_async_client(served: Served) -> None:
    client = SearchR1HTTPRetriever(url=served.url, k=1)

    async def many() -> list[list[list[Document]]]:
        return await asyncio.gather(*(client.aretrieve_many(["capital of France", "Warsaw Vistula"]) for _ in range(8)))

    for hits in asyncio.run(many()):
        assert [h[0].id for h in hits] == ["paris", "warsaw"]


def test_queries_of_one_request_run_concurrently() -> None:
    with serve_retriever(SlowRetriever(delay=0.5)) as s:
        start = time.perf_counter()
        hits = SearchR1HTTPRetriever(url=s.url, k=1).retrieve_many(["a", "b", "c", "d"])
        elapsed = time.perf_counter() - start
    assert [h[0].id for h in hits] == ["curie"] * 4
    assert elapsed < 1.5, f"4 queries of 0.5 s took {elapsed:.2f} s: not concurrent"


def test_slow_server_times_out_with_retries() -> None:
    with serve_retriever(SlowRetriever(delay=1.5)) as s:
        client = SearchR1HTTPRetriever(url=s.url, timeout=0.3, max_retries=1, backoff=0)
        with pytest.raises(RetrievalError, match=r"after 2 tries \(timed out after 0.3 s"):
            client.invoke("anything")


def test_failing_retriever_gives_500_with_cause() -> None:
    with serve_retriever(BrokenRetriever()) as s:
        response = httpx.post(s.url, json={"queries": ["x"]})
        assert response.status_code == 500
        assert "index file vanished" in response.json()["detail"]
        client = SearchR1HTTPRetriever(url=s.url, max_retries=1, backoff=0)
        with pytest.raises(RetrievalError, match=r"after 2 tries \(HTTP 500.*index file vanished"):
            client.invoke("x")


def test_down_server_error_is_clear() -> None:
    client = SearchR1HTTPRetriever(url=f"http://127.0.0.1:{free_port()}/retrieve", max_retries=2, backoff=0.01)
    with pytest.raises(RetrievalError, match=r"after 3 tries \(ConnectError.*is running and reachable"):
        client.retrieve_many(["capital"])


def test_app_rejects_non_retriever_and_cli_needs_store(tmp_path) -> None:
    with pytest.raises(TypeError, match="BaseRetriever"):
        create_retrieval_app(object())  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="No BM25 index"):
        main(["--retriever", "bm25", "--store", str(tmp_path / "missing")])
