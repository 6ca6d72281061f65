"""FAISS in Search-R1's format and Milvus (milvus-lite) through langchain-milvus: encoders, files, the server, the agent."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from langchain_ragr1.errors import ConfigError, MissingResourceError

faiss = pytest.importorskip("faiss")

PASSAGES = {
    "Marie Curie": "Polish-French physicist and chemist, born 1867, pioneer of radioactivity research.",
    "Albert Einstein": "German-born physicist, born 1879, who developed the theory of relativity.",
    "Rome": "Capital city of Italy on the Tiber.",
    "Tokyo": "Capital of Japan and its largest city.",
}


class WordEmbeddings(Embeddings):
    """A tiny encoder: normalised counts of a fixed vocabulary (no model), prefixes recorded."""

    vocabulary = ["curie", "einstein", "physicist", "rome", "italy", "tokyo", "japan", "capital", "born"]

    def __init__(self, dim_pad: int = 0) -> None:
        self.dim_pad = dim_pad

    def _vector(self, text: str) -> list[float]:
        words = text.lower().replace(",", " ").replace(".", " ").split()
        counts = np.array([words.count(w) for w in self.vocabulary] + [0] * self.dim_pad, dtype=np.float32) + 1e-3
        return (counts / np.linalg.norm(counts)).tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vector(text)


def _searchr1_files(tmp_path, embeddings: Embeddings):
    """A corpus and an HNSW64 index written as Search-R1's tools write them (quoted titles, a blank last line)."""
    corpus = tmp_path / "wiki-tiny.jsonl"
    rows = [{"id": str(i), "contents": f'"{title}"\n{text}'} for i, (title, text) in enumerate(PASSAGES.items())]
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    vectors = np.asarray(embeddings.embed_documents([r["contents"] for r in rows]), dtype=np.float32)
    index = faiss.IndexHNSWFlat(vectors.shape[1], 64, faiss.METRIC_INNER_PRODUCT)
    index.add(vectors)
    faiss.write_index(index, str(tmp_path / "e5_HNSW64.index"))
    return tmp_path / "e5_HNSW64.index", corpus


# --- encoders ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm_folder():
    from langchain_ragr1.retrievers.embeddings import default_model_path

    return default_model_path()


def _by_hand(folder, text: str, pooling: str) -> np.ndarray:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    batch = tokenizer([text], return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state[0]
    pooled = hidden[0] if pooling == "cls" else hidden.mean(0)
    return (pooled / pooled.norm()).numpy()


@pytest.mark.parametrize("preset, query_text, passage_text, pooling", [
    ("e5", "query: who discovered radium", "passage: Marie Curie\nphysicist", "mean"),
    ("bge", "Represent this sentence for searching relevant passages: who discovered radium",
     "Marie Curie\nphysicist", "cls"),
    ("minilm", "who discovered radium", "Marie Curie\nphysicist", "mean"),
])
def test_encoder_presets_add_their_prefixes_and_pool_their_way(minilm_folder, preset, query_text, passage_text, pooling):
    # The presets' logic on a local model (e5/BGE weights cannot be downloaded here): the same folder, three encoders.
    from langchain_ragr1.retrievers.embeddings import encoder_embeddings

    encoder = encoder_embeddings(preset, minilm_folder)
    query = np.asarray(encoder.embed_query("who discovered radium"))
    passage = np.asarray(encoder.embed_documents(["Marie Curie\nphysicist"])[0])
    assert np.allclose(query, _by_hand(minilm_folder, query_text, pooling), atol=1e-5)
    assert np.allclose(passage, _by_hand(minilm_folder, passage_text, pooling), atol=1e-5)


def test_encoder_settings_are_checked_and_named():
    from langchain_ragr1.retrievers.embeddings import ENCODER_PRESETS, encoder_embeddings
    from langchain_ragr1.server_options import ENCODER_PRESET_NAMES

    assert tuple(ENCODER_PRESETS) == ENCODER_PRESET_NAMES
    with pytest.raises(ConfigError, match=r"--encoder-model DIR.*intfloat/e5-base-v2"):
        encoder_embeddings("e5")
    with pytest.raises(ConfigError, match=r"'colbert' is unknown: use one of minilm, e5, bge"):
        encoder_embeddings("colbert", "/models/x")


def test_shipped_vectors_are_not_used_for_an_encoder_with_another_pooling(minilm_folder, caplog):
    from langchain_ragr1.retrievers.embeddings import encoder_embeddings
    from langchain_ragr1.retrievers.shipped import shipped_vectors

    docs = [Document(page_content="x", metadata={"id": "a"})]
    assert shipped_vectors(docs, encoder_embeddings("bge", minilm_folder)) is None
    assert "pooling or passage prefix" in caplog.text or "differs" in caplog.text


# --- FAISS -------------------------------------------------------------------------------------------------------

def test_jsonl_rows_skip_blank_lines_and_name_the_line_of_a_bad_record(tmp_path):
    from langchain_ragr1.retrievers.faiss_index import JsonlRows

    path = tmp_path / "c.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "0", "contents": "\\"A\\"\\nalpha"}\n\n{"id": "1", "contents": "B\\nbeta"}\n'
                     b'{"id": "2", "text": 5}\n')
    rows = JsonlRows(path)
    assert len(rows) == 3
    first, second = rows.document(0), rows.document(1)
    assert (first.id, first.metadata["title"], first.page_content) == ("0", "A", "alpha")
    assert (second.id, second.metadata["title"], second.page_content) == ("1", "B", "beta")
    with pytest.raises(ConfigError, match=r"c\.jsonl, line 4: 'text' must be a string"):
        rows.document(2)


