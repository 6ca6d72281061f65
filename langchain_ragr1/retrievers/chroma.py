"""A persistent, embedded Chroma store over MiniLM embeddings; builds resume where they stopped."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import chromadb
from chromadb.errors import NotFoundError
from langchain_chroma import Chroma
from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStoreRetriever
from tqdm.auto import tqdm

from langchain_ragr1.corpus import document_contents
from langchain_ragr1.errors import ConfigError, MissingResourceError
from langchain_ragr1.retrievers.embeddings import MiniLMEmbeddings

_CONFIGURATION = {"hnsw": {"space": "cosine"}}


def _client(path: str | Path) -> chromadb.ClientAPI:
    # Default settings, so other code may open the same path in this process (Chroma refuses differing settings).
    return chromadb.PersistentClient(path=str(path))


def _store(client: chromadb.ClientAPI, collection_name: str, embeddings: Embeddings | None) -> Chroma:
    # Chroma opens the collection with embedding_function=None: Chroma's own (downloading) default never runs.
    return Chroma(
        collection_name=collection_name,
        embedding_function=embeddings or MiniLMEmbeddings(),
        client=client,
        collection_configuration=_CONFIGURATION,
    )


def _scalar_metadata(doc: Document, doc_id: str) -> dict[str, Any]:
    meta = {k: v for k, v in doc.metadata.items() if isinstance(v, str | int | float | bool)}
    return {**meta, "id": doc_id}


def build_chroma_store(
    documents: Sequence[Document],
    path: str | Path,
    *,
    collection_name: str = "ragr1",
    embeddings: Embeddings | None = None,
    batch_size: int = 256,
    show_progress: bool = True,
    vectors: Sequence[Sequence[float]] | None = None,
) -> Chroma:
    """Embed ``documents`` (title + text) into a persistent Chroma collection at ``path``.

    Ids are ``metadata["id"]`` (else ``doc.id``, else the position); ids already in the collection are skipped,
    so rerunning an interrupted build finishes it. ``vectors`` (one per document, from the same embedder)
    skips the embedding: the bundled corpus ships its own (:mod:`langchain_ragr1.retrievers.shipped`).
    """
    if vectors is not None and len(vectors) != len(documents):
        raise ConfigError(f"vectors holds {len(vectors)} rows for {len(documents)} documents: give one per document")
    if not documents:
        raise ConfigError("the corpus is empty: nothing to index")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    ids = [str(d.metadata.get("id") or d.id or i) for i, d in enumerate(documents)]
    if len(set(ids)) != len(ids):
        dup = next(i for i, n in Counter(ids).items() if n > 1)
        raise ConfigError(f"document ids must be unique; {dup!r} appears more than once")
    embeddings = embeddings or MiniLMEmbeddings()
    Path(path).mkdir(parents=True, exist_ok=True)
    client = _client(path)
    collection = client.get_or_create_collection(
        collection_name, embedding_function=None, configuration=_CONFIGURATION
    )
    added = 0
    with tqdm(total=len(ids), desc="Indexing", unit="doc", disable=not show_progress) as bar:
        for start in range(0, len(ids), batch_size):
            batch_ids = ids[start : start + batch_size]
            present = set(collection.get(ids=batch_ids, include=[])["ids"])
            todo = [i for i, doc_id in enumerate(batch_ids, start) if doc_id not in present]
            if todo:
                docs = [documents[i] for i in todo]
                collection.upsert(
                    ids=[ids[i] for i in todo],
                    embeddings=(
                        [list(map(float, vectors[i])) for i in todo] if vectors is not None
                        else embeddings.embed_documents([document_contents(d) for d in docs])
                    ),
                    documents=[d.page_content for d in docs],
                    metadatas=[_scalar_metadata(d, ids[i]) for d, i in zip(docs, todo, strict=True)],
                )
                added += len(todo)
            bar.update(len(batch_ids))
            bar.set_postfix(added=added, skipped=start + len(batch_ids) - added)
    return _store(client, collection_name, embeddings)


def open_chroma_store(
    path: str | Path, *, collection_name: str = "ragr1", embeddings: Embeddings | None = None
) -> Chroma:
    """Open a store built by :func:`build_chroma_store`; a missing or empty one raises ``MissingResourceError``."""
    hint = f"build it first: `ragr1 index --bundled --store {path}` (or `ragr1 index CORPUS_FILES --store {path}`)"
    if not Path(path).is_dir():
        raise MissingResourceError(f"No Chroma store at {path}: {hint}.")
    client = _client(path)
    try:
        count = client.get_collection(collection_name, embedding_function=None).count()
    except NotFoundError as exc:
        raise MissingResourceError(f"No collection {collection_name!r} in the Chroma store at {path}: {hint}.") from exc
    if count == 0:
        raise MissingResourceError(f"The collection {collection_name!r} at {path} is empty: {hint}.")
    return _store(client, collection_name, embeddings)


class ScoredVectorStoreRetriever(VectorStoreRetriever):
    """Similarity search that puts the cosine similarity (``1 - cosine distance``) in ``metadata["score"]``."""

    @staticmethod
    def _scored(pairs: list[tuple[Document, float]]) -> list[Document]:
        for doc, distance in pairs:
            doc.metadata["score"] = 1.0 - float(distance)
        return [doc for doc, _ in pairs]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        return self._scored(self.vectorstore.similarity_search_with_score(query, **self.search_kwargs | kwargs))

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        pairs = await self.vectorstore.asimilarity_search_with_score(query, **self.search_kwargs | kwargs)
        return self._scored(pairs)


def chroma_retriever(store: Chroma, k: int = 3) -> ScoredVectorStoreRetriever:
    """A retriever returning the top ``k`` passages (``invoke(query, k=n)`` overrides ``k``), scores in metadata."""
    if k < 1:
        raise ConfigError(f"k must be positive, got {k}")
    return ScoredVectorStoreRetriever(vectorstore=store, search_kwargs={"k": k})
