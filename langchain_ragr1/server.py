"""Serve any LangChain retriever over the Search-R1 / RAG-R1 retrieval API.

``POST /retrieve`` with ``{"queries": [str], "topk": int, "return_scores": bool}`` answers
``{"result": [[{"document": {"id", "contents"}, "score"}, ...] per query]}`` (bare document
dicts without ``return_scores``); ``contents`` is ``"title\\ntext"``. The queries of one
request are retrieved concurrently; an empty or blank query gets an empty result list.
``GET /health`` answers ``{"status": "ok"}``.

Limits per request: ``max_queries`` queries, ``topk <= max_topk``, ``queries x topk <=
max_results`` (422 beyond), a body of ``max_body_bytes`` (413 beyond) sent within
``body_timeout_s`` (408 after). Every malformed body gets a 422 with FastAPI's
``{"detail": [{"loc", "msg", "type"}]}``; a failing retriever a 500 with a generic message
and a request id (also the ``X-Request-ID`` header), the details go to the server's log.

Run: ``python -m langchain_ragr1.server --retriever bm25 --store DIR --port 8000``
(needs ``pip install "langchain-ragr1[server]"``).
"""

# No `from __future__ import annotations`: FastAPI must resolve the request model defined
# inside create_retrieval_app from the handler's annotation at runtime.
import argparse
import asyncio
import json
import logging
import math
import re
import uuid
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Annotated, Any, Optional, Union, cast

from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever

from langchain_ragr1.corpus import document_contents
from langchain_ragr1.errors import MissingResourceError
from langchain_ragr1.extras import require
from langchain_ragr1.retrieval import accepts_k
from langchain_ragr1.server_options import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_KEEP_ALIVE_S,
    DEFAULT_LIMIT_CONCURRENCY,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_QUERIES,
    DEFAULT_MAX_RESULTS,
    DEFAULT_MAX_TOPK,
    add_server_options,
)

try:
    import anyio
    from fastapi import FastAPI, Request
    from fastapi.exception_handlers import http_exception_handler
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr, model_validator
    from pydantic_core import PydanticCustomError
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as exc:  # pragma: no cover - depends on the install
    raise MissingResourceError(
        f'The retrieval server needs FastAPI and uvicorn ({exc}): pip install "langchain-ragr1[server]".'
    ) from exc

logger = logging.getLogger(__name__)

# Request limits (create_retrieval_app, --max-* options).

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_KEY = "langchain_ragr1.request_id"
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


# --- wire models (documentation of the responses; requests are validated by RetrieveRequest) ---

class DocumentJSON(BaseModel):
    id: Optional[str]
    contents: str


class ScoredHit(BaseModel):
    document: DocumentJSON
    score: Optional[float]


class RetrieveResponse(BaseModel):
    result: list[list[Union[ScoredHit, DocumentJSON]]] = Field(
        description="one list per query, in order; scored hits with return_scores, bare documents without"
    )


class ErrorMessage(BaseModel):
    detail: str


class ValidationError(BaseModel):
    """FastAPI's documented ValidationError (its optional ``input`` and ``ctx`` are never sent)."""

    loc: list[Union[str, int]] = Field(title="Location")
    msg: str = Field(title="Message")
    type: str = Field(title="Error Type")


class HTTPValidationError(BaseModel):
    """Every 422: ``{"detail": [{"loc", "msg", "type"}, ...]}``."""

    detail: list[ValidationError]


class ServerError(BaseModel):
    detail: str
    request_id: str


def _integral_float_to_int(value: Any) -> Any:
    # JSON Schema counts 3.0 as an integer; "3" and true stay rejected (strict int).
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


StrictTopK = Annotated[int, Field(strict=True), BeforeValidator(_integral_float_to_int)]


def _request_id(scope: MutableMapping[str, Any]) -> str:
    rid = scope.get(_REQUEST_ID_KEY)
    if rid is None:  # a request that did not go through the guard (should not happen)
        rid = scope[_REQUEST_ID_KEY] = uuid.uuid4().hex
    return rid


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return value


def _positive_seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive, finite number of seconds, got {value!r}.")
    return float(value)


