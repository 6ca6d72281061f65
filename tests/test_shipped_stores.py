"""The bundled corpus's stores start fast: shipped embeddings (verified) and a cached BM25 index."""

import json

import numpy as np
import pytest
from langchain_core.documents import Document

from langchain_ragr1.corpus import document_contents, load_bundled_corpus
from langchain_ragr1.retrievers import factory as retriever_factory
from langchain_ragr1.retrievers.bm25 import BM25Retriever
from langchain_ragr1.retrievers.embeddings import MiniLMEmbeddings
from langchain_ragr1.retrievers.shipped import NAME, shipped_vectors, write_shipped_vectors

DOCS = [Document(f"{name} is a city.", id=f"c{i}", metadata={"id": f"c{i}", "title": name})
        for i, name in enumerate(["Paris", "Rome", "Oslo", "Lima", "Cairo"])]


@pytest.fixture(scope="module")
def embeddings():
    return MiniLMEmbeddings()


@pytest.fixture
def shipped(tmp_path, embeddings):
    write_shipped_vectors(DOCS, embeddings, tmp_path)
    return tmp_path


def test_shipped_vectors_are_float16_and_match_live_embeddings(shipped, embeddings):
    assert np.load(shipped / f"{NAME}.npy").dtype == np.float16
    vectors = shipped_vectors(DOCS, embeddings, where=shipped)
    live = np.asarray(embeddings.embed_documents([document_contents(d) for d in DOCS[:2]]))
    assert np.allclose(vectors[:2], live, atol=2e-3)


def _damage(path, data: bytes | str, docs):
    path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
    return docs


@pytest.mark.parametrize("change, why", [
    (lambda docs, d: [docs[0].model_copy(update={"page_content": "Paris is a town."}), *docs[1:]], "corpus differs"),
    (lambda docs, d: docs[:4], "corpus differs"),
    (lambda docs, d: _damage(d / f"{NAME}.npy", (d / f"{NAME}.npy").read_bytes()[:-8] + b"\0" * 8, docs),
     "sha256"),
    (lambda docs, d: _damage(d / f"{NAME}.json", "{not json", docs), "unreadable"),
])
def test_vectors_that_do_not_belong_are_refused_with_a_notice(shipped, embeddings, caplog, change, why):
    docs = change(list(DOCS), shipped)
    assert shipped_vectors(docs, embeddings, where=shipped) is None
    assert why in caplog.text


def test_another_embedder_is_refused(shipped, caplog):
    assert shipped_vectors(DOCS, MiniLMEmbeddings(max_length=64), where=shipped) is None
    assert "embedding model" in caplog.text


def test_vectors_that_disagree_with_the_model_are_refused(shipped, embeddings, caplog):
    manifest = json.loads((shipped / f"{NAME}.json").read_text())
    np.save(shipped / f"{NAME}.npy", np.ones((len(DOCS), manifest["dim"]), dtype=np.float16))
    from langchain_ragr1.retrievers.shipped import _file_digest

    manifest["vectors_sha256"] = _file_digest(shipped / f"{NAME}.npy")
    (shipped / f"{NAME}.json").write_text(json.dumps(manifest))
    assert shipped_vectors(DOCS, embeddings, where=shipped) is None
    assert "disagrees" in caplog.text


@pytest.mark.slow
def test_the_shipped_file_belongs_to_the_bundled_corpus_and_embedder(embeddings, caplog):
    """Fails when the corpus, the passage format or the embedder changes: rerun scripts/ship_embeddings.py."""
    vectors = shipped_vectors(load_bundled_corpus(), embeddings)
    assert vectors is not None, caplog.text
    assert vectors.shape == (10_033, 384)


def test_bundled_bm25_is_built_once_then_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGR1_HOME", str(tmp_path))
    first = retriever_factory.make_retriever("bm25", k=2)
    folder = retriever_factory.default_bm25_path()
    assert (folder / ".complete").is_file() and not list(folder.parent.glob(".*partial*"))

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the bundled BM25 index was rebuilt")

    monkeypatch.setattr(BM25Retriever, "from_documents", no_rebuild)
    again = retriever_factory.make_retriever("bm25", k=2)
    query = "Marie Curie physicist"
    assert [d.id for d in again.invoke(query)] == [d.id for d in first.invoke(query)]
    assert again.k == 2 and len(again.documents) == 10_033


def test_an_unfinished_bm25_folder_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGR1_HOME", str(tmp_path))
    folder = retriever_factory.default_bm25_path()
    folder.mkdir(parents=True)
    (folder / "params.index.json").write_text("{}")  # a build killed before it was marked complete
    retriever = retriever_factory.make_retriever("bm25")
    assert (folder / ".complete").is_file() and len(retriever.documents) == 10_033
