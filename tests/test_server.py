"""The /retrieve server, exercised by our SearchR1HTTPRetriever over real loopback HTTP, and
against hostile input and stalled clients (raw sockets on a server run like the documented command)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import httpx
import pytest
from _serving import Served, free_port
from fastapi.testclient import TestClient
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever

from langchain_ragr1.errors import RetrievalError
from langchain_ragr1.retrievers.bm25 import BM25Retriever
from langchain_ragr1.retrievers.http import SearchR1HTTPRetriever
from langchain_ragr1.server import build_parser, create_retrieval_app, main, uvicorn_config
from langchain_ragr1.testing import MemoryRetriever

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


SECRET_PATH = "/srv/secret/index/part-0001.bin"


class BrokenRetriever(BaseRetriever):
    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        raise FileNotFoundError(2, "No such file or directory", SECRET_PATH)


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


def assert_validation_error(response: httpx.Response, loc: list | None = None, type_: str | None = None) -> dict:
    """A 422 in FastAPI's documented HTTPValidationError shape: detail = [{loc, msg, type}], no input."""
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail, detail
    for err in detail:
        assert set(err) == {"loc", "msg", "type"}, err
        assert isinstance(err["loc"], list) and all(isinstance(p, (str, int)) for p in err["loc"])
        assert isinstance(err["msg"], str) and err["msg"] and isinstance(err["type"], str)
    if loc is not None:
        assert any(err["loc"][: len(loc)] == loc for err in detail), detail
    if type_ is not None:
        assert any(err["type"] == type_ for err in detail), detail
    return detail[0]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"queries": [], "topk": 3}, "queries"),
        ({"queries": "capital", "topk": 3}, "queries"),
        ({"queries": ["capital"], "topk": 0}, "topk"),
        ({"queries": ["capital"], "topk": 101}, "topk"),
        ({"topk": 3}, "queries"),
    ],
)
def test_malformed_requests_get_422_and_server_stays_up(served: Served, body: dict, field: str) -> None:
    assert_validation_error(httpx.post(served.url, json=body), loc=["body", field])
    assert httpx.get(served.url.replace("/retrieve", "/health")).json()["status"] == "ok"


def test_invalid_json_and_wrong_path(served: Served) -> None:
    response = httpx.post(served.url, content=b"{not json", headers={"content-type": "application/json"})
    assert "JSON" in assert_validation_error(response, loc=["body"], type_="json_invalid")["msg"]
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




def test_down_server_error_is_clear() -> None:
    client = SearchR1HTTPRetriever(url=f"http://127.0.0.1:{free_port()}/retrieve", max_retries=2, backoff=0.01)
    with pytest.raises(RetrievalError, match=r"after 3 tries \(ConnectError.*is running and reachable"):
        client.retrieve_many(["capital"])


def test_app_rejects_non_retriever_and_cli_needs_store(tmp_path) -> None:
    with pytest.raises(TypeError, match="BaseRetriever"):
        create_retrieval_app(object())  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="No BM25 index"):
        main(["--retriever", "bm25", "--store", str(tmp_path / "missing")])


# --- hostile input and faults ---------------------------------------------------------------


def memory_client(**limits) -> TestClient:
    """The app in-process over a MemoryRetriever of DOCS."""
    return TestClient(create_retrieval_app(MemoryRetriever(documents=DOCS), **limits))


def test_failing_retriever_gives_a_generic_500_with_a_request_id_and_logs_the_cause(caplog) -> None:
    with serve_retriever(BrokenRetriever()) as s:
        with caplog.at_level(logging.ERROR, logger="langchain_ragr1.server"):
            response = httpx.post(s.url, json={"queries": ["x", "y"]})
        assert response.status_code == 500
        rid = response.headers["x-request-id"]
        assert response.json() == {
            "detail": f"The retriever failed on this request (request id {rid}); the server's log has the details.",
            "request_id": rid,
        }
        for leak in (SECRET_PATH, "/srv", "FileNotFoundError", "No such file", "BrokenRetriever", "Traceback"):
            assert leak not in response.text
        logged = [r for r in caplog.records if r.name == "langchain_ragr1.server" and rid in r.getMessage()]
        assert logged and logged[0].exc_info and SECRET_PATH in str(logged[0].exc_info[1])
        assert "BrokenRetriever failed on 2 queries" in logged[0].getMessage()
        client = SearchR1HTTPRetriever(url=s.url, max_retries=1, backoff=0)
        with pytest.raises(RetrievalError, match=r"after 2 tries \(HTTP 500.*request id [0-9a-f]{32}.*server's log"):
            client.invoke("x")


