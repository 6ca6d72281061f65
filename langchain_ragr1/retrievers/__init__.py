"""Retrievers for the search tool: dense (MiniLM + Chroma), lexical (BM25) and a Search-R1 HTTP server.

Names load lazily, so the HTTP client does not pay for importing torch and chromadb.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_ragr1.retrievers.bm25 import BM25Retriever
    from langchain_ragr1.retrievers.chroma import (
        ScoredVectorStoreRetriever,
        build_chroma_store,
        chroma_retriever,
        open_chroma_store,
    )
    from langchain_ragr1.retrievers.embeddings import MiniLMEmbeddings, default_model_path
    from langchain_ragr1.retrievers.http import SearchR1HTTPRetriever

_MODULES = {
    "BM25Retriever": "bm25",
    "MiniLMEmbeddings": "embeddings",
    "ScoredVectorStoreRetriever": "chroma",
    "SearchR1HTTPRetriever": "http",
    "build_chroma_store": "chroma",
    "chroma_retriever": "chroma",
    "default_model_path": "embeddings",
    "open_chroma_store": "chroma",
}

__all__ = [
    "BM25Retriever",
    "MiniLMEmbeddings",
    "ScoredVectorStoreRetriever",
    "SearchR1HTTPRetriever",
    "build_chroma_store",
    "chroma_retriever",
    "default_model_path",
    "open_chroma_store",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