class _RequestGuard:
    """ASGI middleware: a request id for every request (``X-Request-ID`` on every response),
    and the body read up front within ``max_body_bytes`` (413 beyond, before reading it when
    Content-Length says so) and ``body_timeout_s`` (408 after; uvicorn has no body timeout)."""

    def __init__(self, app: Any, max_body_bytes: int, body_timeout_s: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1")
        rid = given if _CLIENT_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope[_REQUEST_ID_KEY] = rid
        id_header = (REQUEST_ID_HEADER.lower().encode(), rid.encode())

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                out = list(message.get("headers") or [])
                if all(name.lower() != id_header[0] for name, _ in out):
                    message = {**message, "headers": out + [id_header]}
            await send(message)

        async def reject(status: int, detail: str) -> None:
            # The rest of the body is not read: close the connection after answering.
            body = json.dumps({"detail": detail}).encode()
            await send({"type": "http.response.start", "status": status, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"), id_header,
            ]})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        too_large = (f"The request body is over this server's limit of {self.max_body_bytes} bytes; "
                     "send fewer or shorter queries per request.")
        declared = headers.get(b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_body_bytes:
            await reject(413, too_large)
            return

        chunks: list[bytes] = []
        size = 0
        more = True
        with anyio.move_on_after(self.body_timeout_s) as deadline:
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return  # the client left; nobody to answer
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body_bytes:
                    await reject(413, too_large)
                    return
                chunks.append(chunk)
                more = message.get("more_body", False)
        if deadline.cancel_called:
            await reject(408, f"The request body was not received within {self.body_timeout_s:g} s.")
            return

        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send_with_id)


def _document_json(doc: Document, return_scores: bool) -> dict[str, Any]:
    doc_id = doc.id if doc.id is not None else doc.metadata.get("id")
    body = {"id": None if doc_id is None else str(doc_id), "contents": document_contents(doc)}
    if not return_scores:
        return body
    score = doc.metadata.get("score")
    score = None if score is None else float(score)
    return {"document": body, "score": score if score is not None and math.isfinite(score) else None}


def _error_json(err: dict) -> dict[str, Any]:
    """One error in FastAPI's documented ValidationError shape, without echoing the input."""
    msg = str(err.get("msg", "Invalid request"))
    ctx = err.get("ctx") or {}
    if err.get("type") == "json_invalid" and ctx.get("error"):
        msg = f"{msg}: {ctx['error']}"
    return {"loc": [p if isinstance(p, (str, int)) else str(p) for p in err.get("loc", ("body",))],
            "msg": msg, "type": str(err.get("type", "value_error"))}


def _unparsable_body(cause: BaseException) -> dict[str, Any]:
    if isinstance(cause, UnicodeDecodeError):
        msg = f"JSON decode error: the body is not valid UTF-8 (byte {cause.start})"
    elif isinstance(cause, RecursionError):
        msg = "JSON decode error: nested too deeply"
    elif "digits" in str(cause):
        msg = "JSON decode error: a number with too many digits"
    else:
        msg = "JSON decode error"
    return {"loc": ["body"], "msg": msg, "type": "json_invalid"}


def create_retrieval_app(
    retriever: BaseRetriever,
    *,
    max_queries: int = DEFAULT_MAX_QUERIES,
    max_topk: int = DEFAULT_MAX_TOPK,
    max_results: int = DEFAULT_MAX_RESULTS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
) -> FastAPI:
    """A FastAPI app serving ``retriever`` at ``POST /retrieve``.

    A request has at most ``max_queries`` queries, ``topk <= max_topk`` and ``queries x topk
    <= max_results``, else a 422 naming the field; a body over ``max_body_bytes`` gets a 413
    and one not received within ``body_timeout_s`` a 408. Every malformed body gets a 422 in
    FastAPI's ``{"detail": [{"loc", "msg", "type"}]}`` shape. A failing retriever gets a 500
    with a generic message and a request id (the ``X-Request-ID`` header too); the exception
    is logged with that id. The server keeps running either way."""
    if not isinstance(retriever, BaseRetriever):
        raise TypeError(f"retriever must be a LangChain BaseRetriever, got {type(retriever).__name__}.")
    max_queries = _positive_int("max_queries", max_queries)
    max_topk = _positive_int("max_topk", max_topk)
    max_results = _positive_int("max_results", max_results)
    max_body_bytes = _positive_int("max_body_bytes", max_body_bytes)
    body_timeout_s = _positive_seconds("body_timeout_s", body_timeout_s)
    pass_k = accepts_k(retriever)
    name = type(retriever).__name__
    RetrieveRequest = _request_model(max_queries, max_topk, max_results)
    app = FastAPI(title="RAG-R1 retrieval server", description=__doc__)
    app.add_middleware(_RequestGuard, max_body_bytes=max_body_bytes, body_timeout_s=body_timeout_s)
    _add_error_handlers(app)
    error_responses = _error_responses(max_body_bytes, body_timeout_s, max_results)

    async def _one(query: str, topk: int) -> list[Document]:
        if not query.strip():
            return []
        # Sync invoke in the threadpool: the default async path of BaseRetriever drops ``k``.
        extra: dict[str, Any] = {"k": topk} if pass_k else {}
        docs = await run_in_threadpool(retriever.invoke, query, **extra)
        return list(docs)[:topk]

    @app.post("/retrieve", response_model=RetrieveResponse, responses=error_responses)
    async def retrieve(body: RetrieveRequest, request: Request) -> JSONResponse:  # type: ignore[valid-type]
        # (a class made per app, with its limits: the annotation FastAPI reads; its fields are _RetrieveBody's)
        body = cast(_RetrieveBody, body)
        try:
            hits = await asyncio.gather(*(_one(q, body.topk) for q in body.queries))
            result = [[_document_json(d, body.return_scores) for d in docs] for docs in hits]
            return JSONResponse({"result": result})
        except Exception as exc:  # noqa: BLE001 - logged with the request id, a generic 500 to the client
            logger.error("request %s: %s failed on %d queries (topk=%d)", _request_id(request.scope), name,
                         len(body.queries), body.topk, exc_info=exc)
            return _server_error(request)

    @app.get("/health", responses={408: error_responses[408], 413: error_responses[413]})
    async def health() -> dict[str, str]:
        return {"status": "ok", "retriever": name}

    return app


