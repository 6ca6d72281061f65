"""Retrievers by name (``chroma``, ``bm25``, ``http``, ``faiss``, ``milvus``): the bundled corpus's stores
(built once into :func:`langchain_ragr1.paths.cache_dir`), a user's corpus file or store (a FAISS index in
Search-R1's format, a Milvus file or server URL), or a Search-R1 ``/retrieve`` server."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, cast, get_args

from langchain_ragr1.errors import ConfigError, MissingResourceError

if TYPE_CHECKING:  # `ragr1` reads RETRIEVER_KINDS before LangChain loads
    from langchain_core.embeddings import Embeddings
    from langchain_core.retrievers import BaseRetriever

RetrieverKind = Literal["chroma", "bm25", "http", "faiss", "milvus"]
RETRIEVER_KINDS: tuple[str, ...] = get_args(RetrieverKind)  # one list: the Literal

_COMPLETE_MARKER = ".complete"

logger = logging.getLogger(__name__)


def default_store_path() -> Path:
    """Where the bundled corpus's Chroma index lives."""
    from langchain_ragr1.paths import cache_dir

    return cache_dir() / "stores" / "wiki-summaries-minilm"


def default_chroma_store(path: str | Path | None = None, *, show_progress: bool = True):
    """The Chroma store of the bundled corpus, built on first use (resumable), then reopened."""
    from langchain_ragr1.corpus import load_bundled_corpus
    from langchain_ragr1.retrievers.chroma import build_chroma_store, open_chroma_store
    from langchain_ragr1.retrievers.embeddings import MiniLMEmbeddings
    from langchain_ragr1.retrievers.shipped import shipped_vectors

    path = Path(path) if path else default_store_path()
    if (path / _COMPLETE_MARKER).exists():
        return open_chroma_store(path)
    documents, embeddings = load_bundled_corpus(), MiniLMEmbeddings()
    store = build_chroma_store(
        documents, path, embeddings=embeddings, show_progress=show_progress,
        vectors=shipped_vectors(documents, embeddings),
    )  # build_chroma_store writes the .complete record (with its counts) when it finishes
    return store


def default_bm25_path() -> Path:
    """Where the bundled corpus's BM25 index lives."""
    from langchain_ragr1.paths import cache_dir

    return cache_dir() / "stores" / "wiki-summaries-bm25"


def default_bm25_retriever(path: str | Path | None = None, *, k: int = 3):
    """BM25 over the bundled corpus: built and saved once (atomically), then loaded."""
    from langchain_ragr1.corpus import load_bundled_corpus
    from langchain_ragr1.paths import atomic_folder
    from langchain_ragr1.retrievers.bm25 import BM25Retriever

    path = Path(path) if path else default_bm25_path()
    if (path / _COMPLETE_MARKER).exists():
        return BM25Retriever.load(path, k=k)
    retriever = BM25Retriever.from_documents(load_bundled_corpus(), k=k)

    def write(tmp: Path) -> None:
        retriever.save(tmp)
        (tmp / _COMPLETE_MARKER).write_text("built from the bundled Wikipedia summaries\n")

    atomic_folder(path, write, lambda folder: (folder / _COMPLETE_MARKER).exists(), replace_incomplete=True)
    return retriever


#: How a store folder shows its kind, read-only: per kind, a test on the folder, the file it looks for and
#: what the store is called (a new store kind adds its entry here; :func:`store_kind` and
#: :func:`check_store` then know it).
STORE_SIGNATURES: dict[str, tuple[Callable[[Path], bool], str, str]] = {
    "chroma": (lambda folder: (folder / "chroma.sqlite3").is_file(), "chroma.sqlite3", "Chroma store"),
    "bm25": (lambda folder: (folder / "params.index.json").is_file(), "params.index.json", "BM25 index"),
    "faiss": (lambda folder: (folder / "faiss.index").is_file(), "faiss.index", "FAISS index folder"),
}


def store_kind(path: str | Path) -> str | None:
    """The kind of the store at ``path`` (a key of :data:`STORE_SIGNATURES`), ``None`` where there is no
    folder or it holds no known store. Reads only. A folder holding the files of two kinds is a
    :class:`ConfigError` (no way to tell which one was meant)."""
    folder = Path(path)
    found = [kind for kind, (holds, *_) in STORE_SIGNATURES.items() if holds(folder)]
    if len(found) > 1:
        files = ", ".join(f"{STORE_SIGNATURES[k][1]} ({k})" for k in found)
        raise ConfigError(f"The folder {path} holds the files of several stores: {files}. Keep one store per "
                          f"folder: rebuild each with `ragr1 index ... --kind KIND --store NEW_FOLDER`.")
    return found[0] if found else None


def retriever_kind(
    given: RetrieverKind | None, store: str | Path | None = None, corpus: str | Path | None = None
) -> RetrieverKind:
    """The retriever kind to use: ``given`` if any, else the kind of the ``store`` folder (when no
    ``corpus`` is to be indexed into it), else ``"chroma"``."""
    if given:
        return given
    found = store_kind(store) if store and not corpus else None
    return cast(RetrieverKind, found) if found in RETRIEVER_KINDS else "chroma"


def _signatures() -> str:
    return ", ".join(f"a {name} has {file}" for _, file, name in STORE_SIGNATURES.values())


