"""Corpora as LangChain ``Document``s: the bundled Wikipedia summaries and users' files."""

from __future__ import annotations

from langchain_core.documents import Document


def document_contents(doc: Document) -> str:
    """A passage as the protocol shows it: ``"{title}\\n{text}"`` (just the text if untitled)."""
    title = str(doc.metadata.get("title") or "").strip()
    text = doc.page_content.strip()
    if not title or text.startswith(title):
        return text
    return f"{title}\n{text}"
