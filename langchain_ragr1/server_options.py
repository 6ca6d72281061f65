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
    parser.add_argument("--retriever", choices=("bm25", "chroma", "faiss", "milvus"), default="bm25",
                        help="retriever to serve; faiss: a FAISS index (Search-R1's e5_Flat.index + wiki-18.jsonl, or "
                             "a folder of `ragr1 index --kind faiss`); milvus: a Milvus server URL or milvus-lite .db file")
    parser.add_argument("--store", default=None,
                        help="BM25 index folder, Chroma folder, FAISS index folder or file, Milvus .db file or "
                             "http://HOST:19530 (default: the bundled corpus)")
    parser.add_argument("--corpus", default=None,
                        help="a JSONL/text corpus file to index on start instead of --store; with a FAISS index "
                             "file as --store, its corpus JSONL (line i = row i of the index)")
    add_encoder_options(parser)
    parser.add_argument("--faiss-gpu", action="store_true",
                        help="move the FAISS index to all visible GPUs (needs a GPU build of FAISS, e.g. faiss-gpu-cu12)")
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


ENCODER_PRESET_NAMES = ("minilm", "e5", "bge")  # langchain_ragr1.retrievers.embeddings.ENCODER_PRESETS (a test checks)


def add_encoder_options(parser: argparse.ArgumentParser) -> None:
    """The query/passage encoder of a FAISS index (``--encoder``, ``--encoder-model``)."""
    parser.add_argument("--encoder", choices=ENCODER_PRESET_NAMES, default=None,
                        help="the encoder a FAISS index was built with: minilm (the shipped model; mean pooling), "
                             "e5 ('query: '/'passage: ', mean pooling) or bge (query instruction, CLS pooling); "
                             "default: the one the index folder records, else minilm")
    parser.add_argument("--encoder-model", default=None,
                        help="the encoder's local model folder (e5/bge: e.g. a copy of intfloat/e5-base-v2)")