def test_request_id_is_on_every_response_and_a_plain_client_id_is_kept() -> None:
    client = memory_client()
    ok = client.post("/retrieve", json={"queries": ["Warsaw"]}, headers={"X-Request-ID": "trace-42.a:b"})
    assert ok.status_code == 200 and ok.headers["x-request-id"] == "trace-42.a:b"
    bad = client.post("/retrieve", json={"queries": []}, headers={"X-Request-ID": "no spaces <allowed>"})
    assert bad.status_code == 422 and len(bad.headers["x-request-id"]) == 32
    assert client.get("/health").headers["x-request-id"] != client.get("/health").headers["x-request-id"]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b'{"queries": ["\xff\xfe caf\xe9"]}', "not valid UTF-8"),  # was 400 "There was an error parsing the body"
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"queries": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (b'{"queries": ["a"], "topk": ' + b"9" * 5000 + b"}", "too many digits"),
        (b"{not json", "JSON decode error"),
        (b"", "Field required"),
        (b"null", None),
        (b'["capital"]', None),
    ],
)
def test_every_unparsable_body_gets_the_documented_422(content: bytes, why: str | None) -> None:
    response = memory_client().post("/retrieve", content=content, headers={"content-type": "application/json"})
    err = assert_validation_error(response, loc=["body"])
    assert why is None or why in err["msg"]
    assert len(response.content) < 300  # the input is never echoed back


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"queries": ["capital"], "topk": "3"}, "topk"),  # was accepted as 3
        ({"queries": ["capital"], "topk": True}, "topk"),  # was accepted as 1
        ({"queries": ["capital"], "topk": 2.5}, "topk"),
        ({"queries": ["capital"], "topk": None}, "topk"),
        ({"queries": ["capital"], "return_scores": "yes"}, "return_scores"),  # was accepted as true
        ({"queries": ["capital"], "return_scores": 1}, "return_scores"),
        ({"queries": ["capital"], "return_scores": "false"}, "return_scores"),
        ({"queries": [1]}, "queries"),
        ({"queries": [None]}, "queries"),
        ({"queries": [["capital"]]}, "queries"),
        ({"queries": {"0": "capital"}}, "queries"),
        ({"queries": ["capital"] * 257}, "queries"),
    ],
)
def test_types_are_strict(body: dict, field: str) -> None:
    assert_validation_error(memory_client().post("/retrieve", json=body), loc=["body", field])


def test_integral_float_topk_is_an_integer_as_in_json_schema() -> None:
    response = memory_client().post("/retrieve", content=b'{"queries": ["Warsaw"], "topk": 2.0}',
                                    headers={"content-type": "application/json"})
    assert response.status_code == 200 and len(response.json()["result"][0]) == 2


def test_openapi_declares_what_the_server_answers() -> None:
    schema = memory_client().get("/openapi.json").json()
    post = schema["paths"]["/retrieve"]["post"]
    assert set(post["responses"]) == {"200", "408", "413", "422", "500"}
    assert post["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/HTTPValidationError")
    detail = schema["components"]["schemas"]["HTTPValidationError"]["properties"]["detail"]
    assert detail["type"] == "array"
    assert set(schema["components"]["schemas"]["ValidationError"]["required"]) == {"loc", "msg", "type"}
    assert "X-Request-ID" in post["responses"]["500"]["headers"]
    request = schema["components"]["schemas"]["RetrieveRequest"]["properties"]
    assert request["queries"]["items"] == {"type": "string"}  # any string, "" included
    assert (request["queries"]["maxItems"], request["topk"]["maximum"]) == (256, 100)
    assert "1024" in request["topk"]["description"]  # the queries x topk limit JSON Schema cannot say


def test_empty_and_blank_queries_get_an_empty_result_list() -> None:
    retriever = MemoryRetriever(documents=DOCS)
    client = TestClient(create_retrieval_app(retriever))
    assert client.post("/retrieve", json={"queries": [""]}).json() == {"result": [[]]}  # was a 422
    result = client.post("/retrieve", json={"queries": ["", "capital France", "  \t"], "topk": 1}).json()["result"]
    assert result[0] == [] and result[2] == [] and result[1][0]["id"] == "paris"
    assert retriever.calls == ["capital France"]


