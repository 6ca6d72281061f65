"""A persistent, embedded Chroma store over MiniLM embeddings; builds resume where they stopped."""

from __future__ import annotations

import json
import os
import sqlite3
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
from chromadb.api import CreateCollectionConfiguration
from chromadb.errors import InternalError, NotFoundError
from langchain_chroma import Chroma
from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStoreRetriever
from tqdm.auto import tqdm

from langchain_ragr1.config import check_int
from langchain_ragr1.corpus import document_contents, document_ids
from langchain_ragr1.errors import ConfigError, MissingResourceError
from langchain_ragr1.paths import atomic_write_text
from langchain_ragr1.retrievers.embeddings import MiniLMEmbeddings

_CONFIGURATION: CreateCollectionConfiguration = {"hnsw": {"space": "cosine"}}

COMPLETE_MARKER = ".complete"
"""Written into a store's folder when :func:`build_chroma_store` finishes (JSON: collection, counts)."""
CHROMA_FILE = "chroma.sqlite3"
"""Chroma's database in a store folder: :func:`open_chroma_store` refuses a folder without it (never creates it)."""
PARTIAL_MARKER = ".partial"
"""Written when a build starts and removed when it finishes: a store holding it is partial (or still building)."""


class CorruptStoreError(MissingResourceError):
    """A Chroma store whose files cannot be read (a truncated or damaged ``chroma.sqlite3``)."""

    def __init__(self, path: str | Path, cause: BaseException, what_to_do: str | None = None) -> None:
        self.path, self.cause, self.reason = Path(path), cause, _reason(cause)
        what_to_do = what_to_do or (
            f"delete the folder {path} and build it again with `ragr1 index CORPUS_FILES --store {path}` "
            f"(or `ragr1 index --bundled --store {path}`); a rebuild resumes nothing from a corrupt store"
        )
        super().__init__(f"The Chroma store at {path} is corrupt (Chroma: {self.reason}): {what_to_do}.")


class PartialStoreWarning(UserWarning):
    """A Chroma store whose build did not finish: searches see only the passages indexed so far."""


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.removeprefix("error returned from database: ")


def _forget_client(path: str | Path, *, live: bool = False) -> None:
    """Drop Chroma's cached client system of the folder ``path``.

    Chroma caches a system per folder before starting it; one that failed to start stays cached and breaks the
    next open of that folder in this process ("no attribute 'bindings'"): those go. ``live=True`` also stops and
    drops one in use (the folder is being deleted: a rebuild must not write through its stale connection).
    """
    from chromadb.api.shared_system_client import SharedSystemClient

    systems = getattr(SharedSystemClient, "_identifier_to_system", {})
    refcounts = getattr(SharedSystemClient, "_identifier_to_refcount", {})
    for key in [k for k in systems if k in (str(path), os.path.abspath(path))]:
        if key in refcounts and not live:
            continue
        system = systems.pop(key, None)
        refcounts.pop(key, None)
        if live and system is not None:
            try:
                system.stop()
            except Exception:  # noqa: BLE001 - a broken system may not stop cleanly; it is dropped anyway
                pass


def close_clients() -> None:
    """Stop every Chroma client system this process opened (their database connections and index readers), as
    the interpreter's teardown would; ``ragr1 ask`` calls it before it ends without that teardown."""
    from chromadb.api.shared_system_client import SharedSystemClient

    for key in list(getattr(SharedSystemClient, "_identifier_to_system", {})):
        _forget_client(key, live=True)


def discard_store(path: str | Path) -> None:
    """Delete the store folder ``path`` (a corrupt cache), moved aside first so no reader sees it half-deleted."""
    import shutil

    folder = Path(path)
    _forget_client(folder, live=True)
    aside = folder.with_name(f".{folder.name}.discarded-{os.getpid()}")
    try:
        folder.rename(aside)
    except FileNotFoundError:  # another process discarded it first
        return
    except OSError as exc:
        raise MissingResourceError(
            f"Could not delete the corrupt Chroma store at {path} ({exc.strerror or exc}): delete that folder "
            f"yourself; it is rebuilt on next use."
        ) from exc
    shutil.rmtree(aside, ignore_errors=True)


