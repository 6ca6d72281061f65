"""Milvus through ``langchain-milvus``: a server or cluster by URL (``http://milvus:19530``), or a local file run by
milvus-lite (``./wiki.db``: its 2.5 wheels start Milvus's own C++ engine as a child process over a unix socket).

The same :class:`langchain_milvus.Milvus` store does both; only ``uri`` differs. A token for a secured server comes
from the environment variable ``MILVUS_TOKEN`` (``user:password`` or an API key). A milvus-lite file is locked by the
process that opens it: several processes (training ranks) share one Milvus server, or one ``ragr1 serve``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from langchain_ragr1.config import check_int
from langchain_ragr1.corpus import document_contents, document_ids
from langchain_ragr1.errors import ConfigError, MissingResourceError
from langchain_ragr1.extras import require
from langchain_ragr1.retrievers.chroma import ScoredVectorStoreRetriever

COLLECTION = "ragr1"
_SERVER_SCHEMES = ("http://", "https://", "tcp://", "grpc://")
_LITE_INDEX = {"index_type": "FLAT", "metric_type": "COSINE"}
_SERVER_INDEX = {"index_type": "HNSW", "metric_type": "COSINE", "params": {"M": 32, "efConstruction": 200}}


def is_server_uri(uri: str | Path) -> bool:
    """Whether ``uri`` names a Milvus server (``http://host:19530``) rather than a milvus-lite file."""
    return str(uri).startswith(_SERVER_SCHEMES)


def _milvus(embeddings: Embeddings, uri: str | Path, *, index_params: dict[str, Any] | None = None,
            drop_old: bool = False) -> Any:
    langchain_milvus = require("langchain_milvus", "milvus", "Milvus stores (--retriever milvus)")
    if not is_server_uri(uri):
        if not str(uri).endswith(".db"):
            raise ConfigError(
                f"--store {uri}: a Milvus store is a server URL (http://HOST:19530) or a milvus-lite file ending in "
                f".db (e.g. ./wiki.db)."
            )
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    connection = {"uri": str(uri), **({"token": os.environ["MILVUS_TOKEN"]} if os.environ.get("MILVUS_TOKEN") else {})}
    quiet = logging.getLogger("langchain_milvus.vectorstores.milvus")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its notice that the async client needs an event loop
    try:
        return langchain_milvus.Milvus(
            embedding_function=embeddings, collection_name=COLLECTION, connection_args=connection,
            index_params=index_params, search_params={"metric_type": "COSINE"}, drop_old=drop_old, auto_id=False,
            primary_field="id", text_field="text", vector_field="vector",
        )
    except Exception as exc:  # noqa: BLE001 - pymilvus raises its own MilvusException or grpc errors
        raise MissingResourceError(f"Could not open the Milvus store at {uri}: {exc}") from exc
    finally:
        quiet.setLevel(level)


class MilvusRetriever(ScoredVectorStoreRetriever):
    """Milvus similarity search; ``metadata["score"]`` is the cosine similarity Milvus returns."""

    @staticmethod
    def _scored(pairs: list[tuple[Document, float]]) -> list[Document]:
        for doc, similarity in pairs:
            doc.metadata["score"] = float(similarity)
            doc.id = doc.id or doc.metadata.get("id")
        return [doc for doc, _ in pairs]


def build_milvus_store(
    documents: Sequence[Document],
    uri: str | Path,
    *,
    embeddings: Embeddings | None = None,
    vectors: Sequence[Sequence[float]] | np.ndarray | None = None,
    batch_size: int = 1000,
    show_progress: bool = True,
) -> Any:
    """Write ``documents`` (title + text embedded; ``vectors`` skips that) into a new ``ragr1`` collection at ``uri``
    (an old one is replaced). The index is FLAT in milvus-lite and HNSW (cosine) on a server."""
    from tqdm.auto import tqdm

    from langchain_ragr1.retrievers.embeddings import MiniLMEmbeddings

    if not documents:
        raise ConfigError("the corpus is empty: nothing to index")
    if vectors is not None and len(vectors) != len(documents):
        raise ConfigError(f"vectors holds {len(vectors)} rows for {len(documents)} documents: give one per document")
    ids = document_ids(documents)
    embeddings = embeddings or MiniLMEmbeddings()
    store = _milvus(embeddings, uri, index_params=_SERVER_INDEX if is_server_uri(uri) else _LITE_INDEX, drop_old=True)
    with tqdm(total=len(ids), desc="Indexing", unit="doc", disable=not show_progress) as bar:
        for start in range(0, len(ids), batch_size):
            docs = documents[start : start + batch_size]
            texts = [document_contents(d) for d in docs]
            rows = ([list(map(float, v)) for v in vectors[start : start + batch_size]] if vectors is not None
                    else embeddings.embed_documents(texts))
            store.add_embeddings(
                texts=[d.page_content for d in docs], embeddings=rows, ids=ids[start : start + batch_size],
                metadatas=[{"title": str(d.metadata.get("title") or "")} for d in docs],
            )
            bar.update(len(docs))
    return store


def open_milvus_store(uri: str | Path, *, embeddings: Embeddings | None = None) -> Any:
    """The ``ragr1`` collection at ``uri`` (a server URL or a milvus-lite ``.db`` file) built by
    :func:`build_milvus_store`; ``MissingResourceError`` when there is none."""
    from langchain_ragr1.retrievers.embeddings import MiniLMEmbeddings

    if not is_server_uri(uri) and not Path(uri).is_file():
        raise MissingResourceError(
            f"No milvus-lite file at {uri}: build it with `ragr1 index --kind milvus --store {uri} CORPUS_FILES` "
            f"(or --bundled)."
        )
    store = _milvus(embeddings or MiniLMEmbeddings(), uri)
    if store.col is None:
        raise MissingResourceError(
            f"No collection {COLLECTION!r} in the Milvus store at {uri}: build it with `ragr1 index --kind milvus "
            f"--store {uri} CORPUS_FILES` (or --bundled)."
        )
    return store


def default_milvus_path() -> Path:
    """Where the bundled corpus's milvus-lite file lives."""
    from langchain_ragr1.paths import cache_dir

    return cache_dir() / "stores" / "wiki-summaries-milvus" / "milvus.db"


def milvus_retriever(
    store: str | Path | None = None,
    corpus: str | Path | None = None,
    *,
    k: int = 3,
    show_progress: bool = True,
) -> MilvusRetriever:
    """``--retriever milvus``: the collection at ``store`` (a server URL or a ``.db`` file), a ``corpus`` file
    indexed into ``store`` first, or (neither) the bundled corpus in a milvus-lite file of the cache."""
    from langchain_ragr1.corpus import load_bundled_corpus, load_corpus_file

    check_int("k", k, 1)
    if corpus is not None:
        if store is None:
            raise ConfigError("Indexing a corpus file into Milvus needs --store: a .db file or a server URL.")
        vectorstore = build_milvus_store(load_corpus_file(corpus), store, show_progress=show_progress)
    elif store is not None:
        vectorstore = open_milvus_store(store)
    else:
        path = default_milvus_path()
        done = path.with_name(".complete")
        if done.exists():
            vectorstore = open_milvus_store(path)
        else:
            from langchain_ragr1.retrievers.embeddings import MiniLMEmbeddings
            from langchain_ragr1.retrievers.shipped import shipped_vectors

            documents, embeddings = load_bundled_corpus(), MiniLMEmbeddings()
            vectorstore = build_milvus_store(documents, path, embeddings=embeddings, show_progress=show_progress,
                                             vectors=shipped_vectors(documents, embeddings))
            done.write_text("built from the bundled Wikipedia summaries\n")
    return MilvusRetriever(vectorstore=vectorstore, search_kwargs={"k": k})