class _RetrieveBody(BaseModel):
    """The fields of a ``/retrieve`` body; :func:`_request_model` adds a server's limits."""

    queries: list[StrictStr]
    topk: StrictTopK = 3
    return_scores: StrictBool = False


def _request_model(max_queries: int, max_topk: int, max_results: int) -> type[_RetrieveBody]:
    """The ``/retrieve`` body with this server's limits (in its OpenAPI schema too)."""

    class RetrieveRequest(_RetrieveBody):
        model_config = ConfigDict(title="RetrieveRequest")

        queries: list[StrictStr] = Field(
            min_length=1, max_length=max_queries,
            description=f"1 to {max_queries} query strings; an empty or blank query gets an empty result list",
        )
        topk: StrictTopK = Field(
            default=3, ge=1, le=max_topk,
            description=f"passages per query, 1 to {max_topk}; len(queries) x topk must be <= {max_results}",
        )
        return_scores: StrictBool = Field(default=False, description="hits as {document, score} instead of bare documents")

        @model_validator(mode="after")
        def _results_within_limit(self) -> "RetrieveRequest":
            results = len(self.queries) * self.topk
            if results > max_results:
                raise PydanticCustomError(
                    "too_many_results",
                    "len(queries) x topk = {results} results is over this server's limit of {limit} per request; "
                    "send fewer queries or a smaller topk",
                    {"results": results, "limit": max_results},
                )
            return self

    return RetrieveRequest


def _server_error(request: Request, what: str = "The retriever failed") -> JSONResponse:
    rid = _request_id(request.scope)
    return JSONResponse(
        status_code=500,
        content={"detail": f"{what} on this request (request id {rid}); the server's log has the details.",
                 "request_id": rid},
        headers={REQUEST_ID_HEADER: rid},
    )


