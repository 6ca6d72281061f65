"""Serve any LangChain retriever over the Search-R1 / RAG-R1 retrieval API.

``POST /retrieve`` with ``{"queries": [str], "topk": int, "return_scores": bool}`` answers
``{"result": [[{"document": {"id", "contents"}, "score"}, ...] per query]}`` (bare document
dicts without ``return_scores``); ``contents`` is ``"title\\ntext"``. The queries of one
request are retrieved concurrently. ``GET /health`` answers ``{"status": "ok"}``.

Run: ``python -m langchain_ragr1.server --retriever bm25 --store DIR --port 8000``
(needs ``pip install "langchain-ragr1[server]"``).
"""

# No `from __future__ import annotations`: FastAPI must resolve the request model defined
# inside create_retrieval_app from the handler's annotation at runtime.
import argparse
import asyncio
from typing import Any

from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever

from langchain_ragr1.corpus import document_contents
from langchain_ragr1.errors import MissingResourceError
from langchain_ragr1.retrieval import accepts_k

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool
    from pydantic import BaseModel, Field, field_validator
except ImportError as exc:  # pragma: no cover - depends on the install
    raise MissingResourceError(
        f'The retrieval server needs FastAPI and uvicorn ({exc}): pip install "langchain-ragr1[server]".'
    ) from exc


def _document_json(doc: Document, return_scores: bool) -> dict[str, Any]:
    doc_id = doc.id if doc.id is not None else doc.metadata.get("id")
    body = {"id": None if doc_id is None else str(doc_id), "contents": document_contents(doc)}
    if not return_scores:
        return body
    score = doc.metadata.get("score")
    return {"document": body, "score": None if score is None else float(score)}


def create_retrieval_app(retriever: BaseRetriever, *, max_queries: int = 256, max_topk: int = 100) -> FastAPI:
    """A FastAPI app serving ``retriever`` at ``POST /retrieve`` (at most ``max_queries`` queries
    and ``topk <= max_topk`` per request). Bad requests get a 422 naming the field; a failing
    retriever a 500 naming the error; the server keeps running either way."""
    if not isinstance(retriever, BaseRetriever):
        raise TypeError(f"retriever must be a LangChain BaseRetriever, got {type(retriever).__name__}.")
    pass_k = accepts_k(retriever)

    class RetrieveRequest(BaseModel):
        queries: list[str] = Field(min_length=1, max_length=max_queries)
        topk: int = Field(default=3, ge=1, le=max_topk)
        return_scores: bool = False

        @field_validator("queries")
        @classmethod
        def _non_blank(cls, queries: list[str]) -> list[str]:
            if any(not q.strip() for q in queries):
                raise ValueError("every query must be a non-blank string")
            return queries

    app = FastAPI(title="RAG-R1 retrieval server", description=__doc__)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'][1:]) or 'body'}: {err['msg']}" for err in exc.errors()
        )
        return JSONResponse(
            status_code=422,
            content={"detail": f"Bad /retrieve request ({problems}); expected "
                     '{"queries": ["..."], "topk": 3, "return_scores": true}.'},
        )

    async def _one(query: str, topk: int) -> list[Document]:
        # Sync invoke in the threadpool: the default async path of BaseRetriever drops ``k``.
        docs = await run_in_threadpool(retriever.invoke, query, **({"k": topk} if pass_k else {}))
        return list(docs)[:topk]

    @app.post("/retrieve")
    async def retrieve(body: RetrieveRequest) -> JSONResponse:
        try:
            hits = await asyncio.gather(*(_one(q, body.topk) for q in body.queries))
        except Exception as exc:  # noqa: BLE001 - reported to the client, the server stays up
            return JSONResponse(
                status_code=500,
                content={"detail": f"{type(retriever).__name__} failed: {type(exc).__name__}: {exc}"},
            )
        result = [[_document_json(d, body.return_scores) for d in docs] for docs in hits]
        return JSONResponse({"result": result})

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "retriever": type(retriever).__name__}

    return app


def main(argv: list[str] | None = None) -> None:
    """``python -m langchain_ragr1.server``: serve a BM25 or Chroma store over HTTP."""
    parser = argparse.ArgumentParser(prog="python -m langchain_ragr1.server", description=__doc__.split("\n")[0])
    parser.add_argument("--retriever", choices=("bm25", "chroma"), default="bm25")
    parser.add_argument("--store", help="BM25 index folder or Chroma folder (default: the bundled corpus)")
    parser.add_argument("--corpus", help="a JSONL/text corpus file to index on start instead of --store")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-topk", type=int, default=100)
    args = parser.parse_args(argv)

    import uvicorn

    from langchain_ragr1.defaults import make_retriever

    retriever = make_retriever(args.retriever, store=args.store, corpus=args.corpus)
    uvicorn.run(create_retrieval_app(retriever, max_topk=args.max_topk), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
