"""The options and defaults of the ``/retrieve`` server, without its dependencies.

``ragr1 serve`` and ``python -m langchain_ragr1.server`` both take them from here, so the CLI
can show them without FastAPI installed.
"""

from __future__ import annotations

import argparse

DEFAULT_MAX_QUERIES = 256
DEFAULT_MAX_TOPK = 100
DEFAULT_MAX_RESULTS = 1024            # queries x topk per request
DEFAULT_MAX_BODY_BYTES = 1024 * 1024  # 1 MiB
DEFAULT_BODY_TIMEOUT_S = 10.0         # to receive the whole body, from the end of the headers
# Connection settings of the documented command (main(), `ragr1 serve`).
DEFAULT_HEADER_TIMEOUT_S = 10.0       # to send a request's headers (from connecting or the last response)
DEFAULT_KEEP_ALIVE_S = 5              # uvicorn's timeout_keep_alive: idle connections between requests
DEFAULT_LIMIT_CONCURRENCY = 256       # uvicorn's limit_concurrency: open connections/tasks before 503s
DEFAULT_MAX_HEADER_BYTES = 16 * 1024  # uvicorn's h11_max_incomplete_event_size: request line + headers


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """The retriever, address, limits and connection timeouts of the server."""
    parser.add_argument("--retriever", choices=("bm25", "chroma"), default="bm25", help="retriever to serve")
    parser.add_argument("--store", default=None,
                        help="BM25 index folder or Chroma folder (default: the bundled corpus)")
    parser.add_argument("--corpus", default=None, help="a JSONL/text corpus file to index on start instead of --store")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("--max-queries", type=int, default=DEFAULT_MAX_QUERIES, help="queries per request")
    parser.add_argument("--max-topk", type=int, default=DEFAULT_MAX_TOPK, help="largest topk a request may ask for")
    parser.add_argument("--max-results", type=int, default=DEFAULT_MAX_RESULTS,
                        help="largest queries x topk per request (422 beyond)")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                        help="largest request body (413 beyond)")
    parser.add_argument("--body-timeout", type=float, default=DEFAULT_BODY_TIMEOUT_S,
                        help="seconds to receive a request body (408 after)")
    parser.add_argument("--header-timeout", type=float, default=DEFAULT_HEADER_TIMEOUT_S,
                        help="seconds to receive a request's headers (the connection is closed after)")
    parser.add_argument("--keep-alive-timeout", type=int, default=DEFAULT_KEEP_ALIVE_S,
                        help="seconds an idle connection stays open between requests")
    parser.add_argument("--limit-concurrency", type=int, default=DEFAULT_LIMIT_CONCURRENCY,
                        help="open connections/requests before new requests get a 503")
    parser.add_argument("--max-header-bytes", type=int, default=DEFAULT_MAX_HEADER_BYTES,
                        help="largest request line + headers")
