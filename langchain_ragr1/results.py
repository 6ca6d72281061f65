"""An episode's documents, distinct and in retrieval order, and the whole result as plain JSON.

``RagR1Agent.invoke`` returns LangChain objects (``Document``, messages) for Python callers;
:func:`episode_json` turns that result into dicts, lists and strings for ``json.dumps``, HTTP
responses and files.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from langchain_core.documents import Document
from langchain_core.messages import messages_to_dict


def document_key(doc: Document) -> tuple[str, str]:
    """What makes two retrieved documents the same one: the id where the retriever gives one,
    else the text."""
    return ("id", str(doc.id)) if doc.id is not None else ("text", doc.page_content)


def distinct_documents(retrievals: Iterable[Iterable[Mapping[str, Any]]]) -> list[Document]:
    """Each document of the episode's retrievals (one list of query results per turn) once, in
    the order first retrieved."""
    documents: dict[tuple[str, str], Document] = {}
    for turn in retrievals:
        for hit in turn:
            for doc in hit["documents"]:
                documents.setdefault(document_key(doc), doc)
    return list(documents.values())


def document_json(doc: Document) -> dict[str, Any]:
    """A document as ``{"id", "page_content", "metadata"}`` (``Document(**d)`` rebuilds it)."""
    return {"id": doc.id, "page_content": doc.page_content, "metadata": dict(doc.metadata)}


def episode_json(result: Mapping[str, Any]) -> dict[str, Any]:
    """``result`` (what :meth:`RagR1Agent.invoke` returns) with every ``Document`` as a
    :func:`document_json` dict and every message as LangChain's ``messages_to_dict`` form, ready
    for ``json.dumps``. The other keys are plain data already and come back unchanged."""
    out = dict(result)
    out["documents"] = [document_json(doc) for doc in result.get("documents") or []]
    out["retrievals"] = [
        [{**hit, "documents": [document_json(doc) for doc in hit["documents"]]} for hit in turn]
        for turn in result.get("retrievals") or []
    ]
    out["messages"] = messages_to_dict(list(result.get("messages") or []))
    return out