def _add_error_handlers(app: FastAPI) -> None:
    """Every malformed body a 422 in FastAPI's documented shape; anything unexpected a generic 500."""
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": [_error_json(e) for e in exc.errors()]})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Any:
        # FastAPI answers a body that json.loads cannot read (not UTF-8, nested too deeply, a
        # number over Python's digit limit) with a 400 "There was an error parsing the body";
        # it is a malformed body like any other: 422 in the documented shape.
        if exc.status_code == 400 and isinstance(exc.__cause__, (ValueError, RecursionError)):
            return JSONResponse(status_code=422, content={"detail": [_unparsable_body(exc.__cause__)]})
        return await http_exception_handler(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("request %s: unexpected error", _request_id(request.scope), exc_info=exc)
        return _server_error(request, "The server failed")


def _error_responses(max_body_bytes: int, body_timeout_s: float, max_results: int) -> dict[Union[int, str], dict[str, Any]]:
    """The error answers of ``/retrieve`` for the OpenAPI schema."""
    return {
        408: {"model": ErrorMessage, "description": f"The body was not received within {body_timeout_s:g} s"},
        413: {"model": ErrorMessage, "description": f"The body is over {max_body_bytes} bytes"},
        422: {"model": HTTPValidationError,
              "description": f"Malformed body, a field out of range, or len(queries) x topk over {max_results}"},
        500: {"model": ServerError, "description": "The retriever failed; the server's log has the details",
              "headers": {REQUEST_ID_HEADER: {"description": "the request id of the log entry",
                                              "schema": {"type": "string"}}}},
    }


def _h11_protocol(header_timeout_s: float) -> type:
    """uvicorn's h11 protocol, closing a connection that has not sent a complete request line
    and headers within ``header_timeout_s`` of connecting or of its last response (uvicorn
    has no header timeout: a client sending headers slowly would hold its connection forever)."""
    if TYPE_CHECKING:
        from uvicorn.protocols.http.h11_impl import H11Protocol
    else:  # a missing uvicorn is a MissingExtraError naming the extra
        H11Protocol = require("uvicorn.protocols.http.h11_impl", "server").H11Protocol

    class H11WithHeaderTimeout(H11Protocol):
        _ragr1_timer: Optional[asyncio.TimerHandle] = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._ragr1_arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._ragr1_arm()

        def connection_lost(self, exc: Optional[Exception]) -> None:
            if self._ragr1_timer is not None:
                self._ragr1_timer.cancel()
            super().connection_lost(exc)

        def _ragr1_arm(self) -> None:
            if self._ragr1_timer is not None:
                self._ragr1_timer.cancel()
            self._ragr1_timer = self.loop.call_later(header_timeout_s, self._ragr1_expire, self.cycle)

        def _ragr1_expire(self, cycle: Any) -> None:
            # A new request replaces self.cycle as soon as its headers are in; a request
            # still being answered is not idle.
            idle = self.cycle is None or getattr(self.cycle, "response_complete", True)
            if self.cycle is cycle and idle and not self.transport.is_closing():
                self.transport.close()

    return H11WithHeaderTimeout


def uvicorn_config(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
    timeout_keep_alive: int = DEFAULT_KEEP_ALIVE_S,
    limit_concurrency: int = DEFAULT_LIMIT_CONCURRENCY,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    **kwargs: Any,
) -> Any:
    """The ``uvicorn.Config`` of the documented server command: the h11 protocol with a header
    timeout, ``timeout_keep_alive``, ``limit_concurrency`` (503 beyond) and
    ``h11_max_incomplete_event_size`` (a bounded request line + headers). The body timeout and
    size limit are the app's (:func:`create_retrieval_app`)."""
    uvicorn = require("uvicorn", "server")

    return uvicorn.Config(
        app, host=host, port=port,
        http=_h11_protocol(_positive_seconds("header_timeout_s", header_timeout_s)),
        timeout_keep_alive=_positive_int("timeout_keep_alive", timeout_keep_alive),
        limit_concurrency=_positive_int("limit_concurrency", limit_concurrency),
        h11_max_incomplete_event_size=_positive_int("max_header_bytes", max_header_bytes),
        **kwargs,
    )


def build_parser() -> argparse.ArgumentParser:
    """The options of ``python -m langchain_ragr1.server`` (``ragr1 serve`` has the same)."""
    parser = argparse.ArgumentParser(prog="python -m langchain_ragr1.server", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_server_options(parser)
    return parser


def main(argv: Optional[list[str]] = None) -> None:
    """``python -m langchain_ragr1.server``: serve a BM25 or Chroma store over HTTP."""
    parser = build_parser()
    serve(parser.parse_args(argv), parser.error)


def encoder_from_args(args: argparse.Namespace) -> Any:
    """The encoder of ``--encoder``/``--encoder-model`` (``None`` when neither is given: the index's own)."""
    preset, model = getattr(args, "encoder", None), getattr(args, "encoder_model", None)
    if preset is None and model is None:
        return None
    from langchain_ragr1.retrievers.embeddings import encoder_embeddings

    return encoder_embeddings(preset or "minilm", model)


def serve(args: argparse.Namespace, usage_error) -> None:
    """Serve ``args`` (the options of :func:`add_server_options`); ``usage_error(message)`` reports a bad one."""
    uvicorn = require("uvicorn", "server")

    from langchain_ragr1.retrievers.factory import make_retriever

    try:  # every limit is checked before the index loads
        app_limits: dict[str, Any] = dict(max_queries=_positive_int("--max-queries", args.max_queries),
                                          max_topk=_positive_int("--max-topk", args.max_topk),
                                          max_results=_positive_int("--max-results", args.max_results),
                                          max_body_bytes=_positive_int("--max-body-bytes", args.max_body_bytes),
                                          body_timeout_s=_positive_seconds("--body-timeout", args.body_timeout))
        connection: dict[str, Any] = dict(header_timeout_s=_positive_seconds("--header-timeout", args.header_timeout),
                                          timeout_keep_alive=_positive_int("--keep-alive-timeout", args.keep_alive_timeout),
                                          limit_concurrency=_positive_int("--limit-concurrency", args.limit_concurrency),
                                          max_header_bytes=_positive_int("--max-header-bytes", args.max_header_bytes))
    except ValueError as exc:
        usage_error(str(exc))

    # retriever failures are logged, with their request id: here unless `ragr1 serve` already shows the package's records
    if not logging.getLogger().handlers and not logging.getLogger("langchain_ragr1").handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s:    %(name)s: %(message)s")
    retriever = make_retriever(args.retriever, store=args.store, corpus=args.corpus, encoder=encoder_from_args(args),
                               faiss_gpu=getattr(args, "faiss_gpu", False))
    app = create_retrieval_app(retriever, **app_limits)
    uvicorn.Server(uvicorn_config(app, host=args.host, port=args.port, **connection)).run()


if __name__ == "__main__":
    main()
