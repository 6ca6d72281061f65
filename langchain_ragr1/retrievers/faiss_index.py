"""FAISS indexes in the format of Search-R1's retrieval server: an index file whose row ``i`` is line ``i`` of a
corpus JSONL (``{"id", "contents": "title\\ntext"}``), searched by inner product with the query encoder the index
was built with (:func:`~langchain_ragr1.retrievers.embeddings.encoder_embeddings`).

:func:`open_faiss_index` serves a published index unchanged (``e5_Flat.index`` + ``wiki-18.jsonl``, the e5 encoder)
or a folder written by :func:`build_faiss_index` (``faiss.index``, ``corpus.jsonl`` and ``faiss.json``, the record
of its encoder and index type). The corpus is not loaded: its lines' byte offsets are (8 bytes a passage), and the
top-k lines are read when a query needs them. ``faiss-cpu`` is the ``faiss`` extra; a GPU build of FAISS
(``faiss-gpu-cu12``) in its place moves the index to the GPUs with ``gpu=True`` (``--faiss-gpu``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from langchain_ragr1.config import check_int
from langchain_ragr1.corpus import document_contents, document_from_record, document_ids
from langchain_ragr1.errors import ConfigError, MissingResourceError
from langchain_ragr1.extras import require

logger = logging.getLogger(__name__)

INDEX_FILE = "faiss.index"
CORPUS_FILE = "corpus.jsonl"
MANIFEST_FILE = "faiss.json"
#: Named index types; any other string is a FAISS ``index_factory`` description (``"IVF4096,PQ64"``).
INDEX_TYPES = ("flat", "hnsw", "ivf")
HNSW_M = 64  # Search-R1's HNSW64
HNSW_EF_SEARCH = 128
_CHUNK = 1 << 24


def _faiss() -> Any:
    return require("faiss", "faiss", "FAISS indexes (--retriever faiss, `ragr1 index --kind faiss`)")


class JsonlRows:
    """The non-blank lines of a corpus JSONL by position, read on demand from their byte offsets."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise MissingResourceError(
                f"No corpus JSONL at {path}: give the file whose line i is row i of the index "
                f"(Search-R1's wiki-18.jsonl for its e5_Flat.index)."
            )
        starts, ends, offset = [np.zeros(1, dtype=np.int64)], [], 0
        with self.path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                newlines = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10).astype(np.int64) + offset
                ends.append(newlines)
                starts.append(newlines + 1)
                offset += len(chunk)
        ends.append(np.array([offset], dtype=np.int64))
        start, end = np.concatenate(starts), np.concatenate(ends)
        keep = end - start > 0  # blank lines (and the end of a file ending in a newline) are no rows
        self.offsets = start[keep]

    def __len__(self) -> int:
        return len(self.offsets)

    def _line_number(self, offset: int) -> int:
        with self.path.open("rb") as f:
            return f.read(offset).count(b"\n") + 1

    def document(self, row: int) -> Document:
        """The passage of row ``row``: ``ConfigError`` naming the file and line when it is not a passage record."""
        offset = int(self.offsets[row])
        with self.path.open("rb") as f:
            f.seek(offset)
            raw = f.readline()
        where = lambda: f"{self.path}, line {self._line_number(offset)}"  # noqa: E731 - counted only on an error
        try:
            record = json.loads(raw.decode("utf-8-sig" if offset == 0 else "utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{where()}: not a JSON record ({exc}); the corpus must be one JSON object a line") from exc
        return document_from_record(record, where())


class FaissRetriever(BaseRetriever):
    """Top-``k`` inner-product search of a FAISS index; ``metadata["score"]`` is the inner product (the cosine
    similarity for normalised embeddings). ``invoke(query, k=n)`` overrides ``k``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: Any
    rows: JsonlRows
    embeddings: Embeddings
    k: int = Field(default=3, ge=1)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        k = check_int("k", self.k if k is None else k, 1)
        vector = np.asarray([self.embeddings.embed_query(query)], dtype=np.float32)
        scores, rows = self.index.search(vector, min(k, self.index.ntotal))
        found = []
        for row, score in zip(rows[0], scores[0], strict=True):
            if row >= 0:  # FAISS pads with -1 when fewer than k are found (IVF with few probed lists)
                doc = self.rows.document(int(row))
                doc.metadata["score"] = float(score)
                found.append(doc)
        return found


def _factory_string(index_type: str, count: int) -> str:
    if index_type == "flat":
        return "Flat"
    if index_type == "hnsw":
        return f"HNSW{HNSW_M},Flat"
    if index_type == "ivf":
        return f"IVF{max(1, min(count // 39, int(4 * math.sqrt(count))))},Flat"  # FAISS wants 39 points a list
    return index_type


def _new_index(index_type: str, vectors: np.ndarray) -> tuple[Any, dict[str, int]]:
    """An inner-product index of ``index_type`` holding ``vectors`` (trained on them first when it needs to be)."""
    faiss = _faiss()
    description = _factory_string(index_type, len(vectors))
    try:
        index = faiss.index_factory(vectors.shape[1], description, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ConfigError(
            f"index type {index_type!r} is not one FAISS can build ({str(exc).strip().splitlines()[-1]}): use one of "
            f"{', '.join(INDEX_TYPES)} or a FAISS index_factory string such as 'IVF4096,PQ64' (--faiss-index)."
        ) from exc
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    params: dict[str, int] = {}
    if hasattr(faiss.downcast_index(index), "nlist"):
        params["nprobe"] = max(1, faiss.downcast_index(index).nlist // 8)
    if "HNSW" in description:
        params["efSearch"] = HNSW_EF_SEARCH
    _set_params(index, params)
    return index, params


def _set_params(index: Any, params: dict[str, int]) -> None:
    space = _faiss().ParameterSpace()
    for name, value in params.items():
        space.set_index_parameter(index, name, value)


def _corpus_line(doc_id: str, doc: Document) -> str:
    # Always "title\ntext" (an empty title line when untitled), so reading the row back gives the same title and text
    # (document_contents drops a title its text starts with: that row would come back untitled).
    title = str(doc.metadata.get("title") or "").strip()
    return json.dumps({"id": doc_id, "contents": f"{title}\n{doc.page_content.strip()}"}, ensure_ascii=False)


def _embed(documents: Sequence[Document], embeddings: Embeddings, batch_size: int, show_progress: bool) -> np.ndarray:
    from tqdm.auto import tqdm

    parts = []
    with tqdm(total=len(documents), desc="Embedding", unit="doc", disable=not show_progress) as bar:
        for start in range(0, len(documents), batch_size):
            batch = [document_contents(d) for d in documents[start : start + batch_size]]
            parts.append(np.asarray(embeddings.embed_documents(batch), dtype=np.float32))
            bar.update(len(batch))
    return np.concatenate(parts)


def build_faiss_index(
    documents: Sequence[Document],
    folder: str | Path,
    *,
    embeddings: Embeddings | None = None,
    encoder: str = "minilm",
    index_type: str = "flat",
    vectors: Sequence[Sequence[float]] | np.ndarray | None = None,
    batch_size: int = 256,
    show_progress: bool = True,
    k: int = 3,
) -> FaissRetriever:
    """Embed ``documents`` with ``embeddings`` (default: the ``encoder`` preset) and write a FAISS index folder.

    ``index_type``: ``flat`` (exact; the right choice up to a few million passages), ``hnsw`` (HNSW64: faster on
    large corpora, ~0.5 KB a passage more memory), ``ivf`` (inverted lists, probed 1/8 at a time) or any FAISS
    ``index_factory`` string (``"IVF65536,PQ64"`` for 21 M passages in a few GB). ``vectors`` (one per document,
    from the same encoder) skips the embedding. The folder holds ``faiss.index``, ``corpus.jsonl`` (Search-R1's
    ``{"id", "contents"}`` rows, in index order) and ``faiss.json``; it is written whole or not at all.
    """
    from langchain_ragr1.paths import atomic_folder
    from langchain_ragr1.retrievers.embeddings import EncoderEmbeddings, encoder_embeddings, encoder_settings

    if not documents:
        raise ConfigError("the corpus is empty: nothing to index")
    if vectors is not None and len(vectors) != len(documents):
        raise ConfigError(f"vectors holds {len(vectors)} rows for {len(documents)} documents: give one per document")
    ids = document_ids(documents)
    embeddings = embeddings or encoder_embeddings(encoder)
    array = (np.asarray(vectors, dtype=np.float32) if vectors is not None
             else _embed(documents, embeddings, batch_size, show_progress))
    index, params = _new_index(index_type, np.ascontiguousarray(array))
    manifest = {
        "index_type": index_type, "index_factory": _factory_string(index_type, len(array)), "search_params": params,
        "metric": "inner_product", "dim": int(array.shape[1]), "count": len(ids),
        "encoder": {"preset": encoder, **encoder_settings(embeddings)} if isinstance(embeddings, EncoderEmbeddings)
        else {"preset": None, "class": type(embeddings).__name__},
    }

    def write(tmp: Path) -> None:
        _faiss().write_index(index, str(tmp / INDEX_FILE))
        with (tmp / CORPUS_FILE).open("w", encoding="utf-8") as out:
            out.writelines(_corpus_line(doc_id, doc) + "\n" for doc_id, doc in zip(ids, documents, strict=True))
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")

    path = Path(folder)
    if path.exists() and not (path / MANIFEST_FILE).is_file() and any(path.iterdir()):
        raise ConfigError(f"{path} is a folder that holds no FAISS index: give a new or empty folder (--store).")
    if (path / MANIFEST_FILE).is_file():
        import shutil

        shutil.rmtree(path)  # rebuilding: the new index replaces the old one
    atomic_folder(path, write, lambda done: (done / MANIFEST_FILE).is_file(), replace_incomplete=True)
    return FaissRetriever(index=index, rows=JsonlRows(path / CORPUS_FILE), embeddings=embeddings, k=k)


def _to_gpus(index: Any) -> Any:
    faiss = _faiss()
    if not hasattr(faiss, "index_cpu_to_all_gpus") or not hasattr(faiss, "get_num_gpus") or faiss.get_num_gpus() < 1:
        raise ConfigError(
            "--faiss-gpu (gpu=True) needs a GPU build of FAISS and a visible GPU: `pip uninstall faiss-cpu && pip install "
            "faiss-gpu-cu12` (CUDA 12) on a machine with a GPU, or leave the option out to search on the CPU."
        )
    options = faiss.GpuMultipleClonerOptions()
    options.shard, options.useFloat16 = True, True  # as Search-R1: the index split over the GPUs, fp16 storage
    return faiss.index_cpu_to_all_gpus(index, co=options)


def _manifest(folder: Path) -> dict[str, Any]:
    try:
        record = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MissingResourceError(
            f"{folder / MANIFEST_FILE} is unreadable ({exc}): rebuild the folder with `ragr1 index --kind faiss "
            f"--store {folder} ...`."
        ) from exc
    return record if isinstance(record, dict) else {}


def _recorded_encoder(folder: Path, record: dict[str, Any]) -> Embeddings:
    from langchain_ragr1.retrievers.embeddings import encoder_embeddings

    settings = dict(record.get("encoder") or {})
    preset = settings.pop("preset", None)
    if preset is None:
        raise ConfigError(
            f"{folder} was built with a custom embeddings object ({settings.get('class')}): pass the same one as "
            f"embeddings= to open it."
        )
    return encoder_embeddings(preset, settings.pop("model_path", None), **settings)


def open_faiss_index(
    store: str | Path,
    corpus: str | Path | None = None,
    *,
    embeddings: Embeddings | None = None,
    k: int = 3,
    gpu: bool = False,
) -> FaissRetriever:
    """A FAISS index: a folder written by :func:`build_faiss_index` (its encoder from ``faiss.json`` unless
    ``embeddings`` is given), or an index file with its ``corpus`` JSONL (row ``i`` = line ``i``), searched with
    ``embeddings`` (default: the shipped MiniLM; Search-R1's ``e5_Flat.index`` needs ``encoder_embeddings("e5",
    folder)``). The corpus must have as many rows as the index, and the encoder the index's dimension."""
    path = Path(store)
    if path.is_dir():
        if not (path / MANIFEST_FILE).is_file():
            raise MissingResourceError(
                f"No FAISS index in {path} (no {MANIFEST_FILE}): build one with `ragr1 index --kind faiss --store {path} "
                f"CORPUS_FILES`, or give the index file itself (--store e5_Flat.index --corpus wiki-18.jsonl)."
            )
        record = _manifest(path)
        embeddings = embeddings or _recorded_encoder(path, record)
        index_file, rows = path / INDEX_FILE, JsonlRows(corpus or path / CORPUS_FILE)
    elif path.is_file():
        if corpus is None:
            raise ConfigError(
                f"The FAISS index file {path} needs its corpus: --corpus FILE.jsonl (corpus=), the JSONL whose line i "
                f"is row i of the index (wiki-18.jsonl for Search-R1's e5_Flat.index)."
            )
        record, index_file, rows = {}, path, JsonlRows(corpus)
    else:
        raise MissingResourceError(f"No FAISS index at {path}: give an index folder or file (--store).")
    if embeddings is None:
        from langchain_ragr1.retrievers.embeddings import MiniLMEmbeddings

        embeddings = MiniLMEmbeddings()
    index = _faiss().read_index(str(index_file))
    if index.ntotal != len(rows):
        raise ConfigError(
            f"The index {index_file} holds {index.ntotal} vectors but {rows.path} has {len(rows)} passages: give the "
            f"corpus the index was built from (row i of the index is line i of the file)."
        )
    dim = len(embeddings.embed_query("dimension check"))
    if dim != index.d:
        raise ConfigError(
            f"The index {index_file} holds {index.d}-dimensional vectors but the encoder ({type(embeddings).__name__}) "
            f"gives {dim}: use the encoder the index was built with (--encoder e5|bge --encoder-model DIR)."
        )
    _set_params(index, dict(record.get("search_params") or {}))
    return FaissRetriever(index=_to_gpus(index) if gpu else index, rows=rows, embeddings=embeddings, k=k)