def check_store(path: str | Path, kind: str, *, writing: bool = False) -> None:
    """Refuse a ``kind`` store at ``path`` that is not one, before anything opens (and so writes into) it.

    Reading: a missing or unrecognised folder is a ``MissingResourceError`` saying how to build one, a store
    of another kind a :class:`ConfigError` naming the kind it is. ``writing=True`` (``ragr1 index``): only a
    store of another kind is refused (a new or same-kind folder is fine).
    """
    if Path(path).is_file() or "://" in str(path):
        return  # a store that is one file (a FAISS .index beside its corpus, a Milvus .db) or a server URL
    found = store_kind(path)
    build = f"`ragr1 index CORPUS_FILES --kind {kind} --store {path}` (or `ragr1 index --bundled ...`)"
    if found is not None and found != kind:
        what = (f"build the {kind} store in another folder: `ragr1 index ... --kind {kind} --store NEW_FOLDER`"
                if writing else f"open it as one with --retriever {found} (retriever={found!r}), or build a "
                f"{kind} store with {build.replace(str(path), 'NEW_FOLDER')}")
        _, file, name = STORE_SIGNATURES[found]
        raise ConfigError(f"The folder {path} holds a {name} ({file}), not a {kind} store: "
                          f"{what}. Nothing was written there.")
    if found is None and not writing:
        where = "does not exist" if not Path(path).exists() else f"holds no store ({_signatures()})"
        name = STORE_SIGNATURES[kind][2] if kind in STORE_SIGNATURES else f"{kind} store"
        raise MissingResourceError(f"No {name} at {path}: the folder {where}. Build one with {build}.")


def check_retriever_kind(kind: Any, url: Any = None) -> None:
    """A known retriever ``kind`` (with the ``url`` the http one needs), else a :class:`ConfigError`."""
    if not isinstance(kind, str) or kind not in RETRIEVER_KINDS:
        raise ConfigError(f"retriever={kind!r} is unknown: use one of {', '.join(RETRIEVER_KINDS)} "
                          f"or a LangChain BaseRetriever.")
    if kind == "http" and not url:
        raise ConfigError("The http retriever needs --url, e.g. http://127.0.0.1:8000/retrieve.")


def make_retriever(
    kind: RetrieverKind = "chroma",
    *,
    k: int = 3,
    store: str | Path | None = None,
    corpus: str | Path | None = None,
    url: str | None = None,
    show_progress: bool = True,
    encoder: Embeddings | None = None,
    faiss_gpu: bool = False,
) -> BaseRetriever:
    """A retriever of ``kind``: over ``store`` (Chroma folder, BM25 index, FAISS index folder or file, Milvus
    ``.db`` file or server URL), ``corpus`` (a file indexed on the fly; for a FAISS index file, its rows), the
    bundled corpus, or a Search-R1 ``/retrieve`` ``url``. ``encoder`` is the query encoder of a FAISS index
    (default: the one its folder records, else the shipped MiniLM); ``faiss_gpu`` moves the index to the GPUs.
    """
    check_retriever_kind(kind, url)
    if store and kind in STORE_SIGNATURES:
        check_store(store, kind, writing=bool(corpus) and kind == "chroma")  # BM25 reads its store, corpus or not
    if kind == "faiss":
        from langchain_ragr1.retrievers.faiss_index import faiss_retriever

        return faiss_retriever(store, corpus, embeddings=encoder, k=k, gpu=faiss_gpu, show_progress=show_progress)
    if kind == "milvus":
        from langchain_ragr1.retrievers.milvus import milvus_retriever

        return milvus_retriever(store, corpus, k=k, show_progress=show_progress)
    if kind == "http":
        from langchain_ragr1.retrievers.http import SearchR1HTTPRetriever

        assert url is not None  # check_retriever_kind refuses http without a url
        return SearchR1HTTPRetriever(url=url, k=k)
    if kind == "bm25":
        from langchain_ragr1.corpus import load_corpus_file
        from langchain_ragr1.retrievers.bm25 import BM25Retriever

        if store:
            retriever = BM25Retriever.load(store)
            retriever.k = k
            return retriever
        if corpus:
            return BM25Retriever.from_documents(load_corpus_file(corpus), k=k)
        return default_bm25_retriever(k=k)
    from langchain_ragr1.retrievers.chroma import (
        build_chroma_store,
        chroma_retriever,
        open_chroma_store,
    )

    if corpus:
        from langchain_ragr1.corpus import load_corpus_file

        if not store:
            raise ConfigError("Indexing a corpus file into Chroma needs a --store folder to write.")
        vectorstore = build_chroma_store(load_corpus_file(corpus), store, show_progress=show_progress)
    elif store:
        vectorstore = open_chroma_store(store)
    else:
        from langchain_ragr1.retrievers.chroma import CorruptStoreError, discard_store

        try:
            vectorstore = default_chroma_store(show_progress=show_progress)
        except CorruptStoreError as exc:
            # The bundled store is only a cache of package data (corpus and shipped vectors): rebuild it.
            logger.warning("The bundled Chroma store at %s is corrupt (%s): rebuilding it.", exc.path, exc.reason)
            discard_store(exc.path)
            try:
                vectorstore = default_chroma_store(show_progress=show_progress)
            except CorruptStoreError as again:
                raise CorruptStoreError(exc.path, again.cause, (
                    f"rebuilding it did not help; delete the folder {exc.path} (a cache: it is rebuilt on next "
                    f"use) and check the disk (space, permissions)"
                )) from again
    return chroma_retriever(vectorstore, k=k)
