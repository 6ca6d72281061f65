"""Stores and corpora under faults (issue 12, items 5-6): a corrupt or half-built Chroma store, changed text under
the same ids, duplicate and empty ids, null text. Tiny corpora and a fake embedder: no MiniLM, seconds to run."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from langchain_ragr1.cli import main
from langchain_ragr1.corpus import load_corpus_file
from langchain_ragr1.errors import ConfigError, MissingResourceError
from langchain_ragr1.retrievers import chroma
from langchain_ragr1.retrievers import factory as retriever_factory
from langchain_ragr1.retrievers.bm25 import BM25Retriever
from langchain_ragr1.retrievers.chroma import (
    CorruptStoreError,
    PartialStoreWarning,
    build_chroma_store,
    chroma_retriever,
    open_chroma_store,
    store_manifest,
)

CITIES = ["Paris", "Rome", "Oslo", "Lima", "Cairo"]


class FakeEmbeddings(Embeddings):
    """8 numbers from a hash of the text; counts the passages embedded and can fail on a given call."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.fail_on_call, self.calls, self.embedded = fail_on_call, 0, []

    @staticmethod
    def _vector(text: str) -> list[float]:
        return [b / 255 + 0.01 for b in hashlib.sha256(text.encode()).digest()[:8]]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt  # the build is killed
        self.embedded.extend(texts)
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vector(text)


def _docs(texts: dict[str, str] | None = None) -> list[Document]:
    texts = texts or {}
    return [
        Document(texts.get(name, f"{name} is a city."), id=f"c{i}", metadata={"id": f"c{i}", "title": name})
        for i, name in enumerate(CITIES)
    ]


