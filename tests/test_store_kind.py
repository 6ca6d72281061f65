"""A store folder is opened as the kind of store it holds, and reading a store never writes into it
(issue 23, item 6: `ragr1 ask --store BM25_DIR` opened it as Chroma, said "build it first" and left a
`chroma.sqlite3` in the BM25 folder)."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.documents import Document

from langchain_ragr1 import RagR1Agent
from langchain_ragr1.cli import main
from langchain_ragr1.errors import ConfigError, MissingResourceError
from langchain_ragr1.retrievers.bm25 import BM25Retriever
from langchain_ragr1.retrievers.chroma import open_chroma_store
from langchain_ragr1.retrievers.factory import make_retriever, retriever_kind, store_kind
from langchain_ragr1.testing import MemoryRetriever, ScriptedPolicy

DOCS = [Document("Paris is the capital of France.", id="p", metadata={"id": "p", "title": "Paris"}),
        Document("Rome is the capital of Italy.", id="r", metadata={"id": "r", "title": "Rome"})]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def bm25_store(tmp_path) -> Path:
    folder = tmp_path / "bm25"
    BM25Retriever.from_documents(DOCS).save(folder)
    return folder


def test_the_kind_of_a_store_is_read_from_its_folder(bm25_store, tmp_path):
    assert store_kind(bm25_store) == "bm25"
    assert store_kind(tmp_path / "nowhere") is None and store_kind(tmp_path) is None
    assert retriever_kind(None, bm25_store) == "bm25"
    assert retriever_kind(None, tmp_path / "nowhere") == "chroma"  # nothing there: the default
    assert retriever_kind("chroma", bm25_store) == "chroma"  # a given kind is kept (and checked on open)
    assert retriever_kind(None, bm25_store, corpus="c.jsonl") == "chroma"  # a corpus is indexed into --store


def test_a_bm25_store_opened_as_chroma_is_refused_and_left_untouched(bm25_store):
    before = snapshot(bm25_store)
    with pytest.raises(ConfigError, match=r"holds a BM25 index \(params\.index\.json\), not a chroma store.*"
                                          r"--retriever bm25"):
        make_retriever("chroma", store=bm25_store)
    with pytest.raises(MissingResourceError, match="no chroma.sqlite3"):
        open_chroma_store(bm25_store)  # the store function itself refuses too, before Chroma's client runs
    assert snapshot(bm25_store) == before and not (bm25_store / "chroma.sqlite3").exists()


def test_an_empty_folder_is_not_made_a_chroma_store(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(MissingResourceError, match=r"No Chroma store at .*empty: the folder holds no store.*"
                                                   r"ragr1 index"):
        make_retriever("chroma", store=folder)
    with pytest.raises(MissingResourceError, match="no chroma.sqlite3"):
        open_chroma_store(folder)
    assert list(folder.iterdir()) == []


def test_a_folder_with_two_stores_is_refused(bm25_store):
    (bm25_store / "chroma.sqlite3").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"several stores: chroma\.sqlite3 \(chroma\), params\.index\.json"):
        store_kind(bm25_store)


def test_ragr1_ask_opens_a_bm25_store_as_bm25(bm25_store, capsys, monkeypatch):
    seen = {}

    def default_agent(**kwargs):
        seen.update(kwargs)
        return RagR1Agent(ScriptedPolicy(["<answer> Paris </answer>"]), MemoryRetriever(documents=DOCS))

    monkeypatch.setattr("langchain_ragr1.agent.default_agent", default_agent)
    assert main(["ask", "What is the capital of France?", "--store", str(bm25_store)]) == 0
    assert seen["retriever"] == "bm25" and seen["store"] == str(bm25_store)
    assert "the bm25 retriever" in capsys.readouterr().err


def test_ragr1_ask_with_the_wrong_retriever_says_which_kind_and_writes_nothing(bm25_store, capsys):
    before = snapshot(bm25_store)
    code = main(["ask", "What is the capital of France?", "--retriever", "chroma", "--store", str(bm25_store)])
    err = capsys.readouterr().err
    assert code == 2 and "BM25 index" in err and "--retriever bm25" in err and "build it first" not in err
    assert snapshot(bm25_store) == before


def test_ragr1_index_refuses_to_write_one_kind_into_a_store_of_another(bm25_store, tmp_path, capsys):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "x", "title": "X", "text": "x"}\n', encoding="utf-8")
    before = snapshot(bm25_store)
    code = main(["index", str(corpus), "--kind", "chroma", "--store", str(bm25_store)])
    assert code == 2 and "holds a BM25 index" in capsys.readouterr().err
    assert snapshot(bm25_store) == before