@contextmanager
def _readable(path: str | Path) -> Iterator[None]:
    """Chroma's errors for damaged files (``database disk image is malformed``) as :class:`CorruptStoreError`."""
    try:
        yield
    except (InternalError, sqlite3.DatabaseError) as exc:
        _forget_client(path)
        raise CorruptStoreError(path, exc) from exc


def _client(path: str | Path) -> chromadb.ClientAPI:
    # Default settings, so other code may open the same path in this process (Chroma refuses differing settings).
    return chromadb.PersistentClient(path=str(path))


def _read_marker(path: Path) -> dict[str, Any] | None:
    """A marker's JSON record; ``{}`` for a marker that is not JSON (the bundled store's older text marker)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _write_marker(path: Path, record: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")


def store_manifest(path: str | Path) -> dict[str, Any] | None:
    """The record of the last finished :func:`build_chroma_store` into ``path`` (``None`` if none finished):
    ``collection``, ``documents`` (the corpus size), ``count`` (passages in the store), ``added``, ``updated``
    and ``unchanged``. A store whose build was interrupted has none until a rerun finishes it."""
    if (Path(path) / PARTIAL_MARKER).exists() and not (Path(path) / COMPLETE_MARKER).exists():
        return None
    return _read_marker(Path(path) / COMPLETE_MARKER)


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


def _partial_notice(path: str | Path, count: int, total: object) -> str:
    if isinstance(total, int) and not isinstance(total, bool) and count <= total:
        held = f"it holds {count} of the {total} passages"
    else:
        held = f"it holds {count} passages; the unfinished run was indexing {total}"
    return (
        f"The Chroma store at {path} is partial: its `ragr1 index` run did not finish ({held}), so searches "
        f"see only part of the corpus. To finish it, rerun the same `ragr1 index ... --store {path}` command "
        f"(it resumes where it stopped); if that run is still going, wait for it."
    )


def build_chroma_store(
    documents: Sequence[Document],
    path: str | Path,
    *,
    collection_name: str = "ragr1",
    embeddings: Embeddings | None = None,
    batch_size: int = 256,
    show_progress: bool = True,
    vectors: Sequence[Sequence[float]] | np.ndarray | None = None,
) -> Chroma:
    """Embed ``documents`` (title + text) into a persistent Chroma collection at ``path``.

    Ids are ``metadata["id"]`` (else ``doc.id``, else the position). A document already in the collection with
    the same text and metadata is skipped, so rerunning an interrupted build finishes it; one whose text or
    metadata changed is embedded again and replaced. The folder is marked partial (:data:`PARTIAL_MARKER`)
    while building and complete (:data:`COMPLETE_MARKER`, with the counts added/updated/unchanged: see
    :func:`store_manifest`) at the end; :func:`open_chroma_store` warns about a partial store. ``vectors`` (one
    per document, from the same embedder) skips the embedding: the bundled corpus ships its own
    (:mod:`langchain_ragr1.retrievers.shipped`). A damaged store raises :class:`CorruptStoreError`.
    """
    if vectors is not None and len(vectors) != len(documents):
        raise ConfigError(f"vectors holds {len(vectors)} rows for {len(documents)} documents: give one per document")
    if not documents:
        raise ConfigError("the corpus is empty: nothing to index")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    ids = document_ids(documents)
    embeddings = embeddings or MiniLMEmbeddings()
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    with _readable(path):
        client = _client(path)
        collection = client.get_or_create_collection(
            collection_name, embedding_function=None, configuration=_CONFIGURATION
        )
        # partial first, then not complete: at every moment one of the two markers tells the truth
        _write_marker(folder / PARTIAL_MARKER, {"collection": collection_name, "documents": len(ids)})
        (folder / COMPLETE_MARKER).unlink(missing_ok=True)
        added = updated = 0
        with tqdm(total=len(ids), desc="Indexing", unit="doc", disable=not show_progress) as bar:
            for start in range(0, len(ids), batch_size):
                batch_ids = ids[start : start + batch_size]
                got = collection.get(ids=batch_ids, include=["documents", "metadatas"])
                assert got["documents"] is not None and got["metadatas"] is not None  # both are in include
                stored = dict(zip(got["ids"], zip(got["documents"], got["metadatas"], strict=True), strict=True))
                todo = []
                for i, doc_id in enumerate(batch_ids, start):
                    if doc_id not in stored:
                        added += 1
                    elif stored[doc_id] != (documents[i].page_content, _scalar_metadata(documents[i], doc_id)):
                        updated += 1
                    else:
                        continue
                    todo.append(i)
                if todo:
                    docs = [documents[i] for i in todo]
                    rows = (
                        [list(map(float, vectors[i])) for i in todo] if vectors is not None
                        else embeddings.embed_documents([document_contents(d) for d in docs])
                    )
                    collection.upsert(
                        ids=[ids[i] for i in todo],
                        embeddings=rows,  # type: ignore[arg-type]  # chromadb's hint is an invariant List[Sequence[float]]
                        documents=[d.page_content for d in docs],
                        metadatas=[_scalar_metadata(d, ids[i]) for d, i in zip(docs, todo, strict=True)],
                    )
                bar.update(len(batch_ids))
                bar.set_postfix(added=added, updated=updated, unchanged=start + len(batch_ids) - added - updated)
        _write_marker(folder / COMPLETE_MARKER, {
            "collection": collection_name, "documents": len(ids), "count": collection.count(),
            "added": added, "updated": updated, "unchanged": len(ids) - added - updated,
        })
        (folder / PARTIAL_MARKER).unlink(missing_ok=True)
        return _store(client, collection_name, embeddings)


def open_chroma_store(
    path: str | Path, *, collection_name: str = "ragr1", embeddings: Embeddings | None = None
) -> Chroma:
    """Open a store built by :func:`build_chroma_store`.

    Opening writes nothing into the folder (one without ``chroma.sqlite3`` is refused, not made a new store).
    A missing or empty store raises ``MissingResourceError``, a damaged one :class:`CorruptStoreError`; one whose
    build did not finish opens with a :class:`PartialStoreWarning` (N of M passages, and how to finish it).
    """
    hint = f"build it first: `ragr1 index --bundled --store {path}` (or `ragr1 index CORPUS_FILES --store {path}`)"
    folder = Path(path)
    if not folder.is_dir():
        raise MissingResourceError(f"No Chroma store at {path}: {hint}.")
    if not (folder / CHROMA_FILE).is_file():  # Chroma's client would create it: reading never writes a store
        raise MissingResourceError(f"No Chroma store at {path} (the folder has no {CHROMA_FILE}): {hint}.")
    with _readable(path):
        client = _client(path)
        try:
            count = client.get_collection(collection_name, embedding_function=None).count()
        except NotFoundError as exc:
            raise MissingResourceError(
                f"No collection {collection_name!r} in the Chroma store at {path}: {hint}."
            ) from exc
    if count == 0:
        raise MissingResourceError(f"The collection {collection_name!r} at {path} is empty: {hint}.")
    complete, partial = _read_marker(folder / COMPLETE_MARKER), _read_marker(folder / PARTIAL_MARKER)
    if complete is None and partial is not None and partial.get("collection", collection_name) == collection_name:
        warnings.warn(PartialStoreWarning(_partial_notice(path, count, partial.get("documents", "?"))), stacklevel=2)
    elif complete and complete.get("collection") == collection_name and isinstance(complete.get("count"), int) \
            and count < complete["count"]:
        warnings.warn(PartialStoreWarning(
            f"The Chroma store at {path} holds {count} passages but was built with {complete['count']}: it lost "
            f"passages. Delete the folder and rebuild it with `ragr1 index ... --store {path}`."
        ), stacklevel=2)
    with _readable(path):
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
    check_int("k", k, 1)
    return ScoredVectorStoreRetriever(vectorstore=store, search_kwargs={"k": k})