def test_non_finite_scores_are_null_not_a_500() -> None:
    doc = Document(id="x", page_content="text", metadata={"title": "T", "score": math.nan})

    class NaNRetriever(BaseRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
            return [doc]

    response = TestClient(create_retrieval_app(NaNRetriever())).post(
        "/retrieve", json={"queries": ["q"], "return_scores": True})
    assert response.status_code == 200 and response.json()["result"][0][0]["score"] is None


def test_queries_times_topk_is_limited() -> None:
    client = memory_client()
    over = client.post("/retrieve", json={"queries": ["capital"] * 256, "topk": 100})  # was 200, 7-13 MiB
    err = assert_validation_error(over, loc=["body"], type_="too_many_results")
    assert "25600" in err["msg"] and "1024" in err["msg"]
    assert client.post("/retrieve", json={"queries": ["capital"] * 256, "topk": 4}).status_code == 200
    assert client.post("/retrieve", json={"queries": ["capital"] * 10, "topk": 100}).status_code == 200


def test_limits_are_configurable() -> None:
    client = memory_client(max_queries=2, max_topk=5, max_results=6, max_body_bytes=200)
    assert client.post("/retrieve", json={"queries": ["a", "b"], "topk": 3}).status_code == 200
    assert_validation_error(client.post("/retrieve", json={"queries": ["a", "b", "c"], "topk": 1}),
                            loc=["body", "queries"])
    assert_validation_error(client.post("/retrieve", json={"queries": ["a"], "topk": 6}), loc=["body", "topk"])
    assert_validation_error(client.post("/retrieve", json={"queries": ["a", "b"], "topk": 4}),
                            type_="too_many_results")
    big = client.post("/retrieve", json={"queries": ["x" * 300]})
    assert big.status_code == 413
    assert big.json() == {"detail": "The request body is over this server's limit of 200 bytes; "
                                    "send fewer or shorter queries per request."}


def test_body_size_is_limited_with_or_without_content_length() -> None:
    client = memory_client()
    body = json.dumps({"queries": ["word " * 200] * 1100}).encode()  # 1.1 MB; was accepted (20 MiB too)
    assert len(body) > 1024 * 1024
    assert client.post("/retrieve", content=body, headers={"content-type": "application/json"}).status_code == 413
    chunked = client.post("/retrieve", content=iter([body[:600_000], body[600_000:]]),
                          headers={"content-type": "application/json"})
    assert chunked.status_code == 413 and "1048576 bytes" in chunked.json()["detail"]


@pytest.mark.parametrize(
    ("limit", "value"),
    [("max_queries", 0), ("max_topk", True), ("max_results", -1), ("max_body_bytes", "1"),
     ("body_timeout_s", 0), ("body_timeout_s", math.inf), ("body_timeout_s", math.nan)],
)
def test_bad_limits_are_refused(limit: str, value: object) -> None:
    with pytest.raises(ValueError, match=limit):
        create_retrieval_app(MemoryRetriever(documents=DOCS), **{limit: value})


# --- stalled clients, on a real server configured like the documented command ----------------

class DocumentedServer:
    """``create_retrieval_app`` under ``uvicorn_config`` (what ``main()`` / ``ragr1 serve`` run), in a thread."""

    def __init__(self, retriever: BaseRetriever, *, body_timeout_s: float = 1.0, **connection: object) -> None:
        import uvicorn

        self.port = free_port()
        app = create_retrieval_app(retriever, body_timeout_s=body_timeout_s)
        config = uvicorn_config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off",
                                **{"header_timeout_s": 1.0, **connection})
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "DocumentedServer":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)


def until_closed(sock: socket.socket, limit_s: float = 5.0) -> tuple[bytes, float | None]:
    """What the server sends until it closes the connection, and the seconds until then (None: still open)."""
    start = time.monotonic()
    data = b""
    sock.settimeout(limit_s)
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except socket.timeout:
        return data, None
    except ConnectionResetError:
        pass
    return data, time.monotonic() - start