def test_a_search_r1_index_is_served_unchanged_over_retrieve(tmp_path):
    from langchain_ragr1.retrievers.factory import make_retriever
    from langchain_ragr1.retrievers.http import SearchR1HTTPRetriever
    from langchain_ragr1.server import create_retrieval_app
    from tests._serving import Served

    index_file, corpus = _searchr1_files(tmp_path, WordEmbeddings())
    retriever = make_retriever("faiss", store=index_file, corpus=corpus, encoder=WordEmbeddings(), k=2)
    with Served(create_retrieval_app(retriever), "/retrieve") as served:
        found = SearchR1HTTPRetriever(url=served.url, k=2).invoke("capital of Japan")
    assert found[0].id == "3" and found[0].metadata["title"] == "Tokyo"
    assert found[0].page_content == PASSAGES["Tokyo"]
    assert found[0].metadata["score"] > found[1].metadata["score"]


def test_a_faiss_index_that_does_not_match_its_corpus_or_encoder_is_refused(tmp_path):
    from langchain_ragr1.retrievers.faiss_index import open_faiss_index

    index_file, corpus = _searchr1_files(tmp_path, WordEmbeddings())
    with pytest.raises(ConfigError, match=r"needs its corpus: --corpus FILE\.jsonl"):
        open_faiss_index(index_file)
    with pytest.raises(ConfigError, match=r"holds 9-dimensional vectors but the encoder \(WordEmbeddings\) gives 12"):
        open_faiss_index(index_file, corpus, embeddings=WordEmbeddings(dim_pad=3))
    short = tmp_path / "short.jsonl"
    short.write_text("\n".join(corpus.read_text().splitlines()[:3]) + "\n")
    with pytest.raises(ConfigError, match=r"holds 4 vectors but .*short\.jsonl has 3 passages"):
        open_faiss_index(index_file, short, embeddings=WordEmbeddings())
    with pytest.raises(MissingResourceError, match=r"No FAISS index in .*no faiss\.json"):
        open_faiss_index(tmp_path)
    with pytest.raises(ConfigError, match=r"faiss-gpu-cu12"):
        open_faiss_index(index_file, corpus, embeddings=WordEmbeddings(), gpu=True)


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf", "IVF2,Flat"])
def test_built_index_folders_reopen_with_their_encoder_record(tmp_path, index_type):
    from langchain_ragr1.retrievers.faiss_index import MANIFEST_FILE, build_faiss_index, open_faiss_index

    docs = [Document(page_content=text, metadata={"id": f"p{i}", "title": title})
            for i, (title, text) in enumerate(PASSAGES.items())] * 25
    docs = [Document(page_content=d.page_content, metadata={**d.metadata, "id": f"p{i}"}) for i, d in enumerate(docs)]
    build_faiss_index(docs, tmp_path / "idx", embeddings=WordEmbeddings(), index_type=index_type, show_progress=False)
    manifest = json.loads((tmp_path / "idx" / MANIFEST_FILE).read_text())
    assert manifest["count"] == 100 and manifest["encoder"]["class"] == "WordEmbeddings"
    with pytest.raises(ConfigError, match="custom embeddings object"):
        open_faiss_index(tmp_path / "idx")
    top = open_faiss_index(tmp_path / "idx", embeddings=WordEmbeddings(), k=3).invoke("Rome Italy")
    assert {d.metadata["title"] for d in top} == {"Rome"}
    with pytest.raises(ConfigError, match=r"not one FAISS can build.*--faiss-index"):
        build_faiss_index(docs, tmp_path / "bad", embeddings=WordEmbeddings(), index_type="Nonsense42", show_progress=False)


