"""Lexical BM25 retrieval over ``bm25s``, saved and loaded as a folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bm25s
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from langchain_ragr1.config import check_int
from langchain_ragr1.corpus import document_contents, document_ids
from langchain_ragr1.errors import ConfigError, MissingResourceError

_STOPWORDS = "en"


def _tokenize(texts: list[str]) -> list[list[str]]:
    return bm25s.tokenize(texts, stopwords=_STOPWORDS, return_ids=False, show_progress=False)


class BM25Retriever(BaseRetriever):
    """BM25 over title + text of each document; results carry ``metadata["score"]`` (documents scoring 0 are
    left out). ``invoke(query, k=n)`` overrides ``k``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: bm25s.BM25
    documents: list[Document]
    k: int = Field(default=3, ge=1)

    @classmethod
    def from_documents(cls, documents: Sequence[Document], k: int = 3, **kwargs: Any) -> BM25Retriever:
        """Index ``documents`` (a non-empty sequence; ids, as in Chroma, must be unique: ``ConfigError``)."""
        documents = list(documents)
        if not documents:
            raise ConfigError("the corpus is empty: BM25Retriever needs at least one document")
        document_ids(documents)  # the ids a Chroma store would use: a duplicate is an error there and here
        index = bm25s.BM25()
        index.index(_tokenize([document_contents(d) for d in documents]), show_progress=False)
        return cls(index=index, documents=documents, k=k, **kwargs)

    def save(self, path: str | Path) -> None:
        """Write the index and the documents to the folder ``path``."""
        corpus = [{"id": d.id, "page_content": d.page_content, "metadata": d.metadata} for d in self.documents]
        self.index.save(str(path), corpus=corpus, show_progress=False)

    @classmethod
    def load(cls, path: str | Path, k: int = 3, **kwargs: Any) -> BM25Retriever:
        """Load a folder written by :meth:`save`."""
        if not (Path(path) / "params.index.json").is_file():
            raise MissingResourceError(
                f"No BM25 index at {path} (no params.index.json there): build one with "
                f"`ragr1 index CORPUS_FILES --kind bm25 --store {path}` (or BM25Retriever.save)."
            )
        index = bm25s.BM25.load(str(path), load_corpus=True, show_progress=False)
        documents = [Document(**row) for row in index.corpus]
        index.corpus = None
        return cls(index=index, documents=documents, k=k, **kwargs)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        k = check_int("k", self.k if k is None else k, 1)
        ids, scores = self.index.retrieve(_tokenize([query]), k=min(k, len(self.documents)), show_progress=False)
        return [
            self.documents[i].model_copy(update={"metadata": {**self.documents[i].metadata, "score": float(s)}})
            for i, s in zip(ids[0], scores[0], strict=True)
            if s > 0
        ]