def _corrupt(folder: Path) -> None:
    """Truncate chroma.sqlite3 to half its size (a copy or a disk that failed half-way)."""
    db = folder / "chroma.sqlite3"
    with db.open("r+b") as fh:
        fh.truncate(db.stat().st_size // 2)


@pytest.fixture
def corrupt_store(tmp_path) -> Path:
    folder = tmp_path / "store"
    build_chroma_store(_docs(), folder, embeddings=FakeEmbeddings(), show_progress=False)
    chroma._forget_client(folder, live=True)  # as a new process would open it
    _corrupt(folder)
    return folder


@pytest.fixture
def fake_minilm(monkeypatch):
    """`ragr1 index` and the default stores embed with the fake embedder."""
    import langchain_ragr1.retrievers.embeddings as embeddings_module

    monkeypatch.setattr(chroma, "MiniLMEmbeddings", FakeEmbeddings)
    monkeypatch.setattr(embeddings_module, "MiniLMEmbeddings", FakeEmbeddings)


def _jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


# --- a corrupt chroma.sqlite3 (item 5) ---------------------------------------------------------------------------


def test_a_corrupt_store_names_its_folder_and_what_to_do(corrupt_store):
    for _ in range(2):  # the second open in the same process says the same (Chroma caches the failed client)
        with pytest.raises(CorruptStoreError) as caught:
            open_chroma_store(corrupt_store, embeddings=FakeEmbeddings())
        message = str(caught.value)
        assert isinstance(caught.value, MissingResourceError)
        assert str(corrupt_store) in message and "is corrupt" in message and "malformed" in message
        assert "delete the folder" in message and f"--store {corrupt_store}" in message
        assert "resumes nothing" in message


def test_ask_and_index_on_a_corrupt_store_exit_1_without_a_traceback(corrupt_store, tmp_path, capsys, fake_minilm):
    assert main(["ask", "Where is Paris?", "--store", str(corrupt_store)]) == 1
    err = capsys.readouterr().err
    assert "is corrupt" in err and str(corrupt_store) in err and "Traceback" not in err
    corpus = _jsonl(tmp_path / "c.jsonl", [{"id": "a", "text": "Paris is a city."}])
    assert main(["index", str(corpus), "--store", str(corrupt_store)]) == 1
    err = capsys.readouterr().err
    assert "is corrupt" in err and "delete the folder" in err and "Traceback" not in err


@pytest.fixture
def tiny_bundled(tmp_path, monkeypatch, fake_minilm):
    """The bundled corpus is five cities (no shipped vectors): the default store builds in a blink."""
    import langchain_ragr1.corpus as corpus_module
    import langchain_ragr1.retrievers.shipped as shipped_module

    monkeypatch.setenv("RAGR1_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(corpus_module, "load_bundled_corpus", lambda limit=None: _docs())
    monkeypatch.setattr(shipped_module, "shipped_vectors", lambda *a, **k: None)
    return retriever_factory.default_store_path()


def test_a_corrupt_bundled_store_is_rebuilt_with_a_notice(tiny_bundled, caplog):
    retriever_factory.make_retriever("chroma", show_progress=False)
    chroma._forget_client(tiny_bundled, live=True)
    _corrupt(tiny_bundled)
    retriever = retriever_factory.make_retriever("chroma", k=2, show_progress=False)
    assert "The bundled Chroma store" in caplog.text
    assert len(retriever.invoke("Paris is a city.")) == 2
    assert (tiny_bundled / chroma.COMPLETE_MARKER).is_file()
    assert not list(tiny_bundled.parent.glob(".*discarded*"))


def test_a_bundled_store_that_stays_corrupt_says_delete_the_folder(tiny_bundled, monkeypatch):
    def always_corrupt(*args, **kwargs):
        raise CorruptStoreError(tiny_bundled, RuntimeError("database disk image is malformed"))

    monkeypatch.setattr(retriever_factory, "default_chroma_store", always_corrupt)
    with pytest.raises(CorruptStoreError, match=r"delete the folder .*rebuilt on next use"):
        retriever_factory.make_retriever("chroma", show_progress=False)


# --- a half-built store (item 6a) --------------------------------------------------------------------------------


def test_a_half_built_store_warns_it_is_partial_until_the_rerun_finishes_it(tmp_path):
    folder = tmp_path / "store"
    with pytest.raises(KeyboardInterrupt):
        build_chroma_store(_docs(), folder, embeddings=FakeEmbeddings(fail_on_call=2), batch_size=2,
                           show_progress=False)
    assert store_manifest(folder) is None
    with pytest.warns(PartialStoreWarning) as caught:
        open_chroma_store(folder, embeddings=FakeEmbeddings())
    message = str(caught[0].message)
    assert str(folder) in message and "partial" in message and "2 of the 5 passages" in message
    assert "rerun the same `ragr1 index" in message and "resumes" in message

    rerun = FakeEmbeddings()
    build_chroma_store(_docs(), folder, embeddings=rerun, batch_size=2, show_progress=False)
    assert len(rerun.embedded) == 3  # resumed: only the missing passages
    assert store_manifest(folder) == {"collection": "ragr1", "documents": 5, "count": 5,
                                      "added": 3, "updated": 0, "unchanged": 2}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        open_chroma_store(folder, embeddings=FakeEmbeddings())


def test_the_bundled_store_uses_the_same_completion_marker(tiny_bundled, monkeypatch):
    real_build = chroma.build_chroma_store

    def killed(documents, path, **kwargs):
        return real_build(documents, path, **{**kwargs, "embeddings": FakeEmbeddings(fail_on_call=2),
                                              "batch_size": 2})

    monkeypatch.setattr(chroma, "build_chroma_store", killed)
    with pytest.raises(KeyboardInterrupt):
        retriever_factory.make_retriever("chroma", show_progress=False)
    assert not (tiny_bundled / chroma.COMPLETE_MARKER).exists()  # so the next use resumes the build
    with pytest.warns(PartialStoreWarning, match="2 of the 5 passages"):  # e.g. `ragr1 ask --store` on it
        open_chroma_store(tiny_bundled, embeddings=FakeEmbeddings())
    monkeypatch.setattr(chroma, "build_chroma_store", real_build)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        retriever = retriever_factory.make_retriever("chroma", k=5, show_progress=False)
        assert len(retriever.invoke("Oslo")) == 5
        open_chroma_store(tiny_bundled, embeddings=FakeEmbeddings())  # finished: no warning


# --- changed text under the same ids (item 6b) -------------------------------------------------------------------


def test_reindexing_changed_text_updates_it_and_reports_the_counts(tmp_path):
    folder = tmp_path / "store"
    build_chroma_store(_docs(), folder, embeddings=FakeEmbeddings(), show_progress=False)
    again = FakeEmbeddings()
    store = build_chroma_store(_docs({"Rome": "Rome is the capital of Italy."}), folder, embeddings=again,
                               show_progress=False)
    assert again.embedded == ["Rome is the capital of Italy."]  # only the changed passage re-embedded
    assert store.get(ids=["c1"])["documents"] == ["Rome is the capital of Italy."]
    assert chroma_retriever(store, k=1).invoke("Rome is the capital of Italy.")[0].id == "c1"
    manifest = store_manifest(folder)
    assert (manifest["added"], manifest["updated"], manifest["unchanged"]) == (0, 1, 4)


def test_ragr1_index_reports_added_updated_unchanged(tmp_path, capsys, fake_minilm):
    rows = [{"id": f"c{i}", "title": name, "text": f"{name} is a city."} for i, name in enumerate(CITIES)]
    corpus = _jsonl(tmp_path / "c.jsonl", rows)
    store = tmp_path / "store"
    assert main(["index", str(corpus), "--store", str(store)]) == 0
    assert "5 added, 0 updated (changed text), 0 unchanged" in capsys.readouterr().err
    rows[0]["text"] = "Paris is the capital of France."
    _jsonl(corpus, rows[:4])
    assert main(["index", str(corpus), "--store", str(store)]) == 0
    err = capsys.readouterr().err
    assert "0 added, 1 updated (changed text), 3 unchanged" in err
    assert "also holds 1 passages these inputs do not have" in err


# --- ids and fields (items 6c-6f) --------------------------------------------------------------------------------


def test_bm25_refuses_duplicate_ids_like_chroma():
    twins = [Document("a", metadata={"id": "x"}), Document("b", metadata={"id": "x"})]
    with pytest.raises(ConfigError, match="'x' appears more than once"):
        BM25Retriever.from_documents(twins)
    with pytest.raises(ConfigError, match="'1' appears more than once"):  # an id equal to another's position
        BM25Retriever.from_documents([Document("a", id="1"), Document("b")])


@pytest.mark.parametrize("record, key", [
    ({"id": "a", "text": None}, "'text' must be a string, got null"),
    ({"id": "a", "text": 42}, "'text' must be a string, got a number"),
    ({"id": "a", "contents": None}, "'contents' must be a string, got null"),
    ({"id": "a", "title": ["x"], "text": "t"}, "'title' must be a string"),
    ({"id": None, "text": "t"}, "'id' must be a string"),
    ({"id": True, "text": "t"}, "'id' must be a string"),
    ({"id": "", "text": "t"}, "'id' is empty"),
    ({"id": "  ", "text": "t"}, "'id' is empty"),
])
def test_bad_fields_name_the_file_line_and_key(tmp_path, record, key):
    path = _jsonl(tmp_path / "c.jsonl", [{"id": "ok", "text": "fine"}, record])
    with pytest.raises(ConfigError) as caught:
        load_corpus_file(path)
    assert f"{path}, line 2: {key}" in str(caught.value)


def test_null_title_and_integer_ids_still_load(tmp_path):
    path = _jsonl(tmp_path / "c.jsonl", [{"id": 7, "title": None, "text": "Seven."}])
    [doc] = load_corpus_file(path)
    assert (doc.id, doc.metadata["title"], doc.page_content) == ("7", "", "Seven.")


def test_an_empty_id_does_not_collide_with_a_position_id(tmp_path, fake_minilm, capsys):
    path = _jsonl(tmp_path / "c.jsonl", [{"id": "", "text": "first"}, {"id": "0", "text": "second"}])
    assert main(["index", str(path), "--store", str(tmp_path / "store")]) == 2
    assert f"{path}, line 1: 'id' is empty" in capsys.readouterr().err
    assert not (tmp_path / "store").exists()


def test_a_duplicate_id_in_a_jsonl_file_names_both_lines(tmp_path):
    path = _jsonl(tmp_path / "c.jsonl", [{"id": "a", "text": "x"}, "", {"id": "a", "text": "y"}])
    with pytest.raises(ConfigError, match=r"line 3: id 'a' is already used on line 1"):
        load_corpus_file(path)


def test_a_non_utf8_jsonl_file_names_the_file_and_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "caf\xe9"}\n')
    with pytest.raises(ConfigError, match=r"c\.jsonl, line 2: not UTF-8"):
        load_corpus_file(path)


@pytest.mark.parametrize("limit", ["-1", "0"])
def test_index_refuses_a_limit_below_one(tmp_path, capsys, limit):
    path = _jsonl(tmp_path / "c.jsonl", [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}])
    assert main(["index", str(path), "--store", str(tmp_path / "store"), "--limit", limit]) == 2
    assert "--limit must be a positive number" in capsys.readouterr().err
    assert not (tmp_path / "store").exists()