def default_faiss_path() -> Path:
    """Where the bundled corpus's FAISS index lives."""
    from langchain_ragr1.paths import cache_dir

    return cache_dir() / "stores" / "wiki-summaries-faiss"


def default_faiss_retriever(*, k: int = 3, show_progress: bool = True) -> FaissRetriever:
    """A flat FAISS index of the bundled corpus over its shipped MiniLM vectors: built once, then reopened."""
    from langchain_ragr1.corpus import load_bundled_corpus
    from langchain_ragr1.retrievers.embeddings import MiniLMEmbeddings
    from langchain_ragr1.retrievers.shipped import shipped_vectors

    path = default_faiss_path()
    if (path / MANIFEST_FILE).is_file():
        return open_faiss_index(path, k=k)
    documents, embeddings = load_bundled_corpus(), MiniLMEmbeddings()
    return build_faiss_index(documents, path, embeddings=embeddings, vectors=shipped_vectors(documents, embeddings),
                             show_progress=show_progress, k=k)


def faiss_retriever(
    store: str | Path | None = None,
    corpus: str | Path | None = None,
    *,
    embeddings: Embeddings | None = None,
    k: int = 3,
    gpu: bool = False,
    show_progress: bool = True,
) -> FaissRetriever:
    """``--retriever faiss``: an index file with its ``corpus``, an index folder, a ``corpus`` file indexed into the
    new folder ``store`` (flat), or (neither) the bundled corpus."""
    if store is None and corpus is None:
        return default_faiss_retriever(k=k, show_progress=show_progress)
    if store is None:
        raise ConfigError("Indexing a corpus file into FAISS needs a --store folder to write.")
    if corpus is not None and not Path(store).is_file():
        from langchain_ragr1.corpus import load_corpus_file

        built = build_faiss_index(load_corpus_file(corpus), store, embeddings=embeddings, show_progress=show_progress, k=k)
        return _to_gpu_retriever(built) if gpu else built
    return open_faiss_index(store, corpus, embeddings=embeddings, k=k, gpu=gpu)


def _to_gpu_retriever(retriever: FaissRetriever) -> FaissRetriever:
    return retriever.model_copy(update={"index": _to_gpus(retriever.index)})