def test_ragr1_index_kind_faiss_builds_a_folder_the_agent_options_open(tmp_path, capsys):
    from langchain_ragr1.cli import main
    from langchain_ragr1.retrievers.factory import make_retriever

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(json.dumps({"id": t, "title": t, "text": x}) for t, x in PASSAGES.items()) + "\n")
    assert main(["index", str(corpus), "--kind", "faiss", "--store", str(tmp_path / "f")]) == 0
    assert "indexed 4 passages" in capsys.readouterr().err
    found = make_retriever("faiss", store=tmp_path / "f", k=1).invoke("the theory of relativity")
    assert found[0].id == "Albert Einstein"
    assert main(["index", str(corpus), "--kind", "faiss", "--store", str(tmp_path / "g"), "--encoder", "e5"]) == 2
    assert "--encoder-model DIR" in capsys.readouterr().err


def _recall_at_3(retriever, pairs) -> float:
    return sum(title in {d.metadata.get("title") for d in retriever.invoke(query, k=3)} for query, title in pairs) / len(pairs)


@pytest.mark.slow
def test_bundled_faiss_index_has_the_chroma_stores_recall_at_3(tmp_path):
    # Same shipped MiniLM vectors in both: the exact flat index must find what Chroma's HNSW finds.
    from langchain_ragr1.corpus import load_bundled_corpus
    from langchain_ragr1.data import load_qa
    from langchain_ragr1.retrievers.embeddings import MiniLMEmbeddings
    from langchain_ragr1.retrievers.factory import make_retriever
    from langchain_ragr1.retrievers.faiss_index import build_faiss_index
    from langchain_ragr1.retrievers.shipped import shipped_vectors

    documents, embeddings = load_bundled_corpus(), MiniLMEmbeddings()
    vectors = shipped_vectors(documents, embeddings)
    assert vectors is not None
    flat = build_faiss_index(documents, tmp_path / "flat", embeddings=embeddings, vectors=vectors, show_progress=False)
    items = [item for name in ("ragr1-dev", "ragr1-test") for item in load_qa(name)
             if len(item.gold_queries) == len(item.evidence_titles)]
    pairs = [(queries[0], title) for item in items
             for queries, title in zip(item.gold_queries, item.evidence_titles, strict=True)]
    assert len(pairs) >= 150
    chroma = make_retriever("chroma", show_progress=False)
    # The flat index is exact: its top 3 are the brute-force top 3 of the same vectors, with their titles intact.
    for query, _ in pairs[:40]:
        exact = np.argsort(-(vectors @ np.asarray(embeddings.embed_query(query), dtype=np.float32)))[:3]
        assert [d.id for d in flat.invoke(query)] == [documents[i].id for i in exact]
        assert [d.metadata["title"] for d in flat.invoke(query)] == [documents[i].metadata["title"] for i in exact]
    # Chroma's HNSW graph is approximate: on these 160 queries it misses a nearest passage a few times (0.95 vs 0.98).
    assert _recall_at_3(flat, pairs) >= _recall_at_3(chroma, pairs) > 0.9


# --- Milvus ------------------------------------------------------------------------------------------------------

def test_milvus_store_settings_are_checked(tmp_path):
    pytest.importorskip("langchain_milvus")
    from langchain_ragr1.retrievers.milvus import is_server_uri, milvus_retriever

    assert is_server_uri("http://milvus.internal:19530") and not is_server_uri(tmp_path / "x.db")
    with pytest.raises(MissingResourceError, match=r"No milvus-lite file at .*missing\.db: build it with `ragr1 index"):
        milvus_retriever(tmp_path / "missing.db")
    with pytest.raises(ConfigError, match=r"needs --store: a \.db file or a server URL"):
        milvus_retriever(corpus=tmp_path / "c.jsonl")


@pytest.mark.slow
def test_the_bundled_corpus_in_embedded_milvus_answers_through_the_agent(tmp_path, capsys):
    pytest.importorskip("langchain_milvus")
    from langchain_ragr1.agent import RagR1Agent
    from langchain_ragr1.cli import main
    from langchain_ragr1.retrievers.factory import make_retriever
    from langchain_ragr1.testing import ScriptedPolicy

    store = tmp_path / "wiki.db"
    assert main(["index", "--bundled", "--kind", "milvus", "--store", str(store)]) == 0
    assert "indexed 10033 passages" in capsys.readouterr().err
    search = "<think>Both birth years.</think><search> Marie Curie, Albert Einstein </search>"
    answer = "<think>1867 is before 1879.</think><answer> Marie Curie </answer>"
    agent = RagR1Agent(ScriptedPolicy([search, answer]), make_retriever("milvus", store=store, k=3))
    result = agent.invoke("Who was born first, Marie Curie or Albert Einstein?")
    titles = [d.metadata["title"] for hits in result["retrievals"] for hit in hits for d in hit["documents"]]
    assert result["answer"] == "Marie Curie"
    assert {"Marie Curie", "Albert Einstein"} <= set(titles)
    assert all(isinstance(d.metadata["score"], float) for hits in result["retrievals"] for hit in hits
               for d in hit["documents"])
