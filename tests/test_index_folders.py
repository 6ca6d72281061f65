"""`ragr1 index` on a real folder (issue 23, item 5): what can be indexed is, every file left out is
named with why, `--strict` fails instead, and two folders that both hold README.md do not collide."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langchain_ragr1.cli import main
from langchain_ragr1.corpus import load_corpus, load_corpus_file
from langchain_ragr1.errors import ConfigError
from langchain_ragr1.retrievers.bm25 import BM25Retriever

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01"


@pytest.fixture
def messy(tmp_path) -> Path:
    """A folder as people have them: good files, two README.md, a picture, reST, JSONL, empty and broken files."""
    root = tmp_path / "docs"
    for name, text in {
        "guide/README.md": "# Guide\nThe guide explains the river Nile.",
        "api/README.md": "# API\nThe API explains the mountain Fuji.",
        "notes.txt": "Plain notes about Oslo.",
        "notes.rst": "Title\n=====\nreStructuredText about Lima.",
        "records.jsonl": json.dumps({"id": "rec-1", "title": "Cairo", "text": "Cairo is on the Nile."}) + "\n",
        "empty.md": "",
        "blank.txt": " \n\n",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    (root / "logo.png").write_bytes(PNG)
    (root / "latin.txt").write_bytes("caf\u00e9 cr\u00e8me".encode("latin-1"))
    (root / "binary.txt").write_bytes(b"text\x00\x01\x02 more")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n", encoding="utf-8")
    return root


def test_load_corpus_reads_what_it_can_and_names_every_file_left_out(messy):
    loaded = load_corpus([messy])
    sources = {d.metadata.get("source") or d.id for d in loaded.documents}
    assert sources == {"guide/README.md", "api/README.md", "notes.txt", "rec-1"}
    assert len({d.id for d in loaded.documents}) == len(loaded.documents)
    failed = {Path(item.path).name: item.reason for item in loaded.failed}
    assert failed.keys() == {"latin.txt", "binary.txt"}
    assert "not UTF-8" in failed["latin.txt"] and "binary file" in failed["binary.txt"]
    skipped = {Path(item.path).name: item.reason for item in loaded.skipped}
    assert skipped.keys() == {"logo.png", "notes.rst", "empty.md", "blank.txt"}
    assert ".png" in skipped["logo.png"] and ".rst" in skipped["notes.rst"] and ".jsonl" in skipped["notes.rst"]
    assert "empty" in skipped["empty.md"] and "empty" in skipped["blank.txt"]
    assert [Path(h).name for h in loaded.hidden] == [".git"]


def test_two_folders_with_the_same_file_name_get_ids_by_path(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "README.md").write_text(f"Folder {folder} readme.", encoding="utf-8")
    loaded = load_corpus([tmp_path / "a", tmp_path / "b"])
    assert [d.id for d in loaded.documents] == ["a/README.md#0", "b/README.md#0"]
    # one folder keeps its ids relative to itself, a file its name (as before)
    assert [d.id for d in load_corpus_file(tmp_path / "a")] == ["README.md#0"]
    assert [d.id for d in load_corpus_file(tmp_path / "b" / "README.md")] == ["README.md#0"]
    # the same file twice (itself and its folder) is read once
    assert [d.id for d in load_corpus([tmp_path / "a", tmp_path / "a" / "README.md"]).documents] == ["README.md#0"]


def test_a_jsonl_id_another_file_uses_fails_that_file_only(tmp_path):
    (tmp_path / "one.jsonl").write_text('{"id": "x", "text": "first"}\n', encoding="utf-8")
    (tmp_path / "two.jsonl").write_text('{"id": "x", "text": "second"}\n{"id": "y", "text": "y"}\n',
                                        encoding="utf-8")
    loaded = load_corpus([tmp_path])
    assert [d.page_content for d in loaded.documents] == ["first"]
    assert [(Path(f.path).name, f.reason.split(":")[0]) for f in loaded.failed] == [
        ("two.jsonl", f"id 'x' is already used by {tmp_path / 'one.jsonl'}")]


def test_load_corpus_file_still_raises_naming_every_unreadable_file(messy):
    with pytest.raises(ConfigError, match=r"2 files .* could not be read: .*binary\.txt: a binary file.*"
                                          r"latin\.txt: not UTF-8"):
        load_corpus_file(messy)


def test_ragr1_index_indexes_the_rest_and_prints_a_summary(messy, tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["index", str(messy), "--kind", "bm25", "--store", str(store)]) == 0
    err = capsys.readouterr().err
    for name, why in [("latin.txt", "not UTF-8"), ("binary.txt", "binary file"), ("logo.png", "not a corpus file"),
                      ("notes.rst", "not a corpus file"), ("empty.md", "empty"), ("blank.txt", "empty")]:
        line = next(line for line in err.splitlines() if line.endswith(name) or f"{name}:" in line)
        assert why in line, line
    assert "not searched (hidden):" in err and ".git" in err
    assert "read 4 file(s); 4 skipped, 2 failed" in err and "indexed 4 passages" in err
    ids = sorted(d.id for d in BM25Retriever.load(store).documents)
    assert ids == ["api/README.md#0", "guide/README.md#0", "notes.txt#0", "rec-1"]


def test_ragr1_index_strict_fails_and_writes_nothing(messy, tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["index", str(messy), "--kind", "bm25", "--store", str(store), "--strict"]) == 2
    err = capsys.readouterr().err
    assert "--strict: 6 input file(s) could not be indexed" in err and "latin.txt" in err and "logo.png" in err
    assert not store.exists()


def test_ragr1_index_of_two_folders_with_readme_md(tmp_path, capsys):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "README.md").write_text(f"Folder {folder} readme.", encoding="utf-8")
    store = tmp_path / "store"
    assert main(["index", str(tmp_path / "a"), str(tmp_path / "b"), "--kind", "bm25", "--store", str(store)]) == 0
    assert sorted(d.id for d in BM25Retriever.load(store).documents) == ["a/README.md#0", "b/README.md#0"]


def test_ragr1_index_with_nothing_indexable_says_so(tmp_path, capsys):
    (tmp_path / "only.png").write_bytes(PNG)
    assert main(["index", str(tmp_path), "--kind", "bm25", "--store", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "only.png" in err and "Nothing to index" in err