PARTIAL_BODY = (b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n{\"queries\": [\"cap")


@pytest.fixture(scope="module")
def documented() -> Iterator[DocumentedServer]:
    with DocumentedServer(MemoryRetriever(documents=DOCS)) as server:
        yield server


def test_a_partial_body_gets_408_and_is_closed_at_the_body_deadline(documented: DocumentedServer) -> None:
    # Before: the connection stayed open (30 s and more, as long as the client wished).
    with documented.connect() as sock:
        sock.sendall(PARTIAL_BODY)
        data, seconds = until_closed(sock)
    assert seconds is not None, "the server kept a connection with a partial body open"
    assert 0.8 < seconds < 3.0
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower()
    assert json.loads(body) == {"detail": "The request body was not received within 1 s."}


def test_many_partial_bodies_are_all_closed_and_the_server_still_answers(documented: DocumentedServer) -> None:
    socks = [documented.connect() for _ in range(100)]
    try:
        for sock in socks:
            sock.sendall(PARTIAL_BODY)
        start = time.monotonic()
        results = [until_closed(sock) for sock in socks]
        assert all(seconds is not None and data.startswith(b"HTTP/1.1 408") for data, seconds in results)
        assert time.monotonic() - start < 4.0
    finally:
        for sock in socks:
            sock.close()
    hits = httpx.post(f"http://127.0.0.1:{documented.port}/retrieve", json={"queries": ["Warsaw"]})
    assert hits.status_code == 200


def test_partial_headers_and_idle_connections_are_closed_at_the_header_deadline(documented: DocumentedServer) -> None:
    with documented.connect() as idle, documented.connect() as slow:
        slow.sendall(b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Le")
        for sock in (idle, slow):
            data, seconds = until_closed(sock)
            assert data == b"" and seconds is not None and seconds < 3.0
    # After a first request on a keep-alive connection, the next request's headers have the same deadline.
    with documented.connect() as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        data, seconds = until_closed(sock)
        assert data == b"" and seconds is not None and seconds < 3.0


def test_a_declared_oversized_body_is_refused_before_it_is_sent(documented: DocumentedServer) -> None:
    with documented.connect() as sock:
        sock.sendall(b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 50000000\r\n\r\n")
        data, seconds = until_closed(sock)
    assert data.startswith(b"HTTP/1.1 413") and seconds is not None  # not the 408 of waiting for it


def test_oversized_headers_are_refused(documented: DocumentedServer) -> None:
    # Headers still incomplete after 16 KiB: refused at once, not buffered until the header deadline.
    with documented.connect() as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000)
        data, seconds = until_closed(sock)
    assert data.startswith(b"HTTP/1.1 400") and seconds is not None  # the header deadline closes silently


def test_timeouts_do_not_cut_a_slow_retrieval() -> None:
    with DocumentedServer(SlowRetriever(delay=1.6)) as server:
        client = SearchR1HTTPRetriever(url=f"http://127.0.0.1:{server.port}/retrieve", k=1, timeout=10)
        assert [d.id for d in client.invoke("anything")] == ["curie"]
        assert [d.id for d in client.invoke("again, on the same connection")] == ["curie"]


def test_the_documented_command_sets_connection_timeouts_and_limits(monkeypatch) -> None:
    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol

    configs: list = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **k: configs.append(self.config))
    monkeypatch.setattr("langchain_ragr1.retrievers.factory.make_retriever",
                        lambda *a, **k: MemoryRetriever(documents=DOCS))
    main(["--retriever", "bm25"])  # the defaults of `python -m langchain_ragr1.server` and `ragr1 serve`
    main(["--retriever", "bm25", "--keep-alive-timeout", "2", "--limit-concurrency", "64",
          "--max-header-bytes", "8192", "--max-results", "5", "--max-body-bytes", "300", "--body-timeout", "3"])
    default, custom = configs
    assert (default.timeout_keep_alive, default.limit_concurrency, default.h11_max_incomplete_event_size) == \
        (5, 256, 16384)
    assert issubclass(default.http, H11Protocol) and default.http is not H11Protocol  # with the header timeout
    assert (custom.timeout_keep_alive, custom.limit_concurrency, custom.h11_max_incomplete_event_size) == \
        (2, 64, 8192)
    app = TestClient(custom.app)
    assert_validation_error(app.post("/retrieve", json={"queries": ["a", "b"], "topk": 3}), type_="too_many_results")
    assert app.post("/retrieve", json={"queries": ["a" * 400]}).status_code == 413
    assert "within 3 s" in app.get("/openapi.json").text


def test_bad_server_options_are_usage_errors_before_the_index_loads(monkeypatch, capsys) -> None:
    monkeypatch.setattr("langchain_ragr1.retrievers.factory.make_retriever",
                        lambda *a, **k: pytest.fail("the retriever was built before the options were checked"))
    for option in (["--max-results", "0"], ["--body-timeout", "nan"], ["--limit-concurrency", "-1"]):
        with pytest.raises(SystemExit) as exited:
            main(["--retriever", "bm25", *option])
        assert exited.value.code == 2 and option[0] in capsys.readouterr().err


def test_ragr1_serve_passes_every_server_option(monkeypatch) -> None:
    from langchain_ragr1 import cli

    served: list[dict] = []
    monkeypatch.setattr("langchain_ragr1.server.serve", lambda args, usage_error: served.append(vars(args)))
    assert cli.main(["serve"]) == 0
    assert cli.main(["serve", "--max-results", "10", "--body-timeout", "2.5", "--header-timeout", "4",
                     "--keep-alive-timeout", "3", "--limit-concurrency", "32", "--max-header-bytes", "4096",
                     "--max-queries", "8", "--max-body-bytes", "1000", "--max-topk", "7"]) == 0
    defaults = vars(build_parser().parse_args([]))
    assert {k: served[0][k] for k in defaults} == defaults  # the same options and defaults as the server's
    assert {k: served[1][k] for k in ("max_results", "body_timeout", "header_timeout", "keep_alive_timeout",
                                      "limit_concurrency", "max_header_bytes", "max_queries", "max_body_bytes",
                                      "max_topk")} == \
        {"max_results": 10, "body_timeout": 2.5, "header_timeout": 4.0, "keep_alive_timeout": 3,
         "limit_concurrency": 32, "max_header_bytes": 4096, "max_queries": 8, "max_body_bytes": 1000, "max_topk": 7}
